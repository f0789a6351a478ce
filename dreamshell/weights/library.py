"""LoRAs, textual-inversion embeddings and VAEs: where their files are, how a line names them, and
their hashes as A1111 writes them (stdlib only; the generator loads them, the session checks and
records them).

- LoRA: `<lora:NAME:WEIGHT>` in the prompt; NAME is a file's stem in the LoRA folder (searched with
  its subfolders): `NAME.safetensors` (kohya/A1111 or diffusers keys) or a diffusers folder
  `NAME/pytorch_lora_weights.safetensors`.
- Embedding: a file `WORD.safetensors|.pt|.bin` in the embeddings folder is used wherever WORD stands
  as a word of the prompt or the negative prompt (A1111's rule; case does not matter).
- VAE: `--vae NAME` (a path, or a file or folder name in the VAE folder).

Hashes (A1111 `modules/hashes.py`): a LoRA's is the `sshs_model_hash` its .safetensors metadata records
(kohya's trainer writes it; A1111's `NetworkOnDisk` takes it first), else the sha256 of a .safetensors
file's payload after its header (`addnet_hash_safetensors`), of the whole file otherwise, shown as its
first 12 hex digits; an embedding's is the sha256 of the whole file (12 hex); a VAE's is the sha256 of the
whole file (10 hex).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path

from ..line.prompt import PromptError, split_prompt
from ..line.safetext import quoted, shorten

LORA_SUFFIXES = (".safetensors",)
DIFFUSERS_LORA_FILE = "pytorch_lora_weights.safetensors"
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
VAE_SUFFIXES = (".safetensors", ".ckpt", ".pt")
MAX_FILES = 20_000      # files looked at in one folder tree


class ExtraError(ValueError):
    """A LoRA, embedding or VAE that cannot be found or read; str() is the one line for the user."""


@dataclass(frozen=True)
class Folders:
    loras: Path
    embeddings: Path
    vaes: Path

    @staticmethod
    def under(root: Path) -> "Folders":
        return Folders(root / "loras", root / "embeddings", root / "vae")


@dataclass(frozen=True)
class UsedLora:
    name: str
    path: Path
    weight: float


@dataclass(frozen=True)
class UsedEmbedding:
    name: str          # the word, as the file's stem
    path: Path


@dataclass(frozen=True)
class RecipeExtras:
    """What a line used beyond the model, with A1111's hashes, for the image's metadata."""

    loras: tuple[tuple[str, float, str], ...] = ()     # (name, weight, 12-hex hash)
    embeddings: tuple[tuple[str, str], ...] = ()       # (word, 12-hex hash)
    vae: tuple[str, str] | None = None                 # (file name, 10-hex hash or "" for a folder)


# ----- hashes (A1111's algorithms), cached per (path, size, mtime)

_cache: dict[tuple, str] = {}
_cache_lock = threading.Lock()


def _digest(path: Path, skip_header: bool) -> str:
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, skip_header)
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    h = hashlib.sha256()
    with open(path, "rb") as f:
        if skip_header:
            n = int.from_bytes(f.read(8), "little")
            f.seek(n + 8)
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    digest = h.hexdigest()
    with _cache_lock:
        _cache[key] = digest
    return digest


def sha256_file(path: Path) -> str:
    """sha256 of the whole file (A1111 `hashes.calculate_sha256`)."""
    return _digest(Path(path), skip_header=False)


def addnet_hash(path: Path) -> str:
    """sha256 of a .safetensors file after its 8-byte length and JSON header (A1111
    `hashes.addnet_hash_safetensors`, the kohya additional-networks hash)."""
    return _digest(Path(path), skip_header=True)


MAX_HEADER = 100 << 20      # a safetensors JSON header read for its metadata
_HEX = re.compile(r"[0-9a-fA-F]{12,64}")


def recorded_lora_hash(path: Path) -> str:
    """The `sshs_model_hash` a .safetensors file's `__metadata__` records, "" when none (or not hex)."""
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, "sshs")
    with _cache_lock:
        if key in _cache:
            return _cache[key]
    value = ""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        raw = f.read(n) if 2 < n <= MAX_HEADER else b""
    try:
        meta = json.loads(raw).get("__metadata__") if raw else None
    except (ValueError, AttributeError):
        meta = None
    recorded = meta.get("sshs_model_hash") if isinstance(meta, dict) else None
    if isinstance(recorded, str) and _HEX.fullmatch(recorded.strip()):
        value = recorded.strip()
    with _cache_lock:
        _cache[key] = value
    return value


def lora_hash(path: Path) -> str:
    """A1111's `Lora hashes` value (extensions-builtin/Lora/network.py `NetworkOnDisk`): 12 hex of the
    file's recorded `sshs_model_hash`, else of the addnet hash (.safetensors) or of the file's sha256."""
    path = Path(path)
    if path.is_dir():
        path = path / DIFFUSERS_LORA_FILE
    if path.suffix.lower() != ".safetensors":
        return sha256_file(path)[:12]
    return (recorded_lora_hash(path) or addnet_hash(path))[:12]


