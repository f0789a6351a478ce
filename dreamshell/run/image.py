"""The one image step: inputs, generation, inpaint compositing, upscale (and its fallback) -> ImageResult.

The shell and command files (run/session.py) and the Ray workers (batch/worker.py) make every image
through `make_images`; the inputs are loaded by `load_inputs` (the session's thread, or the Ray
driver before it hands an image to a worker). No torch here: the generator and the upscaler are
handed in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from PIL import Image

from ..engines.protocols import GenerationError
from ..line import hires
from ..line.errors import UserError
from ..line.request import DreamRequest
from ..weights.library import LineFiles
from .types import ImageResult

MAX_INPUT_PIXELS = 8192 * 8192     # an init image or mask larger than this is refused before decoding


def read_image_size(path: str, what: str) -> tuple[int, int]:
    """An image file's size from its header (pixels are not decoded); one line when it is not an image."""
    p = Path(path).expanduser()
    if not p.is_file():
        raise UserError(f"{what} {path}: no such file" if not p.exists() else
                        f"{what} {path}: is not a regular file; give an image file")
    try:
        with Image.open(p) as img:
            return img.size
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"{what} {path}: not a readable image ({e})") from None


def _load_image(path: str, what: str, mode: str) -> Image.Image:
    width, height = read_image_size(path, what)
    if width * height > MAX_INPUT_PIXELS:
        raise UserError(f"{what} {path} is {width}x{height}; images read are at most {MAX_INPUT_PIXELS:,} pixels")
    try:
        with Image.open(Path(path).expanduser()) as img:
            return img.convert(mode)
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        raise UserError(f"{what} {path}: not a readable image ({e})") from None


@dataclass(frozen=True)
class Inputs:
    """What load_inputs reads for a line with --control: the init image (or None) and the control maps, by the
    size they are made for (the line's; the hires fix's second pass). It stands where the init image stands, so
    every driver (the session, the Ray driver and workers) hands it on as it is."""

    init: object
    controls: dict


def split_inputs(init) -> tuple[object, dict]:
    """(init image or None, control maps by size) from what load_inputs returned."""
    return (init.init, init.controls) if isinstance(init, Inputs) else (init, {})


def load_inputs(request: DreamRequest, explicit_size: bool, note: Callable[[str], None] = lambda _: None):
    """The init image and mask sized to the request (--fit resizes; without -W/-H the image's own size,
    rounded down to a multiple of 8, is used): (init, mask, request with its final size). With --control the
    first is an `Inputs` that also holds the control maps."""
    init, mask, request = _load_init(request, explicit_size, note)
    if request.control:
        return Inputs(init, control_maps(request, init, mask)), mask, request
    return init, mask, request


def control_maps(request: DreamRequest, init, mask) -> dict:
    """Each --control image through its preprocessor at the line's size (and at the hires pass's)."""
    from .preprocess import make_map
    sizes = [(request.width, request.height)]
    if request.hires_fix:
        sizes.append(hires.target_size(request.width, request.height, request.hires_scale or hires.DEFAULT_SCALE))
    sources = []
    for spec in request.control:
        if spec.image == "-1":
            raise UserError(f"--control {spec.model}:-1 names an image this batch makes; with --ray give its path")
        same = init is not None and Path(spec.image).expanduser() == Path(request.init_img).expanduser()
        sources.append((init if same else _load_image(spec.image, "--control", "RGB"), spec.pre()))
    return {size: tuple(make_map(image, pre, size, mask) for image, pre in sources) for size in sizes}


