#!/usr/bin/env python
"""How close `--rng nv` (dreamshell.engines.noise, A1111's NV imitation) is to torch.randn on a CUDA device:
for each seed and latent shape, the share of values that are bit-equal and the largest difference in float32
ulps, for the first draw and the next ones (A1111 bumps the Philox offset by one per draw). Needs CUDA:

    python bench/check_nv_noise_cuda.py [--seeds 0 1 42 4294967295] [--draws 3]

A1111 documents NV as equal to CUDA's randn; its own module docstring's values for seed 0 differ from the
module's output in the 7th digit, so this measures rather than asserts. Results go to BENCHMARKS.md.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402


def ulps(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Distance in float32 units in the last place (sign-magnitude bits made monotonic)."""
    def key(x):
        i = x.astype(np.float32).view(np.int32).astype(np.int64)
        return np.where(i < 0, -(i & 0x7FFFFFFF), i)
    return np.abs(key(a) - key(b))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 42, 2**32 - 1, 123456789012])
    ap.add_argument("--shapes", nargs="+", default=["4x8x8", "4x64x64", "4x96x64", "4x128x128"])
    ap.add_argument("--draws", type=int, default=3)
    a = ap.parse_args()
    import torch
    if not torch.cuda.is_available():
        print("no CUDA device: this check compares with torch.randn on CUDA")
        return 2
    from dreamshell.engines.noise import PhiloxStream
    print(f"device: {torch.cuda.get_device_name()}; torch {torch.__version__}")
    print("seed | shape | draw | bit-equal | max ulps | max abs diff")
    worst = 0
    for seed in a.seeds:
        for text in a.shapes:
            shape = tuple(int(x) for x in text.split("x"))
            gen = torch.Generator("cuda").manual_seed(seed)
            nv = PhiloxStream(seed)
            for draw in range(a.draws):
                cuda = torch.randn(shape, generator=gen, device="cuda", dtype=torch.float32).cpu().numpy()
                ours = nv.randn(shape)
                d = ulps(cuda, ours)
                worst = max(worst, int(d.max()))
                print(f"{seed} | {text} | {draw} | {float((d == 0).mean()) * 100:.3f} % | {int(d.max())} | "
                      f"{float(np.abs(cuda - ours).max()):.3g}")
    print(f"largest difference: {worst} ulps")
    return 0


if __name__ == "__main__":
    sys.exit(main())
