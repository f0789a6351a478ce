#!/usr/bin/env python
"""Full-size proof without downloading weights: random-weight single files in the ORIGINAL (LDM) key
layouts people download (SD 1.5, SD 1.5 inpainting, SD 2.x 768-v, SDXL base), built from the shipped
configs (dreamshell/configs/) with diffusers models and renamed to the original keys, then loaded by
dreamshell offline: its kind detected, every loaded tensor compared with what was written, one small
image made.

    python scripts/make_fullsize_checkpoints.py --out /work/fullsize-models sd15 sd15-inpaint sd2-768v sdxl

The renaming follows the layouts that diffusers' converters read and write (its
scripts/convert_diffusers_to_original_stable_diffusion.py and convert_diffusers_to_original_sdxl.py);
it is written here from the block structure in the configs, for any number of levels and layers.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dreamshell.engines.fullsize import CHECKPOINTS, check, write_checkpoint  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("stems", nargs="*", default=list(CHECKPOINTS), help=f"which: {', '.join(CHECKPOINTS)}")
    ap.add_argument("--out", type=Path, default=Path("/work/fullsize-models"))
    ap.add_argument("--check_only", type=Path, default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.check_only:  # one checkpoint, in its own process so memory starts clean
        print(json.dumps(check(args.check_only, args.stems[0])))
        return 0
    args.out.mkdir(parents=True, exist_ok=True)
    failed = 0
    for stem in args.stems:
        path = write_checkpoint(stem, args.out)
        run = subprocess.run([sys.executable, __file__, stem, "--check_only", str(path)], capture_output=True, text=True)
        if run.returncode != 0:
            print(f"{stem}: FAILED\n{run.stderr[-2000:]}", flush=True)
            failed += 1
            continue
        result = json.loads(run.stdout.strip().splitlines()[-1])
        failed += not result["ok"]
        print(f"{stem}: {json.dumps(result)}", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
