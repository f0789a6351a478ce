"""Where things go: `--control`, `--outcrop` and `--inpaint_area` as typed, their rules and their names in
the other tools (stdlib only).

- `--control MODEL[/PRE]:IMAGE[:WEIGHT[:START[:END]]]`: a ControlNet or T2I-Adapter from the controlnets
  folder, guided by IMAGE (`-1`: the last image made) after the preprocessor PRE (by default the one the
  model's name says: `..._canny` -> canny); WEIGHT is A1111's Weight (0..2, default 1), START and END its
  Guidance Start/End (fractions of the steps, default 0 and 1). Given once per model (up to MAX_CONTROLS).
- `--outcrop DIR PIXELS [DIR PIXELS ...]` (`-c`; InvokeAI 2.x's older `-D`/`--out_direction`): grow the
  init image by PIXELS on each side named and let the model paint the new band (InvokeAI 2.x
  `ldm/invoke/restoration/outcrop.py`, `args.py`: `-c top 64 bottom 128 left 64 right 64`).
- `--inpaint_area masked --inpaint_padding N`: A1111's "Inpaint area: Only masked" and "Only masked padding,
  pixels" (`modules/processing.py` StableDiffusionProcessingImg2Img: the crop around the mask is inpainted at
  the model's size and pasted back).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .errors import UserError

MAX_CONTROLS = 4
DEFAULT_PADDING = 32            # A1111's "Only masked padding, pixels"
MAX_PADDING = 1024
MAX_OUTCROP = 2048              # pixels added on one side
OUTCROP_STRENGTH = 0.9          # --outcrop without -f: InvokeAI 2.x outcrop's img2img strength


class ControlError(UserError):
    """A --control, --outcrop or --inpaint_area value that cannot be used; str() is the one line."""


# dreamshell's preprocessors -> (A1111's module name, what it does); all need no weights
PREPROCESSORS: dict[str, tuple[str, str]] = {
    "canny": ("canny", "Canny edges (thresholds 100 and 200, as A1111's default)"),
    "tile": ("tile_resample", "the image itself, for tile models (A1111's tile_resample)"),
    "blur": ("blur_gaussian", "the image blurred (Gaussian, sigma 9: A1111's blur_gaussian)"),
    "inpaint": ("inpaint_global_harmonious", "the init image with the -M area marked, for inpaint models"),
    "shuffle": ("shuffle", "the image's content shuffled (a smooth random warp, seeded by the image)"),
    "none": ("none", "the image is already a control map (edges, depth, pose... made elsewhere)"),
}
# A1111 module names read back (their own spellings and aliases) -> ours
A1111_MODULES = {a: ours for ours, (a, _) in PREPROCESSORS.items()} | {
    "inpaint_only": "inpaint", "inpaint": "inpaint", "blur": "blur", "tile": "tile", "None": "none",
    "invert": "none"}
# preprocessors that need annotator weights dreamshell does not have -> the weights they need
NEEDS_WEIGHTS: dict[str, str] = {
    "depth": "MiDaS or ZoeDepth", "openpose": "OpenPose", "pose": "OpenPose", "lineart": "a lineart model",
    "lineart_anime": "a lineart model", "softedge": "HED or PiDiNet", "hed": "HED", "pidinet": "PiDiNet",
    "mlsd": "M-LSD", "normal": "a normal-map model (BAE)", "normalbae": "BAE", "seg": "a segmentation model",
    "scribble": "HED or PiDiNet", "mediapipe_face": "MediaPipe", "zoe": "ZoeDepth", "midas": "MiDaS",
    "leres": "LeReS", "dw_openpose": "DWPose", "anime_face_segment": "a segmentation model",
}
# words in a model's name -> the preprocessor it is used with (ControlNet 1.1's names, T2I-Adapter's)
_BY_NAME = (("canny", "canny"), ("tile", "tile"), ("inpaint", "inpaint"), ("shuffle", "shuffle"),
            ("blur", "blur"))
# words that name a map dreamshell cannot make: the image is taken as that map (a note says so)
MAP_WORDS = ("depth", "pose", "lineart", "softedge", "hed", "mlsd", "normal", "seg", "scribble", "sketch",
             "color", "style", "zoe", "midas", "ip2p", "qrcode")


def default_preprocessor(model: str) -> str:
    """The preprocessor a model is used with, from its file name (`control_v11p_sd15_canny` -> canny)."""
    low = model.lower()
    for word, name in _BY_NAME:
        if word in low:
            return name
    return "none"


def map_word(model: str) -> str | None:
    """The kind of map a model's name says it wants when dreamshell cannot make it (depth, pose, ...)."""
    low = model.lower()
    return next((w for w in MAP_WORDS if w in low), None)


@dataclass(frozen=True)
class ControlSpec:
    """One `--control`: a model from the controlnets folder, its guide image and how strongly it guides."""

    model: str
    image: str                       # a path, or -1 for the last image made
    weight: float = 1.0              # A1111's Weight (controlnet_conditioning_scale)
    start: float = 0.0               # Guidance Start: the fraction of the steps before it acts
    end: float = 1.0                 # Guidance End: the fraction after which it stops
    preprocessor: str | None = None  # None: the one the model's name says

    def pre(self) -> str:
        return self.preprocessor or default_preprocessor(self.model)


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None


CONTROL_RULE = ("--control MODEL[/PRE]:IMAGE[:WEIGHT[:START[:END]]], e.g. --control canny:edges.png:0.8 "
                "(IMAGE -1: the last image made)")


