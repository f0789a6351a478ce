"""The demo adapters' concepts: drawing them and reading them back from pixels (numpy + PIL only).

- LoRA `demo_cross` (models/loras/demo_cross.safetensors) teaches a NEW SHAPE, a cross (a plus sign):
  `a red cross on a blue background <lora:demo_cross:1>`. The base demo model has no cross; it knows
  only circle, square and triangle (shapes.SHAPES), and "cross" is plain byte tokens to it.
- Embedding `yolk` (models/embeddings/yolk.safetensors) is a NEW WORD for something the base model can
  already draw, a yellow circle: `a yolk on a blue background`.

shapes.py (COLOURS, SHAPES, render, read_image) is left as it is: the base evaluation depends on it.
"""

from __future__ import annotations

import random

import numpy as np
from PIL import Image, ImageDraw

from . import shapes

CROSS = "cross"
# half the width of a cross's arms, as a fraction of its radius: arms a third of the box wide
CROSS_ARM = 0.3
# crosses are drawn large only: through the demo VAE (factor 4) a small cross's arms blur into a blob
CROSS_RADIUS = (13, 22)
YOLK = ("yellow", "circle")  # what the embedding word `yolk` means


def random_cross_scene(rng: random.Random, colour: str | None = None,
                       background: str | None = None) -> shapes.Scene:
    """A random scene whose shape is a cross: the base scenes' colours and positions, large sizes only."""
    colour = colour or rng.choice(list(shapes.COLOURS))
    background = background or rng.choice([c for c in shapes.COLOURS if c != colour])
    position = rng.choice(list(shapes.POSITIONS))
    radius = rng.randint(*CROSS_RADIUS)
    gx, gy = shapes.POSITIONS[position]
    cell = shapes.SIZE / 3

    def centre(g: int) -> int:
        c = int(cell * g + cell / 2 + rng.uniform(-cell / 4, cell / 4))
        return max(radius + 1, min(shapes.SIZE - radius - 2, c))

    return shapes.Scene(colour, CROSS, background, "large", position, radius, centre(gx), centre(gy))


def render(scene: shapes.Scene, rng: random.Random | None = None, jitter: int = 8) -> Image.Image:
    """Draw a scene like shapes.render does, with `cross` as a fourth shape."""
    if scene.shape != CROSS:
        return shapes.render(scene, rng, jitter)
    amt = jitter if rng is not None else 0
    rng = rng or random.Random(0)
    img = Image.new("RGB", (shapes.SIZE, shapes.SIZE), shapes._jitter(shapes.COLOURS[scene.background], rng, amt))
    draw = ImageDraw.Draw(img)
    fill = shapes._jitter(shapes.COLOURS[scene.colour], rng, amt)
    r, cx, cy = scene.radius, scene.cx, scene.cy
    w = max(2, round(r * CROSS_ARM))
    draw.rectangle((cx - r, cy - w, cx + r, cy + w), fill=fill)
    draw.rectangle((cx - w, cy - r, cx + w, cy + r), fill=fill)
    return img


def _masks(img: Image.Image) -> tuple[str, np.ndarray, np.ndarray] | None:
    """(foreground colour, its mask, the object's mask) as shapes.read_image sees them: background =
    commonest colour on the border, foreground = commonest other colour, object = every pixel not of
    the background colour. None when fewer than 12 pixels differ from the background."""
    names = list(shapes.COLOURS)
    labels = shapes.classify_pixels(img)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    bg = int(np.bincount(border, minlength=len(names)).argmax())
    counts = np.bincount(labels.ravel(), minlength=len(names))
    counts[bg] = 0
    if counts.max() < 12:
        return None
    fg = int(counts.argmax())
    return names[fg], labels == fg, labels != bg


def grid_fill(mask: np.ndarray) -> np.ndarray:
    """Fill ratio of each cell of a 3x3 grid over the mask's bounding box (central 98 % of its pixels)."""
    ys, xs = np.nonzero(mask)
    y0, y1 = np.percentile(ys, [1, 99])
    x0, x1 = np.percentile(xs, [1, 99])
    y0, x0 = int(round(y0)), int(round(x0))
    y1, x1 = int(round(y1)) + 1, int(round(x1)) + 1
    box = mask[y0:y1, x0:x1].astype(np.float32)
    h, w = box.shape
    out = np.zeros((3, 3), np.float32)
    for i in range(3):
        for j in range(3):
            cell = box[i * h // 3:max(i * h // 3 + 1, (i + 1) * h // 3), j * w // 3:max(j * w // 3 + 1, (j + 1) * w // 3)]
            out[i, j] = float(cell.mean()) if cell.size else 0.0
    return out


def is_plus(g: np.ndarray) -> bool:
    """A 3x3 grid fill of a plus sign: the four corner cells nearly empty, the centre and the four arms
    nearly full. A circle fills its corner cells about half, a square fully, a triangle its bottom
    corners; none of them passes."""
    corners = np.array([g[0, 0], g[0, 2], g[2, 0], g[2, 2]])
    arms = min(g[1, 1], g[0, 1], g[1, 0], g[1, 2], g[2, 1])
    return bool(corners.mean() < 0.25 and corners.max() < 0.45 and arms > 0.6)


def read_cross(img: Image.Image) -> tuple[bool, bool, str | None]:
    """(the object is a cross, the foreground colour's own pixels form a cross, foreground colour).

    The first reads the shape of everything that is not background, so a cross drawn with fringes or
    highlights of a second colour (the demo model's habit at CFG 5) still counts; the second is the
    stricter reading shapes.read_image uses for the base shapes (one colour's pixels only)."""
    m = _masks(img)
    if m is None:
        return False, False, None
    name, fg, obj = m
    return is_plus(grid_fill(obj)), is_plus(grid_fill(fg)), name


def is_cross(img: Image.Image) -> bool:
    """The LoRA's concept: the drawn object (every non-background pixel) is a plus sign."""
    return read_cross(img)[0]


def is_yolk(img: Image.Image) -> bool:
    """The embedding's concept: a yellow circle (shapes.read_image's colour and shape)."""
    r = shapes.read_image(img)
    return (r.colour, r.shape) == YOLK
