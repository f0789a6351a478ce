"""An upscaler without weights for tests of -U and !fix: a Lanczos resize, blended as the real one blends."""

from __future__ import annotations

from PIL import Image


class FakeUpscaler:
    def upscale(self, image, factor: float, strength: float = 0.75, should_stop=None):
        image = image.convert("RGB")
        size = (round(image.width * factor), round(image.height * factor))
        sharp = image.resize(size, Image.NEAREST)
        return sharp if strength >= 1 else Image.blend(image.resize(size, Image.LANCZOS), sharp, strength)