def _load_init(request: DreamRequest, explicit_size: bool, note: Callable[[str], None]):
    if not request.init_img:
        return None, None, request
    from .plan import size_from_image
    if not explicit_size:
        width, height = size_from_image(request.init_img)
        request = request.with_(width=width, height=height)
    init = _load_image(request.init_img, "-I", "RGB")
    if init.size != (request.width, request.height):
        if not request.fit and explicit_size:
            raise UserError(f"-I {request.init_img} is {init.size[0]}x{init.size[1]} but the line asks for "
                            f"{request.width}x{request.height}: add --fit to resize it, or drop -W/-H")
        init = init.resize((request.width, request.height), Image.LANCZOS)
    mask = None
    if request.init_mask:
        mask = _load_image(request.init_mask, "-M", "L")
        if mask.size != init.size:
            note(f"note: -M {request.init_mask} is {mask.size[0]}x{mask.size[1]}; it is resized to the image's "
                 f"{init.size[0]}x{init.size[1]}")
            mask = mask.resize(init.size, Image.NEAREST)
    return init, mask, request


def _generate_one(generator, request: DreamRequest, files, init, mask, extra: dict, on_step, should_stop):
    """One image: through --outcrop (run/outcrop.py) or --inpaint_area masked (run/masked.py) when the line asks."""
    if request.outcrop:
        from .outcrop import outcrop
        return outcrop(generator, request, files, init, on_step=on_step, should_stop=should_stop, **extra)
    if request.inpaint_area == "masked" and mask is not None:
        from .masked import inpaint_masked
        return inpaint_masked(generator, request, files, init, mask, on_step=on_step, should_stop=should_stop,
                              **extra)
    return generator.generate(request, files=files, init_image=init, mask=mask, on_step=on_step,
                              should_stop=should_stop, **extra)


def image_type(request: DreamRequest, mask) -> str:
    return "inpaint" if mask is not None else "img2img" if request.init_img else "txt2img"


def make_images(generator, group: list[DreamRequest], files: LineFiles | None, init=None, mask=None, *,
                upscale: Callable | None = None, on_step=None, should_stop=None, on_preview=None) -> list[ImageResult]:
    """Make one group of images (one, or several of one line batched together) and finish each: the
    unmasked part of an inpainted image kept exactly, then -U (or, when the upscale cannot be done, the
    image as it is with -U dropped from its recipe and a note). Runs where the model lives."""
    init, controls = split_inputs(init)
    if len(group) > 1:
        made = generator.generate_batch(group, files=files, on_step=on_step, should_stop=should_stop)
    else:
        extra = {"on_preview": on_preview} if on_preview is not None else {}
        if controls:
            extra["controls"] = controls
        made = [_generate_one(generator, group[0], files, init, mask, extra, on_step, should_stop)]
        if group[0].outcrop:
            return [finish(made[0], group[0], "img2img", generator.model_hash or "", upscale, should_stop)]
    results = []
    for request, image in zip(group, made):
        if mask is not None:  # keep the unmasked part exactly as it was (as A1111's overlay does)
            image = Image.composite(image.convert("RGB"), init, mask.point(lambda v: 255 if v >= 128 else 0))
        results.append(finish(image, request, image_type(request, mask), generator.model_hash or "", upscale,
                              should_stop))
    return results


def finish(image, request: DreamRequest, kind: str, model_hash: str, upscale: Callable | None,
           should_stop=None) -> ImageResult:
    """-U on a made image; a failed upscale keeps the image and says so (its recipe then has no -U)."""
    if not request.upscale:
        return ImageResult(image, request, kind, model_hash)
    spec = request.upscale
    try:
        if upscale is None:
            raise GenerationError("no upscaler is set up here")
        up = upscale(image, spec.factor, spec.strength, should_stop=should_stop)
    except (UserError, OSError, MemoryError) as e:
        why = str(e) or type(e).__name__
        if isinstance(e, MemoryError):
            why = f"not enough memory to upscale {image.size[0]}x{image.size[1]} by {spec.factor:g}"
        return ImageResult(image, request.with_(upscale=None, save_original=False), kind, model_hash,
                           notes=(f"-U: {why}; the image is saved without upscaling",))
    return ImageResult(up, request, kind, model_hash, original=image if request.save_original else None,
                       postprocessing=({"type": "esrgan", "scale": spec.factor, "strength": spec.strength},))
