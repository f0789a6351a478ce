#!/usr/bin/env python
"""Full-size control models without downloading weights: a random-weight ControlNet shaped like
control_v11p_sd15_canny (the shipped dreamshell/configs/controlnet-sd1 values) as lllyasviel's original single
file (`control_model.*` keys, float16: 723 MB) and as a diffusers folder, and a T2I-Adapter shaped like TencentARC's
t2iadapter_canny_sd15v2 (diffusers folder); each detected without torch, loaded offline through dreamshell's own
loader (engines/control.py) and compared tensor by tensor with what was written.

    python scripts/make_fullsize_control.py --out /work/scratch/control/full      # writes OUT/controlnets/...
    python scripts/make_fullsize_control.py --out /work/scratch/control/full --sd15   # and OUT/sd15-random.safetensors

Never write these into the repository: they are hundreds of megabytes of noise.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

CONTROLNET = "control_v11p_sd15_canny-random"
ADAPTER = "t2iadapter_canny_sd15v2-random"


def write(out: Path) -> dict:
    import torch

    from dreamshell.engines import control_layouts as layouts
    folder = out / "controlnets"
    folder.mkdir(parents=True, exist_ok=True)
    t = time.time()
    model = layouts.random_controlnet("controlnet-sd1", seed=0, dtype=torch.float16)
    single = folder / f"{CONTROLNET}.safetensors"
    if not single.exists():
        layouts.write_original(model, single)
    diffusers_dir = folder / f"{CONTROLNET}-diffusers"
    if not diffusers_dir.exists():
        layouts.write_folder(model, diffusers_dir)
    adapter = layouts.random_adapter(seed=1, dtype=torch.float16)
    adapter_dir = folder / ADAPTER
    if not adapter_dir.exists():
        layouts.write_folder(adapter, adapter_dir)
    sizes = {p.name: round(sum(f.stat().st_size for f in ([p] if p.is_file() else p.rglob("*"))) / 1e6, 1)
             for p in (single, diffusers_dir, adapter_dir)}
    return {"written_s": round(time.time() - t, 1), "MB": sizes, "controlnet": model.state_dict(),
            "adapter": adapter.state_dict(), "paths": (single, diffusers_dir, adapter_dir)}


def check(made: dict) -> dict:
    """Detected without torch, loaded offline by dreamshell, every tensor equal to what was written."""
    import torch

    from dreamshell.engines.control import load_control
    from dreamshell.engines.control_layouts import compare
    from dreamshell.weights.checkpoint import detect_control
    from dreamshell.weights.library import UsedControl
    out = {}
    loaded = {}
    for path, written in zip(made["paths"], (made["controlnet"], made["controlnet"], made["adapter"])):
        found = detect_control(path)
        t = time.time()
        model = load_control(UsedControl(path.stem, path, found.kind, found.family, found.layout), torch.float32, "cpu")
        equal, total = compare(model, written)
        out[path.name] = {"detected": found.label, "layout": found.layout, "load_s": round(time.time() - t, 1),
                          "equal_tensors": equal, "tensors": total,
                          "parameters_M": round(sum(p.numel() for p in model.parameters()) / 1e6, 1)}
        loaded[path.name] = model
    a, b = (loaded[p.name] for p in made["paths"][:2])
    same = sum(1 for (k, v), (k2, v2) in zip(a.state_dict().items(), b.state_dict().items())
               if k == k2 and torch.equal(v, v2))
    out["single_file_equals_folder"] = f"{same}/{len(a.state_dict())}"
    out["ok"] = all(v["equal_tensors"] == v["tensors"] for k, v in out.items() if isinstance(v, dict)) and \
        same == len(a.state_dict())
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", type=Path, default=Path("/work/scratch/control/full"))
    ap.add_argument("--sd15", action="store_true",
                    help="also write the random full-size SD 1.5 file (engines/fullsize.py)")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    if args.sd15:
        from dreamshell.engines.fullsize import write_checkpoint
        write_checkpoint("sd15", args.out)
    made = write(args.out)
    result = {"MB": made["MB"], "written_s": made["written_s"], **check(made)}
    print(json.dumps(result, indent=2))
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
