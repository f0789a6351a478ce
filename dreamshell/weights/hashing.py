"""sha256 of model weights, computed once per file and cached beside it (`<file>.sha256`). stdlib only."""

from __future__ import annotations

import hashlib
from pathlib import Path

WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".bin", ".pt", ".pth")


def file_sha256(path: Path) -> str:
    """sha256 of a file; reuses `<file>.sha256` when it is newer than the file."""
    cache = path.with_name(path.name + ".sha256")
    try:
        if cache.exists() and cache.stat().st_mtime >= path.stat().st_mtime:
            text = cache.read_text().strip()
            if len(text) == 64:
                return text
    except OSError:
        pass
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    try:
        cache.write_text(digest + "\n")
    except OSError:  # a read-only install: fine, hash again next time
        pass
    return digest


def weights_sha256(path: Path) -> str:
    """The hash of a weights file, or for a diffusers folder the hash of its weight files' hashes."""
    if path.is_file():
        return file_sha256(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0" + file_sha256(f).encode())
    return h.hexdigest()
