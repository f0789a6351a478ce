"""The models file -> model specs (no torch); in the spirit of InvokeAI 2.x's configs/models.yaml.

models.yaml maps a name to weights (a diffusers folder or one .safetensors/.ckpt file), an optional
kind (read from the weights when left out: checkpoint.py), a description, defaults, a `vae` and a
`clip_skip`. Reserved keys: `upscalers` maps factors to Real-ESRGAN weight files; `loras`,
`embeddings` and `vaes` name those folders (default: the shipped models folder's loras/, embeddings/,
vae/). With no models file, the built-in demo model is the default.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..line.errors import UserError
from ..line.rng import DEFAULT_RNG, find_rng, rng_names
from ..line.safetext import quoted, shorten
from .checkpoint import KINDS, NotAModel, detect
from .library import Folders

DEFAULT_SIZES = {"sd1": 512, "sd2": 768, "sdxl": 1024}
PREDICTIONS = ("v", "epsilon")
DEMO_NAME = "demo"
PACKAGE_ROOT = Path(__file__).resolve().parent.parent   # dreamshell/


class ModelsFileError(UserError):
    """A models file that cannot be used; str() names the file, the entry and the rule."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    weights: Path
    kind: str = "sd1"            # one of checkpoint.KINDS; "" = not known until the weights are read
    description: str = ""
    width: int = 512
    height: int = 512
    steps: int = 30
    cfg_scale: float = 7.5
    sampler: str = "k_lms"
    default: bool = False
    config: Path | None = None   # diffusers config folder for a single file (default: the shipped one)
    prediction: str | None = None  # "v" or "epsilon" where the weights cannot tell (SD 2.x)
    vae: str | None = None       # a VAE to use instead of the weights' own (a path, or a name in the VAE folder)
    clip_skip: int = 1           # A1111's numbering: 1 = off
    rng: str = DEFAULT_RNG       # noise source of its lines (line/rng.py): cpu, gpu or nv

    @property
    def is_single_file(self) -> bool:
        return self.weights.suffix.lower() in (".safetensors", ".ckpt", ".pt", ".bin", ".pth")


@dataclass(frozen=True)
class Registry:
    models: dict[str, ModelSpec]
    upscalers: dict[str, Path] = field(default_factory=dict)
    source: Path | None = None
    folders: Folders = field(default_factory=lambda: Folders.under(builtin_models_dir()))

    @property
    def default(self) -> ModelSpec:
        for spec in self.models.values():
            if spec.default:
                return spec
        return next(iter(self.models.values()))

    def get(self, name_or_path: str) -> ModelSpec:
        """A model by name, or an ad-hoc spec for a path to a diffusers folder or weights file."""
        if name_or_path in self.models:
            return self.models[name_or_path]
        path = Path(name_or_path).expanduser()
        if path.exists():
            spec = spec_for_path(path, name=name_or_path)  # named by the path, so its log lines replay
            self.models[name_or_path] = spec
            return spec
        names = ", ".join(self.models)
        raise ModelsFileError(f"no model {quoted(name_or_path)}: use a name ({shorten(names, 200)}) or a path to a "
                              "diffusers folder or a .safetensors/.ckpt file")


def builtin_models_dir() -> Path:
    """The shipped models folder: ../models beside a source checkout, else the installed data files."""
    env = os.environ.get("DREAMSHELL_BUILTIN_MODELS")
    candidates = [Path(env)] if env else []
    candidates += [PACKAGE_ROOT.parent / "models", Path(sys.prefix) / "share" / "dreamshell" / "models"]
    for c in candidates:
        if (c / DEMO_NAME / "model_index.json").exists():
            return c
    return candidates[-1]


def demo_spec() -> ModelSpec:
    return ModelSpec(DEMO_NAME, builtin_models_dir() / DEMO_NAME, "sd1",
                     "built-in demo: coloured shapes on coloured backgrounds, 64x64",
                     width=64, height=64, steps=20, cfg_scale=5.0, sampler="k_euler", default=True)


def default_size(kind: str, prediction: str | None = None) -> int:
    """The native size of a kind: 512 for SD 1.x and SD 2.x base/inpainting, 768 for 2.x v, 1024 for XL."""
    family = (kind or "sd1").split("-")[0]
    if family == "sd2" and (kind == "sd2-inpaint" or prediction == "epsilon"):
        return 512
    return DEFAULT_SIZES.get(family, 512)


