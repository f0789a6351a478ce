#!/usr/bin/env python
"""Random-weight files in the layouts people download for the newer families, full size or tiny, and
the check that dreamshell detects them from their headers and diffusers loads and runs them offline.

Full size (into --out, never into the repository; about 35 GB in all):
  sdxl-vpred        SDXL single file with the `v_pred` and `ztsnr` marker keys and a ModelSpec header (6.9 GB)
  sd35m             SD 3.5 Medium single file, transformer + VAE (4.9 GB)
  sd35m-clips       the same with CLIP-L and CLIP-G inside (6.5 GB)
  flux-schnell-q4   FLUX.1 schnell transformer, GGUF Q4_0 (6.7 GB), written block by block
  clip_l, clip_g, t5xxl, ae   ComfyUI's clip_l.safetensors, clip_g.safetensors, t5xxl_fp16.safetensors
                    (9.5 GB) and FLUX.1's ae.safetensors

Tiny (a few MB, seconds): the same layouts at toy widths with configs to match, for the tests.

    /work/tools/heavy nice -n 19 python scripts/make_family_checkpoints.py --out /work/scratch/families all
    python scripts/make_family_checkpoints.py --out /tmp/tiny --tiny
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from dreamshell.engines.family_files import FULL, full_size, tiny_files  # noqa: E402

def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("names", nargs="*", default=[], help=f"full-size files: {', '.join(FULL)}, or all")
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--tiny", action="store_true", help="write the tiny files and configs instead")
    args = ap.parse_args()
    if args.out.resolve().is_relative_to(ROOT):
        raise SystemExit(f"--out {args.out} is inside the repository; write random weights elsewhere")
    args.out.mkdir(parents=True, exist_ok=True)
    if args.tiny:
        for k, v in tiny_files(args.out).items():
            print(k, v)
        return 0
    for name in (FULL if args.names in ([], ["all"]) else args.names):
        full_size(name, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
