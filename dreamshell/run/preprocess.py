"""Control maps from images: the preprocessors that need no weights (numpy, scipy and Pillow; no torch).

`make_map(image, name, size, mask)` crops and resizes the image to the generation's size (A1111's "Crop and
Resize") and runs the preprocessor there (A1111's "Pixel Perfect"):
- canny: OpenCV's `cv2.Canny(image, 100, 200)` (A1111's default thresholds) re-done in numpy: 3x3 Sobel per
  channel (replicated border), the channel with the largest |dx|+|dy|, non-maximum suppression in OpenCV's four
  sectors, hysteresis over 8-connected pixels. Measured against OpenCV by bench/bench_control.py.
- tile: the image itself (A1111's tile_resample at rate 1); blur: Gaussian blur, sigma 9 (blur_gaussian);
- inpaint: the image with the -M area marked (an RGBA map, alpha = the mask; the engine sets it to -1 as
  ControlNet 1.1's inpaint model expects);
- shuffle: ControlNet 1.1's content shuffle (a smooth random flow field), seeded by the image's own pixels so
  a line replays the same; none: the image as it is.
"""

from __future__ import annotations

import zlib

import numpy as np
from PIL import Image, ImageFilter

from ..line.control import PREPROCESSORS
from ..line.errors import UserError

CANNY_LOW, CANNY_HIGH = 100, 200      # A1111's canny defaults (Threshold A, Threshold B)
BLUR_SIGMA = 9.0                      # A1111's blur_gaussian default


