"""How well the demo ControlNet puts a shape where its canny map says (numpy + PIL; the generator is imported
inside `measure`, so the measure itself loads no torch).

A case is a scene of the demo's world (demo/shapes.py) at a place the prompt does not name: its canny map
(run/preprocess.py, as a line's `--control demo_canny:IMAGE` makes it) guides an image of the prompt
"a {colour} {shape} on a {background} background". The score of an image is the overlap (intersection over
union) of the pixels drawn in the asked colour with the scene's own shape, which the control edges enclose;
the same prompts and seeds are made with and without the ControlNet, and the gap is the proof.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image

from . import shapes

PLACES = ("top left", "top right", "bottom left", "bottom right", "center", "top center", "middle left",
          "bottom center", "middle right")


@dataclass(frozen=True)
class Case:
    scene: shapes.Scene
    prompt: str


def cases(count: int = 18, seed: int = 7) -> list[Case]:
    """`count` scenes spread over the shapes and places, each with its prompt (no size, no place)."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        shape = shapes.SHAPES[i % len(shapes.SHAPES)]
        place = PLACES[i % len(PLACES)]
        while True:
            scene = shapes.random_scene(rng, shape=shape)
            if scene.position == place:
                break
        out.append(Case(scene, scene.caption()))
    return out


def scene_image(case: Case) -> Image.Image:
    """The scene drawn plainly (no colour jitter): the image a user gives --control."""
    return shapes.render(case.scene)


def target_mask(case: Case) -> np.ndarray:
    """The pixels of the scene's shape (what the control edges enclose)."""
    labels = shapes.classify_pixels(scene_image(case))
    return labels == list(shapes.COLOURS).index(case.scene.colour)


def drawn_mask(image: Image.Image, colour: str) -> np.ndarray:
    """The pixels of `image` nearest to `colour` of the six."""
    return shapes.classify_pixels(image) == list(shapes.COLOURS).index(colour)


def overlap(image: Image.Image, case: Case) -> float:
    """Intersection over union of the drawn shape (asked colour) and the scene's shape."""
    a, b = drawn_mask(image, case.scene.colour), target_mask(case)
    union = (a | b).sum()
    return float((a & b).sum() / union) if union else 0.0


def summary(scores: list[float]) -> dict:
    arr = np.asarray(scores, dtype=np.float64)
    return {"mean_iou": round(float(arr.mean()), 4), "median_iou": round(float(np.median(arr)), 4),
            "iou_above_0.5": round(float((arr > 0.5).mean()), 4), "images": len(scores)}


