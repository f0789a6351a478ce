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
import os
import re
from dataclasses import dataclass
from pathlib import Path

from ..line.errors import UserError
from ..line.prompt import PromptError, split_prompt
from ..line.safetext import quoted, shorten
from .errors import NotAModel
from .files import kind_of
from .hashing import sha256_of
from .safetensors import read_header

LORA_SUFFIXES = (".safetensors",)
DIFFUSERS_LORA_FILE = "pytorch_lora_weights.safetensors"
EMBEDDING_SUFFIXES = (".safetensors", ".pt", ".bin")
VAE_SUFFIXES = (".safetensors", ".ckpt", ".pt")
CONTROL_SUFFIXES = (".safetensors", ".pth", ".ckpt", ".pt", ".bin")
CONTROL_FOLDER_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.fp16.safetensors",
                          "diffusion_pytorch_model.bin")
MAX_FILES = 20_000      # files looked at in one folder tree


class ExtraError(UserError):
    """A LoRA, embedding or VAE that cannot be found or read; str() is the one line for the user."""


@dataclass(frozen=True)
class Folders:
    loras: Path
    embeddings: Path
    vaes: Path
    controlnets: Path | None = None   # ControlNets and T2I-Adapters (None: none)
    decoders: Path | None = None    # tiny decoders (TAESD) for --decoder; None: none

    @staticmethod
    def under(root: Path) -> "Folders":
        return Folders(root / "loras", root / "embeddings", root / "vae", root / "controlnets", root / "taesd")


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
class UsedControl:
    """A ControlNet or T2I-Adapter a line's --control names, found in the controlnets folder."""

    name: str          # the file's stem (or the folder's name)
    path: Path
    kind: str          # "controlnet" or "t2i-adapter"
    family: str        # "sd1", "sd2", "sdxl": the models it guides
    layout: str        # "original" or "diffusers"


@dataclass(frozen=True)
class RecipeExtras:
    """What a line used beyond the model, with A1111's hashes, for the image's metadata."""

    loras: tuple[tuple[str, float, str], ...] = ()     # (name, weight, 12-hex hash)
    embeddings: tuple[tuple[str, str], ...] = ()       # (word, 12-hex hash)
    vae: tuple[str, str] | None = None                 # (file name, 10-hex hash or "" for a folder)
    controls: tuple[tuple[str, str], ...] = ()         # (name, 8-hex A1111 ControlNet hash), one per --control
    sha256: tuple[tuple[str, str, str], ...] = ()      # (kind, name, start of the file's sha256) CivitAI records:
                                                       # kind lora, embedding, vae or checkpoint (name "" for the
                                                       # vae and checkpoint)


# ----- hashes (A1111's algorithms; computed once and cached by hashing.py)


def sha256_file(path: Path) -> str:
    """sha256 of the whole file (A1111 `hashes.calculate_sha256`)."""
    return sha256_of(Path(path))


def addnet_hash(path: Path) -> str:
    """sha256 of a .safetensors file after its 8-byte length and JSON header (A1111
    `hashes.addnet_hash_safetensors`, the kohya additional-networks hash)."""
    return sha256_of(Path(path), skip_header=True)


_HEX = re.compile(r"[0-9a-fA-F]{12,64}")


def recorded_lora_hash(path: Path) -> str:
    """The `sshs_model_hash` a .safetensors file's `__metadata__` records, "" when none (or not hex)."""
    try:
        recorded = read_header(path).metadata.get("sshs_model_hash", "")
    except (NotAModel, OSError):
        return ""
    return recorded.strip() if _HEX.fullmatch(recorded.strip()) else ""


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


def control_hash(path: Path) -> str:
    """A1111's ControlNet extension's `Model: NAME [hash]` (sd-webui-controlnet and Forge's
    `lib_controlnet/global_state.py` with `sd_models.model_hash`): 8 hex of the sha256 of the 64 KiB at
    1 MiB into the file; a diffusers folder by its weights file."""
    import hashlib
    path = Path(path)
    if path.is_dir():
        path = next((path / n for n in CONTROL_FOLDER_WEIGHTS if (path / n).is_file()),
                    path / CONTROL_FOLDER_WEIGHTS[0])
    try:
        with open(path, "rb") as f:
            f.seek(0x100000)
            return hashlib.sha256(f.read(0x10000)).hexdigest()[:8]
    except OSError:
        return ""


