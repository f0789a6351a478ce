#!/usr/bin/env python
"""What `--precision auto` picks on this CPU and what it gives: the 1-step turbo image at 512x512 (k_euler_a,
sgm_uniform, CFG 1) on a full-size SD 1.5 file, at auto (bfloat16 UNet, and a bfloat16 VAE where the CPU has
native bf16), at float32, and at auto with `--vae_precision float32`; the first image and the timed ones after it.
Pin it to N physical cores to stand for an N-core machine:

    OMP_NUM_THREADS=2 taskset -c 0,1 python bench/bench_cpu_auto.py --model sd15-random.safetensors [--reps 2]

On a CPU without native bf16 auto is float32 and the bf16 rows are skipped (emulated bf16 is several times slower).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]
PROMPT = "a photograph of an astronaut riding a horse"


def run(spec, precision: str, vae_precision: str, rows, reps: int) -> None:
    import torch
    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.line.request import DreamRequest
    g = DiffusersGenerator(device="cpu", precision=precision, vae_precision=vae_precision)
    g.load(spec)
    print(f"--precision {precision} --vae_precision {vae_precision}: UNet {g.dtype}, VAE and TAESD {g.decoder_dtype}, "
          f"{torch.get_num_threads()} threads", flush=True)
    request = DreamRequest(PROMPT, steps=1, seed=1, width=512, height=512, cfg_scale=1.0, sampler="k_euler_a",
                           schedule="sgm_uniform", model=spec.name)
    for name, files in rows:
        times = []
        for _ in range(reps + 1):
            t = time.perf_counter()
            g.generate(request, files=files)
            times.append(time.perf_counter() - t)
        print(f"  1-step, {name}: first {times[0]:.2f}s, then {', '.join(f'{x:.2f}s' for x in times[1:])}", flush=True)
    g.unload()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, required=True, help="a full-size SD 1.5 file (random weights will do)")
    ap.add_argument("--taesd", type=Path, default=None, help="a TAESD decoder file (default: a random one)")
    ap.add_argument("--reps", type=int, default=1)
    args = ap.parse_args()
    import tempfile

    import torch
    from bench_fast import cpu_name, make_taesd
    from dreamshell.engines.loading import native_bf16
    from dreamshell.weights.library import LineFiles
    from dreamshell.weights.models import spec_for_path
    taesd = args.taesd or make_taesd(Path(tempfile.mkdtemp(prefix="bench-auto-")) / "taesd.safetensors")
    spec = spec_for_path(args.model)
    native = native_bf16()
    print(f"{cpu_name()}, native bf16: {native}, torch {torch.__version__}", flush=True)
    tiny, full = ("TAESD", LineFiles(decoder=taesd)), ("full VAE", LineFiles())
    if native:
        run(spec, "auto", "auto", (tiny, full), args.reps)
    run(spec, "float32", "auto", (tiny, full), args.reps)
    if native:
        run(spec, "auto", "float32", (full,), args.reps)
    return 0


if __name__ == "__main__":
    sys.exit(main())
