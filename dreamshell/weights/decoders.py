"""Tiny decoders on disk (TAESD): the decoders folder, what `--decoder` names, and which one fits a model
(stdlib only; engines/decoders.py loads and runs them).

`--decoder` takes:
- `vae`: the model's own VAE (the default);
- `taesd`: the tiny decoder for the model's family found in the decoders folder (`--decoder_dir`, `decoders:`
  in the models file, default models/taesd), else in the installed one (the demo model's own is there);
  madebyollin's names win when several fit (taesd_decoder for SD 1.x/2.x, taesdxl_decoder for SDXL,
  taesd3_decoder, taef1_decoder), then a file whose name names one family only;
- a file or folder name in the decoders folder (file name or stem), or a path.

A tiny decoder for another family is refused in one line before the line runs. Live previews go through
the line's tiny decoder, else through one that fits the model when the decoders folder has one, else the
linear 4->3 projection (engines/preview.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..line.safetext import quoted, shorten
from .checkpoint import (
    FAMILIES,
    TINY_FILES,
    NotATinyDecoder,
    TinyDecoder,
    detect,
    detect_tiny_decoder,
    tiny_decoder_refusal,
    tiny_family,
)
from .errors import NotAModel
from .files import kind_of
from .library import ExtraError, Folders, _missing, _scan

DECODER_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin")
WORDS = ("taesd", "vae")
WHERE_TO_GET = ("madebyollin's taesd_decoder.safetensors (taesdxl_decoder for SDXL; "
                "https://github.com/madebyollin/taesd)")


class DecoderNotFound(ExtraError):
    """A --decoder that names nothing usable; str() is the one line for the user."""


# ----- what a model's latents are (from its files, without torch)

_FAMILY_CACHE: dict[tuple, tuple[str, int]] = {}


def _vae_factor(folder: Path) -> int:
    """Pixels per latent of a diffusers folder's VAE: 2 ** (its blocks - 1), as diffusers' pipelines compute it."""
    import json
    try:
        config = json.loads((folder / "vae" / "config.json").read_text(encoding="utf-8"))
        return 2 ** (len(config.get("block_out_channels") or (0, 0, 0, 0)) - 1)
    except (OSError, ValueError, TypeError, AttributeError):
        return 8


def model_latents(spec) -> tuple[str, int]:
    """(tiny-decoder family, pixels per latent) of a model spec: checkpoint.tiny_family's sd1, sdxl, sd3, flux or
    demo from its kind or its weights' header, the factor from a diffusers folder's VAE config (8 for a single
    file); cached by path and modification time."""
    path = Path(spec.weights)
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        stamp = 0
    key = (str(path), stamp, spec.kind)
    if key not in _FAMILY_CACHE:
        kind = spec.kind
        if not kind:
            try:
                kind = detect(path).kind or "sd1"
            except (NotAModel, OSError):
                kind = "sd1"
        factor = _vae_factor(path) if path.is_dir() else 8
        _FAMILY_CACHE[key] = (tiny_family(kind, factor), factor)
    return _FAMILY_CACHE[key]


def model_family(spec) -> str:
    return model_latents(spec)[0]


def refusal(found: TinyDecoder, family: str, factor: int) -> str | None:
    """One line when `found` cannot decode the latents of a model of this family and VAE factor, else None."""
    why = tiny_decoder_refusal(found, family)
    if why is None and found.factor != factor:
        why = (f"{found.path.name} makes {found.factor} pixels of each latent and this model's VAE {factor}: "
               "it is a tiny decoder for another model")
    return why


def family_name(family: str) -> str:
    return "the demo model" if family == "demo" else FAMILIES.get(family, family)


# ----- the decoders folder

_DETECT_CACHE: dict[tuple, TinyDecoder | None] = {}


def tiny_decoder_at(path: Path) -> TinyDecoder | None:
    """What a file or folder is as a tiny decoder (None: not one), cached by path and modification time."""
    try:
        stamp = path.stat().st_mtime_ns
    except OSError:
        return None
    key = (str(path), stamp)
    if key not in _DETECT_CACHE:
        try:
            _DETECT_CACHE[key] = detect_tiny_decoder(path)
        except (NotAModel, OSError):
            _DETECT_CACHE[key] = None
    return _DETECT_CACHE[key]


def decoders_in(folder: Path | None) -> dict[str, Path]:
    """stem -> path of the files and AutoencoderTiny folders in a decoders folder (and its subfolders)."""
    return _scan(folder, DECODER_SUFFIXES, "config.json") if folder is not None else {}


def installed_folder() -> Path:
    from .models import builtin_models_dir
    return builtin_models_dir() / "taesd"


def search_folders(folders: Folders) -> list[Path]:
    """The decoders folder, then the installed one (the demo model's tiny decoder), each once."""
    out = [f for f in (folders.decoders, installed_folder()) if f is not None]
    return [f for i, f in enumerate(out) if f not in out[:i]]


def _rank(found: TinyDecoder, family: str) -> tuple:
    stem = found.path.name.lower().split(".")[0]
    conventional = TINY_FILES.get(family, "")
    return (len(found.families) != 1,                                  # a name that names the family wins
            not (stem == conventional or stem.startswith(conventional + "_")),   # madebyollin's name
            found.has_encoder and found.layout != "diffusers folder",    # a decoder file over a whole autoencoder
            found.path.name)


def tiny_for(spec, folders: Folders) -> Path | None:
    """The tiny decoder that fits spec's model (see the module's rule), or None."""
    family, factor = model_latents(spec)
    for folder in search_folders(folders):
        fits = [f for f in (tiny_decoder_at(p) for p in decoders_in(folder).values())
                if f is not None and refusal(f, family, factor) is None]
        if fits:
            return min(fits, key=lambda f: _rank(f, family)).path
    return None


def find_decoder(name: str, folders: Folders) -> Path:
    """A decoder named by path, or by file name or stem in the decoders folder; DecoderNotFound with the
    nearest name otherwise."""
    path = Path(name).expanduser()
    kind = kind_of(path)
    if kind in ("file", "folder"):
        return path
    if kind == "other":
        raise DecoderNotFound(f"--decoder {quoted(name)} is not a regular file or a folder")
    folder = folders.decoders or installed_folder()
    found = decoders_in(folder)
    for p in found.values():
        if p.name == name:
            return p
    if name in found:
        return found[name]
    raise DecoderNotFound(str(_missing("tiny decoder", name, folder, {p.name for p in found.values()} | set(WORDS),
                                       "--decoder takes taesd, vae, a TAESD file or folder in the decoders folder "
                                       "(--decoder_dir), or a path")))


def check_decoder(path: Path, spec) -> TinyDecoder:
    """`path` as a tiny decoder for spec's model; DecoderNotFound in one line when it is not one or is for
    another family."""
    try:
        found = detect_tiny_decoder(path)
    except NotATinyDecoder as e:
        raise DecoderNotFound(f"--decoder: {e}") from None
    except (NotAModel, OSError) as e:
        raise DecoderNotFound(f"--decoder {shorten(str(path), 120)}: {e}") from None
    why = refusal(found, *model_latents(spec))
    if why:
        raise DecoderNotFound(f"--decoder: {why}")
    return found


@dataclass(frozen=True)
class LineDecoders:
    decoder: Path | None      # the images' tiny decoder (None: the VAE)
    preview: Path | None      # the previews' tiny decoder (None: the linear projection)


def line_decoders(name: str | None, spec, folders: Folders) -> LineDecoders:
    """What decodes a line's images and its previews on spec's model, for `--decoder name` (None: the VAE)."""
    if not name or name == "vae":
        return LineDecoders(None, tiny_for(spec, folders))
    if name == "taesd":
        path = tiny_for(spec, folders)
        if path is None:
            family = model_family(spec)
            where = " or ".join(shorten(str(f), 100) for f in search_folders(folders))
            if family == "demo":
                raise DecoderNotFound(f"--decoder taesd: no tiny decoder for the demo model in {where} (it is "
                                      "installed with dreamshell as models/taesd/demo-taesd)")
            raise DecoderNotFound(f"--decoder taesd: no tiny decoder for {family_name(family)} in {where}; put "
                                  f"{WHERE_TO_GET} there, or give --decoder a path")
        return LineDecoders(path, path)
    path = find_decoder(name, folders)
    check_decoder(path, spec)
    return LineDecoders(path, path)


def clear_caches() -> None:
    _FAMILY_CACHE.clear()
    _DETECT_CACHE.clear()


__all__ = ["DecoderNotFound", "LineDecoders", "check_decoder", "clear_caches", "decoders_in", "find_decoder",
           "line_decoders", "model_family", "model_latents", "refusal", "tiny_decoder_at", "tiny_for"]
