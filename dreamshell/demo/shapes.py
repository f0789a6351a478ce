"""Procedural shapes-on-backgrounds images and captions: the demo model's world (numpy + PIL only).

Used by the training script (data), the evaluation (names, colours, the shape measure) and tests.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw

SIZE = 64

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "green": (40, 170, 60),
    "blue": (40, 70, 220),
    "yellow": (240, 220, 40),
    "white": (245, 245, 245),
    "black": (15, 15, 15),
}
SHAPES = ("circle", "square", "triangle")
SIZES = {"small": (7, 11), "large": (15, 22)}
POSITIONS = {
    "top left": (0, 0), "top center": (1, 0), "top right": (2, 0),
    "middle left": (0, 1), "center": (1, 1), "middle right": (2, 1),
    "bottom left": (0, 2), "bottom center": (1, 2), "bottom right": (2, 2),
}


@dataclass(frozen=True)
class Scene:
    """One picture: what is drawn and where."""

    colour: str
    shape: str
    background: str
    size: str
    position: str
    radius: int
    cx: int
    cy: int

    def caption(self, with_size: bool = False, with_position: bool = False) -> str:
        size = f"{self.size} " if with_size else ""
        text = f"a {size}{self.colour} {self.shape} on a {self.background} background"
        return f"{text}, {self.position}" if with_position else text


def random_scene(rng: random.Random, colour: str | None = None, shape: str | None = None,
                 background: str | None = None) -> Scene:
    """A random scene; the shape's colour always differs from the background's."""
    colour = colour or rng.choice(list(COLOURS))
    background = background or rng.choice([c for c in COLOURS if c != colour])
    shape = shape or rng.choice(SHAPES)
    size = rng.choice(list(SIZES))
    position = rng.choice(list(POSITIONS))
    lo, hi = SIZES[size]
    radius = rng.randint(lo, hi)
    gx, gy = POSITIONS[position]
    cell = SIZE / 3

    def centre(g: int) -> int:
        c = int(cell * g + cell / 2 + rng.uniform(-cell / 4, cell / 4))
        return max(radius + 1, min(SIZE - radius - 2, c))

    return Scene(colour, shape, background, size, position, radius, centre(gx), centre(gy))


def _jitter(rgb: tuple[int, int, int], rng: random.Random, amount: int) -> tuple[int, ...]:
    return tuple(max(0, min(255, v + rng.randint(-amount, amount))) for v in rgb)


def render(scene: Scene, rng: random.Random | None = None, jitter: int = 8, scale: int = 1) -> Image.Image:
    """Draw a scene as a 64x64 RGB image (colours jittered a little when rng is given); `scale`
    draws the same scene at a multiple of that size."""
    amt = jitter if rng is not None else 0
    rng = rng or random.Random(0)
    img = Image.new("RGB", (SIZE * scale, SIZE * scale), _jitter(COLOURS[scene.background], rng, amt))
    draw = ImageDraw.Draw(img)
    fill = _jitter(COLOURS[scene.colour], rng, amt)
    r, cx, cy = scene.radius * scale, scene.cx * scale + scale // 2, scene.cy * scale + scale // 2
    box = (cx - r, cy - r, cx + r, cy + r)
    if scene.shape == "circle":
        draw.ellipse(box, fill=fill)
    elif scene.shape == "square":
        draw.rectangle(box, fill=fill)
    else:
        draw.polygon([(cx, cy - r), (cx - r, cy + r), (cx + r, cy + r)], fill=fill)
    return img


def _palette() -> tuple[list[str], np.ndarray]:
    names = list(COLOURS)
    return names, np.array([COLOURS[n] for n in names], dtype=np.float32)


def classify_pixels(img: Image.Image) -> np.ndarray:
    """Index into COLOURS of the nearest named colour, per pixel (H x W)."""
    _, pal = _palette()
    px = np.asarray(img.convert("RGB"), dtype=np.float32)
    d = ((px[:, :, None, :] - pal[None, None]) ** 2).sum(-1)
    return d.argmin(-1)


@dataclass(frozen=True)
class Reading:
    """What the simple measure sees in an image."""

    background: str
    colour: str | None
    shape: str | None
    fill_ratio: float


def read_image(img: Image.Image) -> Reading:
    """Background = commonest colour on the border; colour = commonest other colour;
    shape = from the fill ratio of that colour's bounding box (square ~1, circle ~0.79, triangle ~0.5)."""
    names, _ = _palette()
    labels = classify_pixels(img)
    border = np.concatenate([labels[0], labels[-1], labels[:, 0], labels[:, -1]])
    bg = int(np.bincount(border, minlength=len(names)).argmax())
    counts = np.bincount(labels.ravel(), minlength=len(names))
    counts[bg] = 0
    if counts.max() < 12:  # fewer pixels than the smallest shape could have: no shape drawn
        return Reading(names[bg], None, None, 0.0)
    fg = int(counts.argmax())
    mask = labels == fg
    ys, xs = np.nonzero(mask)
    # bounding box of the central 98% of the mask, so stray pixels do not stretch it
    y0, y1 = np.percentile(ys, [1, 99])
    x0, x1 = np.percentile(xs, [1, 99])
    area = max(1.0, (y1 - y0 + 1) * (x1 - x0 + 1))
    inside = mask[int(y0):int(y1) + 1, int(x0):int(x1) + 1].sum()
    ratio = float(inside / area)
    shape = "square" if ratio > 0.89 else "circle" if ratio > 0.64 else "triangle"
    return Reading(names[bg], names[fg], shape, ratio)


def vocabulary_words() -> list[str]:
    """Every word the captions use (the demo tokenizer makes each one token)."""
    words = {"a", "on", "background", ","}
    words.update(COLOURS)
    words.update(SHAPES)
    words.update(SIZES)
    for p in POSITIONS:
        words.update(p.split())
    return sorted(words)
