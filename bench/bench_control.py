#!/usr/bin/env python
"""What control costs and does, through dreamshell (issue 20). Parts, each a flag (all by default):

    python bench/bench_control.py --canny --cv2_path /work/scratch/control/cv   # our numpy Canny against OpenCV's
    python bench/bench_control.py --fullsize /work/scratch/control/full         # 512x512 steps: plain, ControlNet,
                                                                                # T2I-Adapter (make_fullsize_control.py)
    python bench/bench_control.py --masked                                      # 1024x1024: whole canvas vs Only masked
    python bench/bench_control.py --outcrop                                     # the demo's outcrop band

--canny: pixels where dreamshell's canny (run/preprocess.py) and cv2.Canny(image, 100, 200) agree, over demo scenes
at 64 and 512 pixels and smooth random pictures, and the milliseconds of each at 512x512.
--fullsize DIR: DIR/sd15-random.safetensors (a random full-size SD 1.5) with DIR/controlnets: seconds per 512x512
UNet step (CFG 7.5, k_euler) without control, with the ControlNet single file, and with the T2I-Adapter.
--masked: the demo model inpainting a 128x128 mask on a 1024x1024 image, the whole canvas against
--inpaint_area masked (the box at the model's 64x64), and that the bytes outside the box are the image's.
--outcrop: dreamshell/demo/control_eval.measure_outcrop (edge and noise fill).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def bench_canny(cv2_path: str | None) -> dict:
    import numpy as np
    from PIL import Image, ImageFilter

    from dreamshell.demo import shapes
    from dreamshell.run.preprocess import canny
    if cv2_path:
        sys.path.insert(0, cv2_path)
    import cv2
    rng = random.Random(0)
    images = []
    for i in range(40):
        scene = shapes.random_scene(rng)
        images.append(shapes.render(scene, rng))
        images.append(shapes.render(scene, rng, scale=8))
    r = np.random.default_rng(1)
    for i in range(10):
        a = r.uniform(0, 255, (64, 64, 3)).astype(np.uint8)
        images.append(Image.fromarray(a).resize((512, 512), Image.BICUBIC).filter(ImageFilter.GaussianBlur(1 + i % 3)))
    same = total = identical = 0
    for img in images:
        ours = np.asarray(canny(img)) > 0
        theirs = cv2.Canny(np.asarray(img.convert("RGB")), 100, 200) > 0
        same += int((ours == theirs).sum())
        total += ours.size
        identical += bool((ours == theirs).all())
    big = images[-1]
    arr = np.asarray(big)
    t = time.perf_counter()
    for _ in range(20):
        canny(big)
    ours_ms = (time.perf_counter() - t) / 20 * 1000
    t = time.perf_counter()
    for _ in range(20):
        cv2.Canny(arr, 100, 200)
    cv_ms = (time.perf_counter() - t) / 20 * 1000
    return {"images": len(images), "pixels_agreeing": round(same / total, 6), "identical_images": identical,
            "ms_512_numpy": round(ours_ms, 1), "ms_512_opencv": round(cv_ms, 2), "opencv": cv2.__version__}


def step_seconds(gen, request, files=None, controls=None) -> list[float]:
    marks = []
    start = time.perf_counter()
    extra = {"controls": controls} if controls else {}
    gen.generate(request, files=files, on_step=lambda *_: marks.append(time.perf_counter()), **extra)
    return [b - a for a, b in zip([start] + marks[:-1], marks)]


def bench_fullsize(folder: Path, steps: int, repeats: int) -> dict:
    """Seconds per 512x512 step, the cases interleaved image by image (this machine is shared: what another job
    takes falls on every case alike); the first step of each image (text encoding, the adapter's one pass) is
    left out."""
    from PIL import Image

    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.line.control import ControlSpec
    from dreamshell.line.request import DreamRequest
    from dreamshell.run.image import control_maps
    from dreamshell.weights.library import Folders, Library
    from dreamshell.weights.models import spec_for_path
    spec = spec_for_path(folder / "sd15-random.safetensors")
    folders = Folders(folder / "loras", folder / "embeddings", folder / "vae", folder / "controlnets")
    library = Library(folders)
    gen = DiffusersGenerator(device="cpu", precision="float32", folders=folders)
    t = time.perf_counter()
    gen.load(spec)
    out = {"model_load_s": round(time.perf_counter() - t, 1), "size": 512, "steps": steps, "repeats": repeats}
    edges_path = folder / "edges.png"
    Image.new("RGB", (512, 512), "black").save(edges_path)
    base = DreamRequest(prompt="a photograph of an astronaut riding a horse", seed=1, steps=steps, width=512,
                        height=512, cfg_scale=7.5, sampler="k_euler", model=spec.name)
    cases = {"plain": None, "controlnet single file": "control_v11p_sd15_canny-random",
             "controlnet diffusers folder": "control_v11p_sd15_canny-random-diffusers",
             "t2i-adapter": "t2iadapter_canny_sd15v2-random"}
    runs = {}
    for label, name in cases.items():
        request = base if name is None else base.with_(control=(ControlSpec(name, str(edges_path), 1.0, 0.0, 1.0,
                                                                           "none"),))
        files = library.files_for(request.prompt, None, request.control)
        maps = control_maps(request, None, None) if name else None
        if name:
            t = time.perf_counter()
            gen.control.model(gen, files.controls[0])
            out.setdefault("control_load_s", {})[label] = round(time.perf_counter() - t, 1)
        runs[label] = (request, files, maps)
    times: dict[str, list[float]] = {label: [] for label in cases}
    for _ in range(repeats):
        for label, (request, files, maps) in runs.items():
            times[label] += step_seconds(gen, request, files, maps)[1:]
    plain = statistics.median(times["plain"])
    for label, values in times.items():
        out[label] = {"s_per_step": round(statistics.median(values), 2), "steps_timed": len(values),
                      "vs_plain": round(statistics.median(values) / plain, 2)}
    return out


def bench_masked(steps: int) -> dict:
    import numpy as np
    from PIL import Image, ImageDraw

    from dreamshell.demo import shapes
    from dreamshell.demo.control_eval import _session_generator
    from dreamshell.line.request import DreamRequest
    from dreamshell.run.image import make_images
    from dreamshell.run.masked import crop_box
    gen, spec = _session_generator()
    scene = shapes.Scene("red", "circle", "blue", "large", "center", 18, 31, 31)
    image = shapes.render(scene, scale=16)          # 1024x1024
    mask = Image.new("L", image.size, 0)
    ImageDraw.Draw(mask).rectangle((640, 640, 767, 767), fill=255)
    base = DreamRequest(prompt="a red circle on a blue background", seed=3, steps=steps, width=1024, height=1024,
                        cfg_scale=spec.cfg_scale, sampler=spec.sampler, model=spec.name, init_img="in.png",
                        strength=0.75, init_mask="mask.png")
    out = {"image": "1024x1024", "mask": "128x128", "steps": steps}
    for label, request in (("whole canvas", base), ("only masked", base.with_(inpaint_area="masked",
                                                                               inpaint_padding=32))):
        t = time.perf_counter()
        result, = make_images(gen, [request], None, image, mask)
        seconds = time.perf_counter() - t
        made = np.asarray(result.image.convert("RGB"))
        box = crop_box(mask, 32, spec.width / spec.height)
        outside = np.ones(made.shape[:2], bool)
        outside[box[1]:box[3], box[0]:box[2]] = False
        same = bool(np.array_equal(made[outside], np.asarray(image)[outside]))
        out[label] = {"s": round(seconds, 1), "bytes_outside_box_identical": same}
    out["only masked box"] = list(crop_box(mask, 32, spec.width / spec.height))
    out["speedup"] = round(out["whole canvas"]["s"] / out["only masked"]["s"], 1)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--canny", action="store_true")
    ap.add_argument("--cv2_path", default=None,
                    help="a folder holding cv2 (pip install --target DIR opencv-python-headless)")
    ap.add_argument("--fullsize", type=Path, default=None)
    ap.add_argument("--fullsize_steps", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--masked", action="store_true")
    ap.add_argument("--outcrop", action="store_true")
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    every = not (args.canny or args.fullsize or args.masked or args.outcrop)
    import torch
    out = {"cpu": cpu_name(), "threads": torch.get_num_threads(), "torch": torch.__version__}
    if args.canny or every:
        out["canny"] = bench_canny(args.cv2_path)
        print(json.dumps({"canny": out["canny"]}), flush=True)
    if args.fullsize:
        out["fullsize"] = bench_fullsize(args.fullsize, args.fullsize_steps, args.repeats)
        print(json.dumps({"fullsize": out["fullsize"]}), flush=True)
    if args.masked or every:
        out["masked"] = bench_masked(args.steps)
        print(json.dumps({"masked": out["masked"]}), flush=True)
    if args.outcrop or every:
        from dreamshell.demo.control_eval import measure_outcrop
        out["outcrop"] = {fill: measure_outcrop(count=6, seeds=(0, 1), pairs=(("right", 32), ("top", 16)),
                                                steps=args.steps, fill=fill) for fill in ("edge", "noise")}
        print(json.dumps({"outcrop": out["outcrop"]}), flush=True)
    if args.json:
        args.json.write_text(json.dumps(out, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