def vae_hash(path: Path) -> str:
    """A1111's `VAE hash`: 10 hex of the file's sha256; "" for a diffusers folder (A1111 has none)."""
    return sha256_file(path)[:10] if Path(path).is_file() else ""


# ----- folders


def _scan(folder: Path, suffixes: tuple[str, ...], folder_marker: str | None = None) -> dict[str, Path]:
    """stem -> path for the regular files in folder and its subfolders (the first in sorted order wins).
    FIFOs, devices and links to them are left out: reading one would block or never end."""
    found: dict[str, Path] = {}
    if kind_of(folder) != "folder":
        return found
    seen = 0
    for root, dirs, files in os.walk(folder, followlinks=True):
        dirs.sort()
        if folder_marker and folder_marker in files and Path(root) != folder:
            if (Path(root) / folder_marker).is_file():
                found.setdefault(Path(root).name, Path(root))
            continue
        for name in sorted(files):
            seen += 1
            if seen > MAX_FILES:
                return found
            p = Path(root) / name
            if p.suffix.lower() in suffixes and p.is_file():
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
        hint = " (it is empty or missing)" if kind_of(folder) != "folder" or not any(folder.iterdir()) else \
            " (no files it can use)"
    return ExtraError(f"no {what} {quoted(name)} in {shorten(str(folder), 120)}{hint} ({how})")


@dataclass(frozen=True)
class LineFiles:
    """The LoRA, embedding and VAE files one line uses, found once when the line is planned; the engine
    loads these paths and the recipe records their hashes (nothing is looked up again). `decoder` is the tiny
    decoder the images are decoded with (None: the VAE); `preview` the one live previews go through (the line's,
    else one for the model in the decoders folder; None: the linear projection). weights/decoders.py finds them."""

    loras: tuple[UsedLora, ...] = ()
    embeddings: tuple[UsedEmbedding, ...] = ()
    vae: Path | None = None
    controls: tuple[UsedControl, ...] = ()   # one per --control, in the line's order
    decoder: Path | None = None
    preview: Path | None = None

    def recipe(self) -> RecipeExtras:
        """The files with A1111's hashes, for the image's metadata (each file hashed once, then cached)."""
        return RecipeExtras(tuple((u.name, u.weight, lora_hash(u.path)) for u in self.loras),
                            tuple((u.name, embedding_hash(u.path)) for u in self.embeddings),
                            (self.vae.name, vae_hash(self.vae)) if self.vae is not None else None,
                            tuple((u.name, control_hash(u.path)) for u in self.controls))


# textual-inversion embeddings that recipes on CivitAI name most (negative embeddings above all): a word
# that is one of these but has no file in the embeddings folder is read as plain text, which users rarely mean
WELL_KNOWN_EMBEDDINGS = frozenset(name.lower() for name in (
    "EasyNegative", "EasyNegativeV2", "badhandv4", "bad-hands-5", "bad_prompt", "bad_prompt_version2",
    "ng_deepnegative_v1_75t", "negative_hand-neg", "verybadimagenegative_v1.3", "FastNegativeV2", "BadDream",
    "UnrealisticDream", "bad-artist", "bad-artist-anime", "bad-image-v2-39000", "bad-picture-chill-75v",
    "By bad artist -neg", "CyberRealistic_Negative", "epiCNegative", "negativeXL_D", "unaestheticXL_v31",
    "ac_neg1", "ac_neg2", "BadNegAnatomyV1-neg", "deepnegative", "realisticvision-negative-embedding"))


_WORD_EDGE = r"(?<![A-Za-z0-9_]){}(?![A-Za-z0-9_])"