def detect_kind(path: Path, what: str):
    """The detected kind of weights at path; a ModelsFileError line when they are not a model."""
    try:
        return detect(path)
    except NotAModel as e:
        raise ModelsFileError(f"{what}: {path} is {e}" if not str(e).startswith(str(path)) else f"{what}: {e}") \
            from None
    except OSError as e:
        raise ModelsFileError(f"{what}: cannot read {path} ({e.strerror or e})") from None


def spec_for_path(path: Path, name: str | None = None) -> ModelSpec:
    """A spec for weights given by path, its kind read from the weights (not guessed from the size)."""
    found = detect_kind(path, f"--model {name or path}")
    kind = found.kind or ""
    size = default_size(kind, found.prediction)
    return ModelSpec(name or str(path), path, kind, f"weights at {path} ({found.label})",
                     width=size, height=size, prediction=found.prediction)


def _spec_from_entry(name: str, entry: dict, base: Path, source: Path) -> ModelSpec:
    src, shown = shorten(str(source), 120), quoted(name)  # as messages show them
    if not isinstance(entry, dict):
        raise ModelsFileError(f"{src}: entry {shown} must be a mapping with at least 'weights'")
    weights = entry.get("weights")
    if not weights:
        raise ModelsFileError(f"{src}: model {shown} has no 'weights' (a diffusers folder or a file)")
    kind = str(entry.get("kind", ""))
    if kind and kind not in KINDS:
        raise ModelsFileError(f"{src}: model {shown} has kind {quoted(kind)}; kinds are {', '.join(KINDS)} "
                              "(or leave 'kind' out: it is read from the weights)")
    prediction = entry.get("prediction")
    if prediction is not None and prediction not in PREDICTIONS:
        raise ModelsFileError(f"{src}: model {shown} has prediction {quoted(str(prediction))}; use v or epsilon")
    if weights == "builtin:demo":
        path = builtin_models_dir() / DEMO_NAME
    else:
        path = Path(os.path.expanduser(str(weights)))
        path = path if path.is_absolute() else base / path
    if not kind and path.exists():
        found = detect_kind(path, f"{src}: model {shown}")
        kind, prediction = found.kind or "", prediction or found.prediction
    size = default_size(kind, prediction)
    known = {"weights", "kind", "description", "width", "height", "steps", "cfg", "cfg_scale", "sampler",
             "default", "config", "prediction", "vae", "clip_skip", "rng"}
    unknown = set(entry) - known
    if unknown:
        raise ModelsFileError(f"{src}: model {shown} has unknown keys {shorten(str(sorted(unknown)), 100)}; "
                              f"known: {', '.join(sorted(known))}")
    vae = entry.get("vae")
    if vae is not None:
        vae = str(vae)
        local = Path(os.path.expanduser(vae))
        local = local if local.is_absolute() else base / local
        vae = str(local) if local.exists() else vae   # else a name in the VAE folder, looked up when used
    clip_skip = entry.get("clip_skip", 1)
    if not isinstance(clip_skip, int) or isinstance(clip_skip, bool) or not 1 <= clip_skip <= 12:
        raise ModelsFileError(f"{src}: model {shown} has clip_skip {quoted(str(clip_skip))}; it is a whole number "
                              "from 1 (off) to 12, A1111's numbering")
    rng = find_rng(str(entry.get("rng", DEFAULT_RNG)))
    if rng is None:
        raise ModelsFileError(f"{src}: model {shown} has rng {quoted(str(entry.get('rng')))}; use one of "
                              f"{', '.join(rng_names())} (the noise source of its lines)")
    try:
        return ModelSpec(name, path, kind, str(entry.get("description", "")),
                         width=int(entry.get("width", size)), height=int(entry.get("height", size)),
                         steps=int(entry.get("steps", 30)),
                         cfg_scale=float(entry.get("cfg_scale", entry.get("cfg", 7.5))),
                         sampler=str(entry.get("sampler", "k_lms")), default=bool(entry.get("default", False)),
                         config=(base / str(entry["config"])) if entry.get("config") else None,
                         prediction=prediction, vae=vae, clip_skip=clip_skip, rng=rng)
    except (TypeError, ValueError) as e:
        raise ModelsFileError(f"{src}: model {shown}: {shorten(str(e), 100)}") from None


