"""The models file -> model specs (no torch); in the spirit of InvokeAI 2.x's configs/models.yaml.

models.yaml maps a name to weights (a diffusers folder or one .safetensors/.ckpt file), an optional
kind (read from the weights when left out: checkpoint.py), a description, defaults, a `vae` and a
`clip_skip`; for SD 3 and FLUX.1 the encoder files kept apart (`clip_l`, `clip_g`, `t5xxl`, and
`t5_tokenizer` for a T5 tokenizer folder of the user's own), for SDXL finetunes `prediction` and `zero_snr`. Reserved keys: `upscalers` maps factors to Real-ESRGAN weight files; `loras`,
`embeddings` and `vaes` name those folders (default: the shipped models folder's loras/, embeddings/,
vae/). With no models file, the built-in demo model is the default.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..line.errors import UserError
from ..line.safetext import quoted, shorten
from .checkpoint import (
    KINDS,
    PART_NAMES,
    NotAModel,
    detect,
    detect_part,
    family_of,
    part_fits,
)
from .library import Folders

DEFAULT_SIZES = {"sd1": 512, "sd2": 768, "sdxl": 1024, "sd3": 1024, "flux": 1024}
# steps, CFG and sampler a kind runs with when the models file names none (the model makers' own
# recommendations: Stability's SD 3.5 cards, BFL's FLUX.1 cards, Playground's v2.5 card; Forge's FLUX.1
# defaults: CFG 1 with the distilled guidance doing the work)
KIND_DEFAULTS = {
    "sd1": (30, 7.5, "k_lms"), "sd2": (30, 7.5, "k_lms"), "sdxl": (30, 7.5, "k_lms"),
    "sdxl-playground": (50, 3.0, "k_dpmpp_2"),
    "sd3-medium": (28, 7.0, "k_euler"), "sd35-medium": (40, 4.5, "k_euler"), "sd35-large": (28, 3.5, "k_euler"),
    "sd35-large-turbo": (4, 1.0, "k_euler"),
    "flux-dev": (20, 1.0, "k_euler"), "flux-schnell": (4, 1.0, "k_euler"),
}
SEPARATE_PARTS = ("clip_l", "clip_g", "t5xxl")   # models-file keys naming encoder files (vae: as before)
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
    zero_snr: bool = False       # zero-terminal-SNR schedule (the weights' `ztsnr` key or `zero_snr: true`)
    clip_l: Path | None = None   # encoder files kept apart from the weights (SD 3 / FLUX.1)
    clip_g: Path | None = None
    t5xxl: Path | None = None
    t5_tokenizer: Path | None = None   # a T5 tokenizer folder instead of the shipped one

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


def kind_defaults(kind: str) -> tuple[int, float, str]:
    """(steps, cfg, sampler) for a kind: its own, else its family's, else SD 1.x's."""
    kind = kind or "sd1"
    return KIND_DEFAULTS.get(kind) or KIND_DEFAULTS.get(family_of(kind)) or KIND_DEFAULTS["sd1"]


def default_size(kind: str, prediction: str | None = None) -> int:
    """The native size of a kind: 512 for SD 1.x and SD 2.x base/inpainting, 768 for 2.x v, 1024 for XL,
    SD 3 and FLUX.1."""
    family = family_of(kind or "sd1")
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
    steps, cfg, sampler = kind_defaults(kind)
    sampler = "k_euler" if found.zero_snr else sampler   # LMS cannot rescale to zero terminal SNR in diffusers
    return ModelSpec(name or str(path), path, kind, describe_found(found, path),
                     width=size, height=size, steps=steps, cfg_scale=cfg, sampler=sampler,
                     prediction=found.prediction, zero_snr=found.zero_snr)


def describe_found(found, path: Path | None = None) -> str:
    """What `!models` says of detected weights: the kind, the ModelSpec title and architecture, the
    schedule markers and the parts inside."""
    what = [found.label]
    if found.prediction == "v":
        what.append("v-prediction")
    if found.zero_snr:
        what.append("zero terminal SNR")
    if found.quantization:
        what.append(f"GGUF {found.quantization}")
    if found.bundled:
        what.append("with " + ", ".join(found.bundled))
    text = f"weights at {path} ({'; '.join(what)})" if path is not None else "; ".join(what)
    if found.title or found.architecture:
        text += " - " + " / ".join(x for x in (found.title, found.architecture) if x)
    return text


def _part_path(src: str, shown: str, key: str, value, base: Path) -> Path:
    """An encoder file named in the models file: it must be that part when it exists (checked from its
    header), and is looked for again when the model is loaded when it does not yet."""
    if not isinstance(value, str) or not value.strip():
        raise ModelsFileError(f"{src}: model {shown} has {key} {quoted(str(value))}; give the path of a "
                              f"{PART_NAMES[key]} file")
    path = Path(os.path.expanduser(value))
    path = path if path.is_absolute() else base / path
    if path.is_file():
        try:
            part = detect_part(path)
        except NotAModel as e:
            raise ModelsFileError(f"{src}: model {shown}: {key} {path} is {e}") from None
        except OSError as e:
            raise ModelsFileError(f"{src}: model {shown}: cannot read {key} {path} ({e.strerror or e})") from None
        if not part_fits(part.part, key):
            raise ModelsFileError(f"{src}: model {shown}: {key} {path} is {part.note}; name it as "
                                  f"'{part.part}:'")
    return path


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
    zero_snr = entry.get("zero_snr", None)
    if zero_snr is not None and not isinstance(zero_snr, bool):
        raise ModelsFileError(f"{src}: model {shown} has zero_snr {quoted(str(zero_snr))}; use true or false")
    found = None
    if not kind and path.exists():
        found = detect_kind(path, f"{src}: model {shown}")
        kind, prediction = found.kind or "", prediction or found.prediction
        zero_snr = found.zero_snr if zero_snr is None else zero_snr
    size = default_size(kind, prediction)
    steps, cfg, sampler = kind_defaults(kind)
    sampler = "k_euler" if zero_snr else sampler   # LMS cannot rescale to zero terminal SNR in diffusers
    known = {"weights", "kind", "description", "width", "height", "steps", "cfg", "cfg_scale", "sampler",
             "default", "config", "prediction", "vae", "clip_skip", "zero_snr", "t5_tokenizer", *SEPARATE_PARTS}
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
    parts = {key: _part_path(src, shown, key, entry[key], base) for key in SEPARATE_PARTS if key in entry}
    family = family_of(kind) if kind else ""
    if parts and family not in ("sd3", "flux", ""):
        raise ModelsFileError(f"{src}: model {shown} is {kind}: {', '.join(parts)} name encoder files for SD 3 "
                              "and FLUX.1 models, whose weights may come without them")
    if family == "flux" and "clip_g" in parts:
        raise ModelsFileError(f"{src}: model {shown} is FLUX.1, which has no CLIP-G encoder: drop 'clip_g'")
    if zero_snr and family not in ("sd1", "sd2", "sdxl", ""):
        raise ModelsFileError(f"{src}: model {shown}: zero_snr is for SD 1.x/2.x/XL schedules; {kind} is a "
                              "flow-matching model")
    t5_tokenizer = entry.get("t5_tokenizer")
    if t5_tokenizer is not None:
        t5_tokenizer = Path(os.path.expanduser(str(t5_tokenizer)))
        t5_tokenizer = t5_tokenizer if t5_tokenizer.is_absolute() else base / t5_tokenizer
    description = str(entry.get("description", ""))
    if not description and found is not None and (found.title or found.architecture):
        description = " / ".join(x for x in (found.title, found.architecture) if x)
    try:
        return ModelSpec(name, path, kind, description,
                         width=int(entry.get("width", size)), height=int(entry.get("height", size)),
                         steps=int(entry.get("steps", steps)),
                         cfg_scale=float(entry.get("cfg_scale", entry.get("cfg", cfg))),
                         sampler=str(entry.get("sampler", sampler)), default=bool(entry.get("default", False)),
                         config=(base / str(entry["config"])) if entry.get("config") else None,
                         prediction=prediction, vae=vae, clip_skip=clip_skip, zero_snr=bool(zero_snr),
                         t5_tokenizer=t5_tokenizer, **parts)
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