class Library:
    """The LoRA, embedding and VAE folders of a session (rescanned on each lookup: files may come and go)."""

    def __init__(self, folders: Folders):
        self.folders = folders

    # LoRAs
    def loras(self) -> dict[str, Path]:
        return _scan(self.folders.loras, LORA_SUFFIXES, DIFFUSERS_LORA_FILE)

    def find_lora(self, name: str) -> Path:
        return self._lora_in(self.loras(), name)

    def used_loras(self, prompt: str) -> list[UsedLora]:
        """The prompt's LoRA tags with their files; ExtraError for a missing one, PromptError for a bad tag."""
        tags = split_prompt(prompt).loras
        if not tags:
            return []
        found = self.loras()
        return [UsedLora(t.name, self._lora_in(found, t.name), t.weight) for t in tags]

    def _lora_in(self, found: dict[str, Path], name: str) -> Path:
        if name in found:
            return found[name]
        raise _missing("LoRA", name, self.folders.loras, found,
                       "LoRAs are .safetensors files; set the folder with --lora_dir or 'loras:' in the models file")

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

    def missing_embedding_notes(self, prompt: str, used: tuple[UsedEmbedding, ...]) -> list[str]:
        """Notes for words of the prompt that are well-known embedding names with no file here."""
        have = {u.name.lower() for u in used}
        try:
            parts = split_prompt(prompt)
            text = " ".join([t for t, _ in parts.positive] + [parts.negative])
        except PromptError:
            text = prompt
        words = {w.lower(): w for w in re.findall(r"[A-Za-z0-9_.\-]+", text)}
        return [f"note: {quoted(shown)} looks like a textual-inversion embedding, but the embeddings folder "
                f"({shorten(str(self.folders.embeddings), 80)}) has no such file: it is read as plain text"
                for word, shown in sorted(words.items()) if word in WELL_KNOWN_EMBEDDINGS and word not in have]

    # VAEs
    def vaes(self) -> dict[str, Path]:
        return _scan(self.folders.vaes, VAE_SUFFIXES, "config.json")

    def find_vae(self, name: str) -> Path:
        """A VAE by path, by file name in the VAE folder, or by stem there (a regular file or a folder)."""
        path = Path(name).expanduser()
        kind = kind_of(path)
        if kind in ("file", "folder"):
            return path
        if kind == "other":
            raise ExtraError(f"--vae {quoted(name)} is not a regular file or a folder (a FIFO or a device "
                             "cannot be read as weights)")
        found = self.vaes()
        for p in found.values():
            if p.name == name:
                return p
        if name in found:
            return found[name]
        raise _missing("VAE", name, self.folders.vaes, {p.name for p in found.values()},
                       "give a path, or a .safetensors file or diffusers folder in the VAE folder (--vae_dir)")

    # ControlNets and T2I-Adapters
    def controlnets(self) -> dict[str, Path]:
        folder = self.folders.controlnets
        return _scan(folder, CONTROL_SUFFIXES, "config.json") if folder is not None else {}

    def find_control(self, name: str, found: dict[str, Path] | None = None) -> UsedControl:
        """A ControlNet by its name in the controlnets folder: the exact stem, the same in another case, or
        the one name that holds it (`canny` -> control_v11p_sd15_canny); what it is from its keys."""
        from .checkpoint import detect_control
        found = self.controlnets() if found is None else found
        lowered = {n.lower(): n for n in found}
        holding = [n for n in found if name.lower() in n.lower()]
        stem = name if name in found else lowered.get(name.lower()) or (holding[0] if len(holding) == 1 else None)
        if stem is None:
            folder = self.folders.controlnets or Path("controlnets")
            if len(holding) > 1:
                raise ExtraError(f"--control {quoted(name)} names {len(holding)} models in {shorten(str(folder), 80)}: "
                                 f"{shorten(', '.join(sorted(holding)), 120)}; give the whole name")
            raise _missing("ControlNet", name, folder, found, "ControlNets are .safetensors/.pth files or diffusers "
                           "folders; set the folder with --controlnet_dir or 'controlnets:' in the models file")
        path = found[stem]
        try:
            what = detect_control(path)
        except NotAModel as e:
            text = str(e)
            raise ExtraError(f"--control {stem}: " + (text if text.startswith(str(path)) else f"{path} is {text}")) \
                from None
        except OSError as e:
            raise ExtraError(f"--control {stem}: cannot read {path} ({e.strerror or e})") from None
        return UsedControl(stem, path, what.kind, what.family, what.layout)

    def used_controls(self, specs) -> tuple[UsedControl, ...]:
        """The files of a line's --control values (the folder scanned once)."""
        if not specs:
            return ()
        found = self.controlnets()
        return tuple(self.find_control(spec.model, found) for spec in specs)

    # a line's files
    def files_for(self, prompt: str, vae: str | None, controls=()) -> LineFiles:
        """The files a line uses, each folder scanned once; ExtraError for a LoRA, VAE or ControlNet that is not
        there."""
        return LineFiles(tuple(self.used_loras(prompt)), tuple(self.used_embeddings(prompt)),
                         self.find_vae(vae) if vae else None, self.used_controls(controls))

    def recipe_extras(self, prompt: str, vae: str | None) -> RecipeExtras:
        return self.files_for(prompt, vae).recipe()