def measure(model_dir=None, controlnets=None, count: int = 18, seeds=(0, 1, 2), steps: int = 20,
            weight: float = 1.0) -> dict:
    """Through dreamshell: each case's canny map as `--control demo_canny:IMAGE`, and the same line without
    it; {'with': summary, 'without': summary, 'gap': mean difference}."""
    import tempfile
    from pathlib import Path

    from ..engines.generator import DiffusersGenerator
    from ..line.control import ControlSpec
    from ..line.request import DreamRequest
    from ..weights.library import Folders, Library
    from ..weights.models import builtin_models_dir, demo_spec
    from ..run.image import make_images, load_inputs

    root = builtin_models_dir()
    folders = Folders.under(root)
    if controlnets is not None:
        folders = Folders(folders.loras, folders.embeddings, folders.vaes, Path(controlnets))
    library = Library(folders)
    spec = demo_spec()
    gen = DiffusersGenerator(device="cpu", precision="float32", folders=folders)
    gen.load(spec)
    scores: dict[str, list[float]] = {"with": [], "without": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i, case in enumerate(cases(count)):
            path = Path(tmp) / f"case{i}.png"
            scene_image(case).save(path)
            for seed in seeds:
                base = DreamRequest(prompt=case.prompt, seed=seed, steps=steps, width=64, height=64,
                                    cfg_scale=spec.cfg_scale, sampler=spec.sampler, model=spec.name)
                control = (ControlSpec("demo_canny", str(path), weight),)
                for label, request in (("with", base.with_(control=control)), ("without", base)):
                    files = library.files_for(request.prompt, None, request.control)
                    init, mask, request = load_inputs(request, True)
                    result, = make_images(gen, [request], files, init, mask)
                    scores[label].append(overlap(result.image, case))
    out = {k: summary(v) for k, v in scores.items()}
    out["gap"] = round(out["with"]["mean_iou"] - out["without"]["mean_iou"], 4)
    return out


# ----- outcrop and only masked on the demo model

def _session_generator():
    from ..engines.generator import DiffusersGenerator
    from ..weights.models import demo_spec
    gen = DiffusersGenerator(device="cpu", precision="float32")
    spec = demo_spec()
    gen.load(spec)
    return gen, spec


def band_reading(image: Image.Image, box: tuple[int, int, int, int], background: str) -> dict:
    """The new band (outside box): the share of its pixels nearest to the background colour, and its mean colour's
    distance from that colour (0..441)."""
    px = np.asarray(image.convert("RGB"), dtype=np.float64)
    band = np.ones(px.shape[:2], bool)
    band[box[1]:box[3], box[0]:box[2]] = False
    labels = shapes.classify_pixels(image)[band]
    index = list(shapes.COLOURS).index(background)
    mean = px[band].mean(0)
    return {"background_share": float((labels == index).mean()),
            "mean_distance": float(np.linalg.norm(mean - np.asarray(shapes.COLOURS[background])))}


def measure_outcrop(count: int = 6, seeds=(0, 1), pairs=(("right", 32),), steps: int = 20, fill: str = "edge") -> dict:
    """Outcrop scenes of the demo's world through dreamshell's image step: how much of the new band is the
    background's colour, and whether the image outside the seam kept every byte."""
    from ..line.request import DreamRequest
    from ..run.image import make_images
    from ..run.outcrop import seam_width
    gen, spec = _session_generator()
    shares, distances, kept = [], [], 0
    rng = random.Random(11)
    for i in range(count):
        scene = shapes.random_scene(rng, shape=shapes.SHAPES[i % 3])
        scene = shapes.Scene(scene.colour, scene.shape, scene.background, "small", "center", 8, 31, 31)
        source = shapes.render(scene)
        for seed in seeds:
            request = DreamRequest(prompt=scene.caption(), seed=seed, steps=steps, width=64, height=64,
                                   cfg_scale=spec.cfg_scale, sampler=spec.sampler, model=spec.name,
                                   init_img="scene.png", strength=0.9, outcrop=tuple(pairs))
            if fill != "edge":
                from ..run.outcrop import outcrop
                image = outcrop(gen, request, None, source, fill=fill)
            else:
                image = make_images(gen, [request], None, source, None)[0].image
            grow = dict(pairs)
            box = (grow.get("left", 0), grow.get("top", 0), grow.get("left", 0) + 64, grow.get("top", 0) + 64)
            reading = band_reading(image, box, scene.background)
            shares.append(reading["background_share"])
            distances.append(reading["mean_distance"])
            seam = seam_width(64, 64)
            inner = (box[0] + (seam if "left" in grow else 0), box[1] + (seam if "top" in grow else 0),
                     box[2] - (seam if "right" in grow else 0), box[3] - (seam if "bottom" in grow else 0))
            mine = np.asarray(image)[inner[1]:inner[3], inner[0]:inner[2]]
            theirs = np.asarray(source)[inner[1] - box[1]:inner[3] - box[1], inner[0] - box[0]:inner[2] - box[0]]
            kept += bool(np.array_equal(mine, theirs))
    return {"images": len(shares), "band_background_share": round(float(np.mean(shares)), 4),
            "band_mean_colour_distance": round(float(np.mean(distances)), 1),
            "kept_outside_seam": f"{kept}/{len(shares)}", "fill": fill, "pairs": [list(p) for p in pairs]}
