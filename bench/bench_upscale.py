#!/usr/bin/env python
"""x4 upscale of a 512x512 image, tiled vs untiled: seconds and peak resident memory, each run in its
own process (so the peaks are separate), alternating. Uses the realesr-general-x4v3 architecture
(SRVGGNetCompact, 64 features, 32 convs; random weights: the cost does not depend on them) and the
built-in demo upscaler.

    python bench/bench_upscale.py [--rounds 3] [--tile 256]
"""

import argparse
import json
import statistics
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import torch
from PIL import Image
from dreamshell.engines.esrgan import SRVGGNetCompact, build_from_state_dict
from dreamshell.engines.upscaler import RealESRGANUpscaler
arch, tile = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
if arch == "general-x4v3":
    model = SRVGGNetCompact(num_feat=64, num_conv=32, upscale=4).eval()
else:
    from safetensors.torch import load_file
    from dreamshell.weights.models import builtin_models_dir
    model = build_from_state_dict(load_file(str(builtin_models_dir() / "upscaler" / "demo-x4.safetensors")))
up = RealESRGANUpscaler({}, device="cpu", tile=tile)
x = torch.rand(1, 3, 512, 512)
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t = time.perf_counter()
y = up.upscale_array(x, model, tile=tile)
dt = time.perf_counter() - t
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"seconds": dt, "peak_mib": peak / 1024, "added_mib": (peak - base) / 1024, "shape": list(y.shape)}))
"""


def run(arch, tile):
    out = subprocess.run([sys.executable, "-c", CHILD, arch, str(tile)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tile", type=int, default=256)
    args = ap.parse_args()
    for arch in ("general-x4v3", "demo"):
        res = {"untiled": [], f"tiled {args.tile}": []}
        for r in range(args.rounds):
            order = [("untiled", 0), (f"tiled {args.tile}", args.tile)]
            for name, tile in (order if r % 2 == 0 else order[::-1]):
                res[name].append(run(arch, tile))
        print(f"{arch}: 512x512 -> 2048x2048, {args.rounds} rounds alternating")
        med = {}
        for name, runs in res.items():
            med[name] = (statistics.median(r["seconds"] for r in runs), statistics.median(r["added_mib"] for r in runs))
            print(f"  {name:10} median {med[name][0]:.2f} s, memory added {med[name][1]:.0f} MiB")
        t_ratio = med[f"tiled {args.tile}"][0] / med["untiled"][0]
        m_ratio = med[f"tiled {args.tile}"][1] / med["untiled"][1]
        print(f"  tiled/untiled: time x{t_ratio:.2f}, memory added x{m_ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
