"""The recipe in every PNG: `Dream`, `sd-metadata` (InvokeAI) and `parameters` (A1111); formats/ names each one's source.

Writing: `png_bytes(image, meta)` returns the encoded PNG with the three text chunks. Reading:
`fetch_recipe(path)` (request, notes, source) and `read_recipe(path)` (the request alone) read ours,
InvokeAI's (1.x-6.x), A1111's (PNG, JPEG, WebP) and ComfyUI's; the formats live in
`dreamshell.store.formats`. Pillow and stdlib only.
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from PIL import Image, PngImagePlugin

from ..line.request import DreamRequest
from .formats import (
    ImageMeta,
    MetadataError,
    Recipe,
    a1111_parameters,
    dream_text,
    fetch_recipe,
    parse_a1111,
    read_texts,
    sd_metadata,
)
from .formats.common import APP_ID

__all__ = ["APP_ID", "ImageMeta", "MetadataError", "Recipe", "a1111_parameters", "fetch_recipe", "parse_a1111",
           "png_bytes", "read_chunks", "read_recipe", "sd_metadata"]


def png_bytes(image: Image.Image, meta: ImageMeta) -> bytes:
    """Encode image as PNG with the Dream, sd-metadata and parameters text chunks."""
    info = PngImagePlugin.PngInfo()
    info.add_text("Dream", dream_text(meta))          # tEXt when Latin-1, else iTXt
    info.add_text("sd-metadata", json.dumps(sd_metadata(meta)))
    info.add_text("parameters", a1111_parameters(meta))
    buf = io.BytesIO()
    image.save(buf, format="PNG", pnginfo=info)
    return buf.getvalue()


def read_chunks(path: Path) -> dict[str, str]:
    """The image's text (PNG text chunks; `exif`/`comment` for JPEG and WebP), read without decoding pixels."""
    return read_texts(Path(path))[1]


def read_recipe(path: Path) -> DreamRequest:
    """The request that made the image at path (fetch_recipe without its notes)."""
    return fetch_recipe(path).request