def parse_control(token: str) -> ControlSpec:
    """`MODEL[/PRE]:IMAGE[:WEIGHT[:START[:END]]]`: the trailing numbers are read from the right, so an image
    path may hold colons."""
    head, sep, rest = token.partition(":")
    if not sep or not head.strip() or not rest.strip():
        raise ControlError(f"'{token[:80]}' is not MODEL:IMAGE; write {CONTROL_RULE}")
    parts = rest.split(":")
    numbers: list[float] = []
    while len(parts) > 1 and len(numbers) < 3 and _number(parts[-1]) is not None:
        numbers.insert(0, float(parts.pop()))
    image = ":".join(parts)
    if image == "":
        raise ControlError(f"'{token[:80]}' has no image; write {CONTROL_RULE}")
    model, _, pre = head.partition("/")
    model, pre = model.strip(), pre.strip().lower() or None
    if not model:
        raise ControlError(f"'{token[:80]}' has no model name; write {CONTROL_RULE}")
    if pre is not None:
        check_preprocessor(pre)
    weight, start, end = (numbers + [None, None, None])[:3]
    spec = ControlSpec(model, image, 1.0 if weight is None else weight, 0.0 if start is None else start,
                       1.0 if end is None else end, pre)
    check_control(spec)
    return spec


def check_preprocessor(name: str) -> None:
    if name in PREPROCESSORS:
        return
    if name in NEEDS_WEIGHTS:
        raise ControlError(f"preprocessor {name} needs annotator weights ({NEEDS_WEIGHTS[name]}) that dreamshell "
                           f"does not have; make the map elsewhere and give it with /none")
    raise ControlError(f"unknown preprocessor '{name[:40]}'; preprocessors: {', '.join(PREPROCESSORS)}")


def check_control(spec: ControlSpec) -> None:
    if not 0 <= spec.weight <= 2:
        raise ControlError(f"weight {spec.weight:g} is out of range; a control's weight goes from 0 to 2 "
                           "(A1111's Weight)")
    if not (0 <= spec.start < spec.end <= 1):
        raise ControlError(f"guidance {spec.start:g} to {spec.end:g}: start and end are fractions of the steps, "
                           "0 <= start < end <= 1")


def _num(value: float) -> str:
    s = repr(float(value))
    return s[:-2] if s.endswith(".0") else s


def format_control(spec: ControlSpec) -> str:
    """The one token that reads back as spec (defaults left out from the right)."""
    head = spec.model + (f"/{spec.preprocessor}" if spec.preprocessor else "")
    numbers = [spec.weight, spec.start, spec.end]
    # an image whose name ends in ':<number>' gets all three numbers, so its own stays part of it
    if _number(spec.image.rsplit(":", 1)[-1]) is None or ":" not in spec.image:
        while numbers and numbers[-1] == (1.0, 0.0, 1.0)[len(numbers) - 1]:
            numbers.pop()
    return ":".join([head, spec.image, *(_num(n) for n in numbers)])


def check_controls(specs: tuple[ControlSpec, ...]) -> None:
    if len(specs) > MAX_CONTROLS:
        raise ControlError(f"{len(specs)} controls on one line; the most is {MAX_CONTROLS}")


# ----- outcrop

DIRECTIONS = ("top", "bottom", "left", "right")
OUTCROP_RULE = ("--outcrop takes direction/pixel pairs, e.g. --outcrop top 64 right 128 (directions: top, bottom, left, "
                "right)")


def parse_outcrop(tokens: list[str]) -> tuple[tuple[str, int], ...]:
    """`top 64 right 128` -> (("top", 64), ("right", 128)); pixels are whole multiples of 8."""
    if len(tokens) % 2:
        raise ControlError(f"'{' '.join(tokens)[:80]}' is not direction/pixel pairs; {OUTCROP_RULE}")
    pairs: dict[str, int] = {}
    for direction, pixels in zip(tokens[::2], tokens[1::2]):
        d = direction.lower()
        if d not in DIRECTIONS:
            raise ControlError(f"'{direction[:20]}' is not a direction; {OUTCROP_RULE}")
        if d in pairs:
            raise ControlError(f"{d} is given twice; give each direction once")
        try:
            n = int(pixels)
        except ValueError:
            raise ControlError(f"'{pixels[:20]}' is not a whole number of pixels; {OUTCROP_RULE}") from None
        if n <= 0 or n % 8 or n > MAX_OUTCROP:
            raise ControlError(f"{d} {pixels}: pixels are a multiple of 8 from 8 to {MAX_OUTCROP} "
                               "(InvokeAI 2.x rounded up to 64)")
        pairs[d] = n
    return tuple(pairs.items())


def format_outcrop(pairs) -> list[str]:
    return [str(v) for pair in pairs for v in pair]


def outcrop_size(width: int, height: int, pairs) -> tuple[int, int]:
    """The size after growing width x height by the pairs."""
    grow = dict(pairs)
    return (width + grow.get("left", 0) + grow.get("right", 0), height + grow.get("top", 0) + grow.get("bottom", 0))


# ----- only masked

def parse_inpaint_area(token: str) -> str | None:
    """`whole` (A1111's Whole picture, the default: None) or `masked` (Only masked)."""
    low = token.strip().lower().replace("_", " ")
    if low in ("masked", "only masked"):
        return "masked"
    if low in ("whole", "whole picture"):
        return None
    raise ControlError(f"'{token[:20]}' is not an inpaint area; use whole (the default) or masked (A1111's "
                       "Only masked: the area around -M is inpainted at the model's size and pasted back)")


def parse_padding(token: str) -> int:
    try:
        value = int(token)
    except ValueError:
        value = -1
    if not 0 <= value <= MAX_PADDING:
        raise ControlError(f"'{token[:20]}': the padding is a whole number of pixels from 0 to {MAX_PADDING}")
    return value