MAX_MODELS_FILE_BYTES = 1024 * 1024
FOLDER_KEYS = {"loras": "loras", "embeddings": "embeddings", "vaes": "vaes"}   # top-level keys: folders


def _read_yaml(path: Path):
    """The models file's data: plain YAML only (safe_load: no Python tags), a small regular text file."""
    import yaml  # pyyaml; only here, so the parser stays light

    label = shorten(str(path), 120)
    if not path.is_file():
        raise ModelsFileError(f"{label} is not a regular file; give a models.yaml text file")
    if path.stat().st_size > MAX_MODELS_FILE_BYTES:
        raise ModelsFileError(f"{label} is {path.stat().st_size} bytes; a models file is at most 1 MB")
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise ModelsFileError(f"{label} is not UTF-8 text; a models file is plain YAML") from None
    except OSError as e:
        raise ModelsFileError(f"{label}: cannot be read ({e.strerror or e})") from None
    try:
        return yaml.safe_load(text) or {}
    except yaml.constructor.ConstructorError as e:
        tag = (e.problem or "").rsplit(" ", 1)[-1]
        raise ModelsFileError(f"{label}: the tag {shorten(tag, 80)}{_at(e)} is not allowed; a models file is "
                              "plain YAML (names, paths, numbers), never Python objects") from None
    except yaml.YAMLError as e:
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ModelsFileError(f"{label}: not valid YAML ({shorten(what, 100)}{_at(e)})") from None


def _at(error) -> str:
    mark = getattr(error, "problem_mark", None)
    return f" at line {mark.line + 1}" if mark is not None else ""


def load_registry(path: Path | None) -> Registry:
    """Read a models file; with none (or a missing default file) the demo model is the registry."""
    models: dict[str, ModelSpec] = {}
    upscalers: dict[str, Path] = {}
    folders = Folders.under(builtin_models_dir())
    if path is not None and path.exists():
        data = _read_yaml(path)
        if not isinstance(data, dict):
            raise ModelsFileError(f"{shorten(str(path), 120)}: expected 'name: {{weights: ...}}' entries")
        base = path.parent
        for name, entry in data.items():
            if name == "upscalers":
                if not isinstance(entry or {}, dict):
                    raise ModelsFileError(f"{shorten(str(path), 120)}: 'upscalers' maps factors to weight files "
                                          "(4: RealESRGAN_x4plus.pth)")
                for factor, weights in (entry or {}).items():
                    p = Path(os.path.expanduser(str(weights)))
                    upscalers[str(factor)] = p if p.is_absolute() else base / p
                continue
            if name in FOLDER_KEYS:
                if not isinstance(entry, str) or not entry.strip():
                    raise ModelsFileError(f"{shorten(str(path), 120)}: '{name}' is a folder path ({name}: my/{name})")
                p = Path(os.path.expanduser(entry))
                folders = replace(folders, **{FOLDER_KEYS[name]: p if p.is_absolute() else base / p})
                continue
            models[str(name)] = _spec_from_entry(str(name), entry, base, path)
    if not models:
        models[DEMO_NAME] = demo_spec()
    original = Path("models/ldm/stable-diffusion-v1/model.ckpt")   # where lstein/stable-diffusion kept it
    if original.exists() and not any(s.weights.resolve() == original.resolve() for s in models.values()):
        models["stable-diffusion-1.4"] = ModelSpec("stable-diffusion-1.4", original.resolve(), "sd1",
                                                   "the original shell's checkpoint path")
    return Registry(models, upscalers, path if path is not None and path.exists() else None, folders)


def with_folders(registry: Registry, loras=None, embeddings=None, vaes=None) -> Registry:
    """The registry with the LoRA, embedding and VAE folders the launch switches name (over the models file's)."""
    changes = {field: Path(value).expanduser() for field, value in
               (("loras", loras), ("embeddings", embeddings), ("vaes", vaes)) if value}
    return replace(registry, folders=replace(registry.folders, **changes)) if changes else registry
