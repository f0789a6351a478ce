"""`--outcrop DIR PIXELS ...` (and `!fix IMAGE --outcrop ...`): grow an image and let the model paint the new band
(Pillow and numpy; no torch: the generator is handed in).

InvokeAI 2.x's outcrop (`ldm/invoke/restoration/outcrop.py`, v2.2.5) grew the canvas, left the band
transparent, filled it (tiles of the image, or PatchMatch), inpainted the whole canvas at strength 0.9 and then
repainted a 96-pixel seam. Here, one pass: the canvas grows by the pixels asked, the band is filled with the
image's edge stretched outward (each new row or column repeats the nearest edge row or column of the image, so
the band starts in the colours it continues; `fill="noise"` puts uniform noise there instead), the model
inpaints the band and a seam reaching `seam_width` pixels into the image (at the line's -f, else
line/control.OUTCROP_STRENGTH: InvokeAI's 0.9), and the result is laid over the grown image through a soft mask:
255 in the band, falling to 0 across the seam. Every pixel of the image the seam does not reach is kept byte for
byte.
"""

from __future__ import annotations

import numpy as np
from PIL import Image

from ..line.request import DreamRequest


def seam_width(width: int, height: int) -> int:
    """Pixels the seam reaches into the image: 1/16 of its shorter side, from 4 to 32 (InvokeAI: 96 of 512)."""
    return max(4, min(32, min(width, height) // 16))


def grow(image: Image.Image, pairs, fill: str = "edge", seed: int = 0) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """The grown canvas and where the image sits in it (left, top, right, bottom)."""
    grow_by = dict(pairs)
    left, top = grow_by.get("left", 0), grow_by.get("top", 0)
    w, h = image.size
    cw, ch = w + left + grow_by.get("right", 0), h + top + grow_by.get("bottom", 0)
    px = np.asarray(image.convert("RGB"))
    if fill == "noise":
        rng = np.random.default_rng(seed)
        canvas = rng.integers(0, 256, (ch, cw, 3), dtype=np.uint8)
    else:   # each canvas pixel takes the nearest image pixel: the edges stretched outward
        ys = np.clip(np.arange(ch) - top, 0, h - 1)
        xs = np.clip(np.arange(cw) - left, 0, w - 1)
        canvas = px[ys[:, None], xs[None, :]].copy()
    canvas[top:top + h, left:left + w] = px
    return Image.fromarray(canvas, "RGB"), (left, top, left + w, top + h)


def soft_mask(size: tuple[int, int], box: tuple[int, int, int, int], seam: int) -> Image.Image:
    """255 outside the image's box, falling linearly to 0 at `seam` pixels inside the edges that grew."""
    cw, ch = size
    left, top, right, bottom = box
    ys, xs = np.mgrid[0:ch, 0:cw]
    inside = np.full((ch, cw), np.inf)
    if left > 0:
        inside = np.minimum(inside, xs - left)
    if top > 0:
        inside = np.minimum(inside, ys - top)
    if right < cw:
        inside = np.minimum(inside, right - 1 - xs)
    if bottom < ch:
        inside = np.minimum(inside, bottom - 1 - ys)
    # distance into the image from a grown edge: < 0 in the band; the ramp reaches 0 at `seam`
    weight = np.clip(1.0 - (inside + 1) / (seam + 1), 0.0, 1.0)
    return Image.fromarray(np.rint(weight * 255).astype(np.uint8), "L")


def outcrop(generator, request: DreamRequest, files, init: Image.Image, *, fill: str = "edge", on_step=None,
            should_stop=None, **extra) -> Image.Image:
    """The image grown as request.outcrop says, the band painted by the model (through its inpaint pipeline)."""
    canvas, box = grow(init, request.outcrop, fill, request.seed or 0)
    mask = soft_mask(canvas.size, box, seam_width(*init.size))
    repaint = mask.point(lambda v: 255 if v > 0 else 0)
    inner = request.with_(width=canvas.width, height=canvas.height, outcrop=(), fit=False)
    made = generator.generate(inner, files=files, init_image=canvas, mask=repaint, on_step=on_step,
                              should_stop=should_stop, **extra)
    return Image.composite(made.convert("RGB"), canvas, mask)
