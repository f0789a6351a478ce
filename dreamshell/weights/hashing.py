"""Hashes of weight files, computed once and cached (stdlib only).

One cache for every hash dreamshell records (the model's sha256, A1111's LoRA, embedding and VAE
hashes): in memory per (path, size, modification time), and on disk in one JSON file in the cache
folder, as A1111 keeps its `cache.json`, so a 4 GB model is hashed once, not at every start. Nothing is
written beside a user's weights. The folder is `DREAMSHELL_CACHE_DIR` if set, else the user cache
folder (platformdirs; `~/.cache/dreamshell` on Linux).
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import stat
import threading
from pathlib import Path

from .files import BadJSON, NotRegular, open_regular, read_json_file

WEIGHT_SUFFIXES = (".safetensors", ".ckpt", ".bin", ".pt", ".pth", ".gguf")
CACHE_NAME = "hashes.json"
MAX_CACHE_BYTES = 64 * 1024 * 1024   # a cache file larger than this is not read (it is rebuilt)

_memory: dict[tuple, str] = {}
_lock = threading.Lock()


def cache_dir() -> Path:
    env = os.environ.get("DREAMSHELL_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs
    return Path(platformdirs.user_cache_dir("dreamshell", appauthor=False))


def _disk_key(path: Path, kind: str) -> str:
    return f"{kind}:{path}"


def _load_disk() -> dict:
    try:
        data = read_json_file(cache_dir() / CACHE_NAME, MAX_CACHE_BYTES)
    except (OSError, BadJSON):
        return {}
    return data if isinstance(data, dict) else {}


def _save_disk(key: str, entry: dict) -> None:
    """Add one entry to the cache file (written whole to a temporary file, then renamed; a lost race
    only means a file is hashed again)."""
    folder = cache_dir()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        data = _load_disk()
        data[key] = entry
        tmp = folder / f"{CACHE_NAME}.{os.getpid()}.tmp"
        tmp.write_text(json.dumps(data), encoding="utf-8")
        os.replace(tmp, folder / CACHE_NAME)
    except OSError:   # a read-only cache folder: hash again next time
        pass


def sha256_of(path: Path, skip_header: bool = False) -> str:
    """sha256 hex of a file, or (skip_header) of a .safetensors file's payload after its 8-byte length
    and JSON header (A1111's `addnet_hash_safetensors`). Cached; only regular files are read."""
    path = Path(path).resolve()
    st = path.stat()
    if not stat.S_ISREG(st.st_mode):
        raise NotRegular(errno.EINVAL, f"{path} is not a regular file")
    kind = "addnet" if skip_header else "sha256"
    key = (str(path), st.st_size, st.st_mtime_ns, kind)
    with _lock:
        if key in _memory:
            return _memory[key]
    disk = _load_disk().get(_disk_key(path, kind))
    if isinstance(disk, dict) and disk.get("size") == st.st_size and disk.get("mtime_ns") == st.st_mtime_ns \
            and isinstance(disk.get("hash"), str) and len(disk["hash"]) == 64:
        digest = disk["hash"]
    else:
        h = hashlib.sha256()
        with open_regular(path) as f:   # a FIFO or a device is refused (NotRegular, an OSError)
            if skip_header:
                from .safetensors import read_header
                f.seek(8 + read_header(path).length)
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        digest = h.hexdigest()
        _save_disk(_disk_key(path, kind), {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "hash": digest})
    with _lock:
        _memory[key] = digest
    return digest


def weights_sha256(path: Path) -> str:
    """The hash of a weights file, or for a diffusers folder the hash of its weight files' hashes."""
    path = Path(path)
    if path.is_file():
        return sha256_of(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.suffix in WEIGHT_SUFFIXES and p.is_file()):
        h.update(f.relative_to(path).as_posix().encode() + b"\0" + sha256_of(f).encode())
    return h.hexdigest()