def embedding_hash(path: Path) -> str:
    """A1111's `TI hashes` value: 12 hex of the file's sha256."""
    return sha256_file(path)[:12]


def vae_hash(path: Path) -> str:
    """A1111's `VAE hash`: 10 hex of the file's sha256; "" for a diffusers folder (A1111 has none)."""
    return sha256_file(path)[:10] if Path(path).is_file() else ""


# ----- folders


def _scan(folder: Path, suffixes: tuple[str, ...], folder_marker: str | None = None) -> dict[str, Path]:
    """stem -> path for the files in folder and its subfolders (the first in sorted order wins)."""
    found: dict[str, Path] = {}
    if not folder.is_dir():
        return found
    seen = 0
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        if folder_marker and folder_marker in files and Path(root) != folder:
            found.setdefault(Path(root).name, Path(root))
            continue
        for name in sorted(files):
            seen += 1
            if seen > MAX_FILES:
                return found
            p = Path(root) / name
            if p.suffix.lower() in suffixes:
                found.setdefault(p.stem, p)
    return found


def _nearest(name: str, names) -> str:
    names = list(names)
    lowered = {n.lower(): n for n in names}
    if name.lower() in lowered:
        return lowered[name.lower()]
    near = difflib.get_close_matches(name[:80], names, n=1, cutoff=0.5)
    return near[0] if near else ""


def _missing(what: str, name: str, folder: Path, names, how: str) -> ExtraError:
    near = _nearest(name, names)
    if near:
        hint = f"; did you mean {quoted(near)}?"
    elif names:
        hint = f"; it has {shorten(', '.join(sorted(names)), 120)}"
    else:
        hint = " (it is empty or missing)" if not folder.is_dir() or not any(folder.iterdir()) else \
            " (no files it can use)"
    return ExtraError(f"no {what} {quoted(name)} in {shorten(str(folder), 120)}{hint} ({how})")


_WORD_EDGE = r"(?<![A-Za-z0-9_]){}(?![A-Za-z0-9_])"


class Library:
    """The LoRA, embedding and VAE folders of a session (rescanned on each lookup: files may come and go)."""

    def __init__(self, folders: Folders):
        self.folders = folders

    # LoRAs
    def loras(self) -> dict[str, Path]:
        return _scan(self.folders.loras, LORA_SUFFIXES, DIFFUSERS_LORA_FILE)

    def find_lora(self, name: str) -> Path:
        found = self.loras()
        if name in found:
            return found[name]
        raise _missing("LoRA", name, self.folders.loras, found,
                       "LoRAs are .safetensors files; set the folder with --lora_dir or 'loras:' in the models file")

    def used_loras(self, prompt: str) -> list[UsedLora]:
        """The prompt's LoRA tags with their files; ExtraError for a missing one, PromptError for a bad tag."""
        return [UsedLora(t.name, self.find_lora(t.name), t.weight) for t in split_prompt(prompt).loras]

    # embeddings
    def embeddings(self) -> dict[str, Path]:
        return _scan(self.folders.embeddings, EMBEDDING_SUFFIXES)

    def used_embeddings(self, prompt: str) -> list[UsedEmbedding]:
        """The embeddings whose word stands in the prompt or negative prompt (tags taken out first)."""
        found = self.embeddings()
        if not found:
            return []
        try:
            parts = split_prompt(prompt)
            text = " ".join([t for t, _ in parts.positive] + [parts.negative])
        except PromptError:
            text = prompt
        return [UsedEmbedding(word, path) for word, path in sorted(found.items())
                if re.search(_WORD_EDGE.format(re.escape(word)), text, re.I)]

    # VAEs
    def vaes(self) -> dict[str, Path]:
        return _scan(self.folders.vaes, VAE_SUFFIXES, "config.json")

    def find_vae(self, name: str) -> Path:
        """A VAE by path, by file name in the VAE folder, or by stem there."""
        path = Path(name).expanduser()
        if path.exists():
            return path
        found = self.vaes()
        for p in found.values():
            if p.name == name:
                return p
        if name in found:
            return found[name]
        raise _missing("VAE", name, self.folders.vaes, {p.name for p in found.values()},
                       "give a path, or a .safetensors file or diffusers folder in the VAE folder (--vae_dir)")

    # the recipe
    def recipe_extras(self, prompt: str, vae: str | None) -> RecipeExtras:
        loras = tuple((u.name, u.weight, lora_hash(u.path)) for u in self.used_loras(prompt))
        embeddings = tuple((u.name, embedding_hash(u.path)) for u in self.used_embeddings(prompt))
        vae_entry = None
        if vae:
            path = self.find_vae(vae)
            vae_entry = (path.name, vae_hash(path))
        return RecipeExtras(loras, embeddings, vae_entry)

    def check(self, prompt: str, vae: str | None) -> None:
        """Raise ExtraError for a LoRA or VAE the line names that is not there."""
        self.used_loras(prompt)
        if vae:
            self.find_vae(vae)
