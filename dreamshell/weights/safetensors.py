"""The one reader of a .safetensors header (stdlib only): tensor shapes and `__metadata__` strings from
the first bytes of the file, never the weights. A file whose header is not what the format says is one
NotAModel line, whatever is wrong with it (too short, an absurd length, not JSON, odd values)."""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path

from .errors import NotAModel
from .files import BadJSON, NotRegular, load_json, open_regular

MAX_HEADER = 100_000_000        # bytes of JSON header a file may have (the format's own bound)


@dataclass(frozen=True)
class Header:
    length: int                              # bytes of the JSON header; the payload starts at 8 + length
    shapes: dict[str, tuple[int, ...]]       # tensor name -> shape
    metadata: dict[str, str]                 # `__metadata__` (kohya `ss_*`, ModelSpec `modelspec.*`, ...)


def read_header(path: Path) -> Header:
    """The header of the .safetensors file at path; NotAModel when it is not one."""
    path = Path(path)
    try:
        f = open_regular(path)
    except NotRegular as e:
        raise NotAModel(e.strerror) from None
    except OSError as e:
        raise NotAModel(f"{path} cannot be read ({e.strerror or e})") from None
    with f:
        head = f.read(8)
        if len(head) < 8:
            raise NotAModel(f"{path} is not a safetensors file (shorter than its 8-byte header length)")
        (length,) = struct.unpack("<Q", head)
        if not 2 <= length <= MAX_HEADER:
            raise NotAModel(f"{path} is not a safetensors file (header length {length} makes no sense)")
        if length > os.fstat(f.fileno()).st_size - 8:
            raise NotAModel(f"{path} is not a safetensors file (it ends inside its header)")
        raw = f.read(length)
    if len(raw) < length:
        raise NotAModel(f"{path} is not a safetensors file (it ends inside its header)")
    try:
        header = load_json(raw.decode("utf-8"))
    except UnicodeDecodeError:
        raise NotAModel(f"{path} is not a safetensors file (its header is not UTF-8 JSON)") from None
    except BadJSON as e:
        raise NotAModel(f"{path} is not a safetensors file (its header is {e})") from None
    if not isinstance(header, dict):
        raise NotAModel(f"{path} is not a safetensors file (its header is not a JSON object)")
    shapes: dict[str, tuple[int, ...]] = {}
    metadata: dict[str, str] = {}
    for key, value in header.items():
        if key == "__metadata__":
            if isinstance(value, dict):
                metadata = {str(k): v for k, v in value.items() if isinstance(v, str)}
            continue
        shape = value.get("shape") if isinstance(value, dict) else None
        if not isinstance(shape, list) or not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0
                                                   for n in shape):
            raise NotAModel(f"{path} is not a safetensors file (tensor {key[:80]!r} has no valid shape)")
        shapes[key] = tuple(shape)
    return Header(length, shapes, metadata)
