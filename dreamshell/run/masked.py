"""`--inpaint_area masked --inpaint_padding N`: A1111's "Inpaint area: Only masked" (Pillow; no torch).

A1111 (`modules/processing.py` StableDiffusionProcessingImg2Img.init, `modules/masking.py` get_crop_region and
expand_crop_region): the box around the mask's white pixels, grown by the padding, is widened to the
generation's aspect ratio, cut out, enlarged to the generation size, inpainted there, and pasted back. Here the
generation size is the model's own (its models-file size: 512x512 for SD 1.x), so a small mask on a big canvas
is redrawn at the detail the model was made for and only the box is computed; the image step then keeps every
pixel outside the mask as it was (run/image.make_images), so the bytes outside the box never change.
"""

from __future__ import annotations

from PIL import Image

from ..line.control import DEFAULT_PADDING
from ..line.request import DreamRequest


def crop_box(mask: Image.Image, padding: int, aspect: float) -> tuple[int, int, int, int]:
    """The mask's box (white >= 128) grown by `padding`, then widened to `aspect` (w / h) inside the image."""
    width, height = mask.size
    found = mask.point(lambda v: 255 if v >= 128 else 0).getbbox()
    if found is None:
        return 0, 0, width, height
    x1, y1, x2, y2 = found
    x1, y1 = max(0, x1 - padding), max(0, y1 - padding)
    x2, y2 = min(width, x2 + padding), min(height, y2 + padding)
    if (x2 - x1) / (y2 - y1) > aspect:       # too wide: grow the height (A1111's expand_crop_region)
        y1, y2 = _widen(y1, y2, round((x2 - x1) / aspect), height)
    else:
        x1, x2 = _widen(x1, x2, round((y2 - y1) * aspect), width)
    return x1, y1, x2, y2


def _widen(lo: int, hi: int, want: int, limit: int) -> tuple[int, int]:
    """[lo, hi) grown to `want` around its middle, moved back inside [0, limit) (cut at the image when larger)."""
    extra = want - (hi - lo)
    lo, hi = lo - extra // 2, hi + extra - extra // 2
    if hi > limit:
        lo, hi = lo - (hi - limit), limit
    if lo < 0:
        lo, hi = 0, min(limit, hi - lo)
    return lo, hi


def inpaint_masked(generator, request: DreamRequest, files, init: Image.Image, mask: Image.Image, *,
                   controls: dict | None = None, on_step=None, should_stop=None, **extra) -> Image.Image:
    """Inpaint only the box around the mask, at the model's size, and paste it back into the image."""
    spec = generator.spec
    size = (spec.width, spec.height) if spec is not None else (request.width, request.height)
    box = crop_box(mask, DEFAULT_PADDING if request.inpaint_padding is None else request.inpaint_padding,
                   size[0] / size[1])
    crop = (box[2] - box[0], box[3] - box[1])
    inner = request.with_(width=size[0], height=size[1], inpaint_area=None, inpaint_padding=None, fit=False)
    if controls:      # the maps are the image's: cut the same box out of each
        maps = next(iter(controls.values()))
        extra["controls"] = {size: tuple(_crop(m, box, size) for m in maps)}
    made = generator.generate(inner, files=files, init_image=_crop(init, box, size),
                              mask=_crop(mask, box, size, Image.NEAREST), on_step=on_step, should_stop=should_stop,
                              **extra)
    out = init.copy()
    out.paste(made.convert("RGB").resize(crop, Image.LANCZOS), box[:2])
    return out


def _crop(image: Image.Image, box, size, resample=Image.LANCZOS) -> Image.Image:
    if image.mode == "RGBA":     # an inpaint map: its mark stays sharp
        rgb = image.convert("RGB").crop(box).resize(size, resample)
        rgb.putalpha(image.getchannel("A").crop(box).resize(size, Image.NEAREST))
        return rgb
    return image.crop(box).resize(size, resample)