def crop_and_resize(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Scale to cover size, then cut the middle (A1111's and the ControlNet extension's Crop and Resize)."""
    w, h = size
    if image.size == (w, h):
        return image
    scale = max(w / image.width, h / image.height)
    sw, sh = max(w, round(image.width * scale)), max(h, round(image.height * scale))
    scaled = image.resize((sw, sh), Image.LANCZOS)
    left, top = (sw - w) // 2, (sh - h) // 2
    return scaled.crop((left, top, left + w, top + h))


def _sobel(channel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """3x3 Sobel dx, dy of one channel (int32), border replicated as OpenCV's Canny does."""
    p = np.pad(channel.astype(np.int32), 1, mode="edge")
    dx = (p[:-2, 2:] + 2 * p[1:-1, 2:] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[1:-1, :-2] + p[2:, :-2])
    dy = (p[2:, :-2] + 2 * p[2:, 1:-1] + p[2:, 2:]) - (p[:-2, :-2] + 2 * p[:-2, 1:-1] + p[:-2, 2:])
    return dx, dy


def canny(image: Image.Image, low: int = CANNY_LOW, high: int = CANNY_HIGH) -> Image.Image:
    """OpenCV's Canny (L1 gradient, aperture 3) on an RGB or grey image: white edges on black ("L")."""
    from scipy import ndimage

    px = np.asarray(image.convert("RGB") if image.mode not in ("L", "RGB") else image)
    channels = [px] if px.ndim == 2 else [px[:, :, c] for c in range(px.shape[2])]
    dx, dy = _sobel(channels[0])
    mag = np.abs(dx) + np.abs(dy)
    for ch in channels[1:]:                       # the channel with the largest gradient (first on ties)
        cx, cy = _sobel(ch)
        m = np.abs(cx) + np.abs(cy)
        more = m > mag
        dx, dy, mag = np.where(more, cx, dx), np.where(more, cy, dy), np.where(more, m, mag)
    h, w = mag.shape
    padded = np.zeros((h + 2, w + 2), np.int64)   # OpenCV's magnitude buffer has a zero border
    padded[1:-1, 1:-1] = mag

    def at(oy: int, ox: int) -> np.ndarray:
        return padded[1 + oy:1 + oy + h, 1 + ox:1 + ox + w]

    # OpenCV's sectors in fixed point: tan(22.5 deg) and tan(67.5 deg) with 15 fractional bits
    shift = 15
    tg22 = int(0.4142135623730950488016887242097 * (1 << shift) + 0.5)
    ax, ay = np.abs(dx).astype(np.int64), np.abs(dy).astype(np.int64)
    tg22x = ax * tg22
    tg67x = tg22x + (ax << (shift + 1))
    ys = ay << shift
    horizontal = ys < tg22x
    vertical = ys > tg67x
    diagonal = ~(horizontal | vertical)
    s = np.where((dx ^ dy) < 0, -1, 1)
    m = mag.astype(np.int64)
    peak = np.zeros_like(horizontal)
    peak |= horizontal & (m > at(0, -1)) & (m >= at(0, 1))
    peak |= vertical & (m > at(-1, 0)) & (m >= at(1, 0))
    up_left, up_right, down_left, down_right = at(-1, -1), at(-1, 1), at(1, -1), at(1, 1)
    prev_diag = np.where(s < 0, up_right, up_left)       # OpenCV: _mag_p[j - s] and _mag_n[j + s]
    next_diag = np.where(s < 0, down_left, down_right)
    peak |= diagonal & (m > prev_diag) & (m > next_diag)
    candidate = peak & (m > low)
    strong = candidate & (m > high)
    labels, count = ndimage.label(candidate, structure=np.ones((3, 3), bool))
    keep = np.zeros(count + 1, bool)
    keep[np.unique(labels[strong])] = True
    keep[0] = False
    edges = keep[labels]
    return Image.fromarray((edges * 255).astype(np.uint8), "L")


def _smooth_noise(h: int, w: int, cell: int, rng: np.random.Generator) -> np.ndarray:
    """ControlNet 1.1's make_noise_disk: coarse uniform noise, bicubic-upsampled, cut, scaled to 0..1."""
    coarse = rng.uniform(0, 1, size=(h // cell + 2, w // cell + 2)).astype(np.float32)
    big = np.asarray(Image.fromarray(coarse, "F").resize((w + 2 * cell, h + 2 * cell), Image.BICUBIC))
    noise = big[cell:cell + h, cell:cell + w].astype(np.float64)
    noise -= noise.min()
    top = noise.max()
    return noise / top if top > 0 else noise


def shuffle(image: Image.Image) -> Image.Image:
    """Content shuffle: every pixel taken from a smoothly random place (bilinear), seeded by the pixels."""
    from scipy import ndimage

    px = np.asarray(image.convert("RGB"), dtype=np.float64)
    h, w = px.shape[:2]
    rng = np.random.default_rng(zlib.crc32(px.astype(np.uint8).tobytes()))
    cell = max(8, round(256 * max(h, w) / 512))
    x = _smooth_noise(h, w, cell, rng) * (w - 1)
    y = _smooth_noise(h, w, cell, rng) * (h - 1)
    out = np.stack([ndimage.map_coordinates(px[:, :, c], [y, x], order=1, mode="nearest") for c in range(3)], -1)
    return Image.fromarray(np.clip(np.rint(out), 0, 255).astype(np.uint8), "RGB")


def inpaint_map(image: Image.Image, mask: Image.Image | None) -> Image.Image:
    """The image with the area to repaint marked: RGBA, alpha 255 where the mask is white (>= 128)."""
    if mask is None:
        raise UserError("preprocessor inpaint marks the -M area: give the line -I IMAGE -M MASK")
    marked = image.convert("RGB").copy()
    marked.putalpha(mask.convert("L").resize(image.size, Image.NEAREST).point(lambda v: 255 if v >= 128 else 0))
    return marked


def make_map(image: Image.Image, name: str, size: tuple[int, int], mask: Image.Image | None = None) -> Image.Image:
    """The control map of `image` for a generation of `size` (RGB, or RGBA for inpaint)."""
    if name not in PREPROCESSORS:
        raise UserError(f"unknown preprocessor '{name}'; preprocessors: {', '.join(PREPROCESSORS)}")
    fitted = crop_and_resize(image.convert("RGB"), size)
    if name == "canny":
        return canny(fitted).convert("RGB")
    if name == "blur":
        return fitted.filter(ImageFilter.GaussianBlur(BLUR_SIGMA))
    if name == "shuffle":
        return shuffle(fitted)
    if name == "inpaint":
        return inpaint_map(fitted, crop_and_resize(mask.convert("L"), size) if mask is not None else None)
    return fitted      # tile, none


def viewable(control_map: Image.Image) -> Image.Image:
    """A map as a person looks at it: an inpaint map's marked area shown black."""
    if control_map.mode != "RGBA":
        return control_map.convert("RGB")
    out = Image.new("RGB", control_map.size, (0, 0, 0))
    out.paste(control_map.convert("RGB"), mask=control_map.getchannel("A").point(lambda v: 255 - v))
    return out
