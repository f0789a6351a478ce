"""The models file -> model specs (no torch); in the spirit of InvokeAI 2.x's configs/models.yaml.

models.yaml maps a name to weights (a diffusers folder or one .safetensors/.ckpt file), an optional
kind (read from the weights when left out: checkpoint.py), a description, defaults, a `vae` and a
`clip_skip`; for SD 3 and FLUX.1 the encoder files kept apart (`clip_l`, `clip_g`, `t5xxl`, and
`t5_tokenizer` for a T5 tokenizer folder of the user's own), for SDXL finetunes `prediction` and
`zero_snr`. Reserved keys: `upscalers` maps factors to Real-ESRGAN weight files; `loras`,
`embeddings`, `vaes`, `controlnets` and `decoders` name those folders (default: `models/loras`,
`models/embeddings`, `models/vae`, `models/controlnets`, `models/taesd` in the working folder where they exist,
else the installed copies). A model's `decoder:` (taesd, vae, a TAESD name or path) decodes its images when a line
names none. With no models file, the built-in
demo model is the default.

A model's defaults come from its own files wherever it is loaded from (the models file, `--model PATH`,
`!switch PATH`): a diffusers folder's size from its unet and VAE configs, and steps, cfg and sampler
from a `dreamshell.json` in the folder (the demo ships one); a models-file entry's own keys win. Every
value is checked with the switch table's converters, so a file takes exactly what a line takes.
"""

from __future__ import annotations

import errno
import os
import sys
from dataclasses import dataclass, field, replace
from pathlib import Path

from ..line.errors import LimitError, UserError
from ..line.limits import check_steps
from ..line.rng import DEFAULT_RNG, find_rng, rng_names
from ..line.safetext import quoted, shorten
from ..line.switches import BY_SPELLING, SwitchError, format_number
from .checkpoint import (
    KIND_NAMES,
    KINDS,
    PART_NAMES,
    NotAModel,
    detect,
    detect_part,
    family_of,
    native_size,
    part_fits,
    same_model,
)
from .files import (
    BadJSON,
    NotRegular,
    describe_kind,
    kind_of,
    read_bounded,
    read_json_file,
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
PREDICTIONS = ("v", "epsilon", "sample")   # sample: x0 (the 1-step SDXL-Lightning UNet)
DEMO_NAME = "demo"
FOLDER_DEFAULTS_FILE = "dreamshell.json"   # a diffusers folder's own defaults (steps, cfg, sampler, ...)
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
    preset: str | None = None    # a few-step recipe (line/presets.py) under this model's own defaults
    rng: str = DEFAULT_RNG       # noise source of its lines (line/rng.py): cpu, gpu or nv
    decoder: str | None = None   # taesd | vae | a TAESD name or path: what decodes this model's images by default

    @property
    def is_single_file(self) -> bool:
        return self.weights.suffix.lower() in (".safetensors", ".ckpt", ".pt", ".bin", ".pth")


@dataclass(frozen=True)
class Registry:
    models: dict[str, ModelSpec]
    upscalers: dict[str, Path] = field(default_factory=dict)
    source: Path | None = None
    folders: Folders = field(default_factory=lambda: default_folders())

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
        kind = kind_of(path)
        if kind == "too long":
            raise ModelsFileError(f"no model {quoted(name_or_path)}: the name is too long for a file path, and "
                                  "no model has it")
        if kind != "missing":
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


def default_folders() -> Folders:
    """The LoRA, embedding, VAE and ControlNet folders when nothing names them: `models/loras` (etc.) in the working
    folder where it exists (the rule of the default models file, `models/models.yaml`), else the
    installed copy beside the demo model."""
    builtin = Folders.under(builtin_models_dir())
    local = Folders.under(Path.cwd() / "models")
    return Folders(*(mine if mine.is_dir() else theirs for mine, theirs in
                     ((local.loras, builtin.loras), (local.embeddings, builtin.embeddings),
                      (local.vaes, builtin.vaes), (local.controlnets, builtin.controlnets),
                      (local.decoders, builtin.decoders))))


def demo_spec() -> ModelSpec:
    """The built-in demo model, its defaults from its own folder (dreamshell.json and its configs)."""
    folder = builtin_models_dir() / DEMO_NAME
    spec = ModelSpec(DEMO_NAME, folder, "sd1", "built-in demo model", default=True)
    try:
        return with_folder_defaults(spec, folder, f"model {quoted(DEMO_NAME)}")
    except ModelsFileError:
        return spec   # a damaged install: the load says what is wrong


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
    """A spec for weights given by path, its kind read from the weights (not guessed from the size) and
    its defaults from its own folder (size from its configs, dreamshell.json)."""
    what = f"--model {name or path}"
    found = detect_kind(path, what)
    kind = found.kind or ""
    size = default_size(kind, found.prediction)
    steps, cfg, sampler = kind_defaults(kind)
    sampler = "k_euler" if found.zero_snr else sampler   # LMS cannot rescale to zero terminal SNR in diffusers
    spec = ModelSpec(name or str(path), path, kind, describe_found(found, path),
                     width=size, height=size, steps=steps, cfg_scale=cfg, sampler=sampler,
                     prediction=found.prediction, zero_snr=found.zero_snr)
    return with_folder_defaults(spec, path, what) if path.is_dir() else spec


def _header_says(path: Path):
    """What a weights file's header says (kind markers, ModelSpec title), or None when it cannot tell (a network
    of a size no release has, which the models file's kind and config describe)."""
    try:
        return detect(path)
    except (NotAModel, OSError):
        return None


def listing(spec: ModelSpec) -> str:
    """A model as `!models` shows it: its kind by name, then its description (the models file's, or the
    ModelSpec title and architecture its header gives)."""
    label = KIND_NAMES.get(spec.kind, spec.kind or "kind read when loaded")
    if spec.zero_snr:
        label += ", zero terminal SNR"
    if spec.prediction == "v" and spec.kind.startswith(("sd1", "sdxl")):
        label += ", v-prediction"
    return f"{label}: {spec.description}" if spec.description else label


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


def _part_path(where: str, key: str, value, base: Path) -> Path:
    """An encoder file named in the models file: it must be that part when it exists (checked from its
    header), and is looked for again when the model is loaded when it does not yet."""
    if not isinstance(value, str) or not value.strip():
        raise ModelsFileError(f"{where} has {key} {quoted(str(value))}; give the path of a {PART_NAMES[key]} file")
    path = Path(os.path.expanduser(value))
    path = path if path.is_absolute() else base / path
    there = kind_of(path)
    if there not in ("file", "missing"):
        raise ModelsFileError(f"{where}: {key} {shorten(str(path), 120)} is {describe_kind(there)}; give a "
                              f"{PART_NAMES[key]} file")
    if there == "file":
        try:
            part = detect_part(path)
        except NotAModel as e:
            raise ModelsFileError(f"{where}: {key} {path} is {e}") from None
        except OSError as e:
            raise ModelsFileError(f"{where}: cannot read {key} {path} ({e.strerror or e})") from None
        if not part_fits(part.part, key):
            raise ModelsFileError(f"{where}: {key} {path} is {part.note}; name it as '{part.part}:'")
    return path


# ----- defaults and values, checked as a line's switches are

DEFAULT_KEYS = ("description", "width", "height", "steps", "cfg", "cfg_scale", "sampler", "clip_skip")
_SWITCH_OF = {"width": "--width", "height": "--height", "steps": "--steps", "cfg": "--cfg_scale",
              "cfg_scale": "--cfg_scale", "sampler": "--sampler", "clip_skip": "--clip_skip", "vae": "--vae",
              "decoder": "--decoder"}
_FIELD_OF = {"cfg": "cfg_scale"}


def _token(value) -> str:
    """A YAML or JSON scalar as the token a line would carry (7.0 -> '7', .nan -> 'nan', yes -> 'true')."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, float):
        return format_number(value)
    return str(value)


def check_value(key: str, value, where: str):
    """A models-file (or dreamshell.json) value converted by its switch's own converter, with the same
    rules and words as on a line; ModelsFileError naming where, the key and the rule."""
    if isinstance(value, (dict, list, tuple, set)) or value is None:
        raise ModelsFileError(f"{where}: {key} is {'empty' if value is None else 'a list or mapping'}; it takes "
                              "one value")
    if key == "description":
        return str(value)
    try:
        converted = BY_SPELLING[_SWITCH_OF[key]].convert(_token(value))
    except SwitchError as e:
        raise ModelsFileError(f"{where}: {key}: {e}") from None
    return converted


def _checked_defaults(values: dict, where: str) -> dict:
    """ModelSpec fields from the default keys present in values, each checked; steps within the
    sampler's bound (the sampler given beside them, else any sampler's)."""
    out = {}
    for key in DEFAULT_KEYS:
        if key in values:
            out[_FIELD_OF.get(key, key)] = check_value(key, values[key], where)
    if "steps" in out:
        try:
            check_steps(out["steps"], out.get("sampler"))
        except LimitError as e:
            raise ModelsFileError(f"{where}: steps: {e}") from None
    return out


def folder_defaults(folder: Path, where: str) -> dict:
    """ModelSpec fields from a diffusers folder's own files: its native size (unet sample_size x the VAE's
    scale factor, as diffusers pipelines compute it) and its dreamshell.json, checked like a models file."""
    out: dict = {}
    try:
        size = native_size(folder)
    except NotAModel as e:
        raise ModelsFileError(f"{where}: {e}") from None
    if size is not None:
        out["width"], out["height"] = size
    own = folder / FOLDER_DEFAULTS_FILE
    kind = kind_of(own)
    if kind == "missing":
        return out
    label = shorten(str(own), 120)
    if kind != "file":
        raise ModelsFileError(f"{label} is {describe_kind(kind)}; it should be a small JSON file of defaults")
    try:
        data = read_json_file(own, 64 * 1024)
    except (OSError, BadJSON) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ModelsFileError(f"{label} cannot be read ({why})") from None
    if not isinstance(data, dict):
        raise ModelsFileError(f"{label} is not a JSON object of defaults ({', '.join(DEFAULT_KEYS)})")
    unknown = sorted(set(data) - set(DEFAULT_KEYS))
    if unknown:
        raise ModelsFileError(f"{label} has unknown keys {shorten(str(unknown), 100)}; known: "
                              f"{', '.join(DEFAULT_KEYS)}")
    return {**out, **_checked_defaults(data, label)}


def with_folder_defaults(spec: ModelSpec, folder: Path, where: str) -> ModelSpec:
    """spec with the defaults its own folder gives (see folder_defaults)."""
    return replace(spec, **folder_defaults(folder, where))


ENTRY_KEYS = {"weights", "kind", "default", "config", "prediction", "vae", "zero_snr", "t5_tokenizer", "preset",
              "rng", "decoder", *SEPARATE_PARTS, *DEFAULT_KEYS}


def _path_value(value, key: str, where: str) -> str:
    if not isinstance(value, (str, int, float)) or isinstance(value, bool) or not str(value).strip():
        raise ModelsFileError(f"{where}: {key} is a path (a text value), not {_kind_of_value(value)}")
    return str(value)


def _kind_of_value(value) -> str:
    if value is None:
        return "empty"
    return {bool: "yes/no", dict: "a mapping", list: "a list"}.get(type(value), type(value).__name__)


def _spec_from_entry(name: str, entry, base: Path, source: Path) -> ModelSpec:
    src, shown = shorten(str(source), 120), quoted(name)  # as messages show them
    where = f"{src}: model {shown}"
    if not isinstance(entry, dict):
        raise ModelsFileError(f"{src}: entry {shown} must be a mapping with at least 'weights'")
    unknown = set(map(str, entry)) - ENTRY_KEYS
    if unknown:
        raise ModelsFileError(f"{where} has unknown keys {shorten(str(sorted(unknown)), 100)}; "
                              f"known: {', '.join(sorted(ENTRY_KEYS))}")
    weights = entry.get("weights")
    if not weights:
        raise ModelsFileError(f"{where} has no 'weights' (a diffusers folder or a file)")
    weights = _path_value(weights, "weights", where)
    kind = str(entry.get("kind") or "")
    if kind and kind not in KINDS:
        raise ModelsFileError(f"{where} has kind {quoted(kind)}; kinds are {', '.join(KINDS)} "
                              "(or leave 'kind' out: it is read from the weights)")
    prediction = entry.get("prediction")
    if prediction is not None and prediction not in PREDICTIONS:
        raise ModelsFileError(f"{where} has prediction {quoted(str(prediction))}; use v, epsilon or sample (x0)")
    default = entry.get("default", False)
    if not isinstance(default, bool):
        raise ModelsFileError(f"{where}: default is yes or no (true/false), not {quoted(_token(default))}")
    if weights == "builtin:demo":
        path = builtin_models_dir() / DEMO_NAME
    else:
        path = Path(os.path.expanduser(weights))
        path = path if path.is_absolute() else base / path
    zero_snr = entry.get("zero_snr", None)
    if zero_snr is not None and not isinstance(zero_snr, bool):
        raise ModelsFileError(f"{where} has zero_snr {quoted(str(zero_snr))}; use true or false")
    there = kind_of(path)
    if there not in ("file", "folder", "missing"):
        raise ModelsFileError(f"{where}: weights {shorten(str(path), 120)} is {describe_kind(there)}; give a "
                              "weights file or a diffusers folder")
    detected = None
    if not kind and there != "missing":
        detected = detect_kind(path, where)
        kind, prediction = detected.kind or "", prediction or detected.prediction
        zero_snr = detected.zero_snr if zero_snr is None else zero_snr
    elif there == "file" and path.suffix.lower() in (".safetensors", ".gguf"):
        detected = _header_says(path)     # a given kind: the header still tells zero SNR and the ModelSpec title
        if detected is not None:
            zero_snr = detected.zero_snr if zero_snr is None else zero_snr
            prediction = prediction or (detected.prediction if same_model(kind, detected.kind or "") else None)
    size = default_size(kind, prediction)
    steps, cfg, sampler = kind_defaults(kind)
    sampler = "k_euler" if zero_snr else sampler   # LMS cannot rescale to zero terminal SNR in diffusers
    values: dict = {"width": size, "height": size, "steps": steps, "cfg_scale": cfg, "sampler": sampler}
    if detected is not None and (detected.title or detected.architecture):
        values["description"] = " / ".join(x for x in (detected.title, detected.architecture) if x)
    if there == "folder" and kind_of(path / "model_index.json") == "file":
        values.update(folder_defaults(path, where))
    preset = entry.get("preset")
    if preset is not None:   # a few-step recipe: its row gives the steps, CFG and sampler the entry leaves out
        from ..line.presets import find_preset, preset_names, preset_row
        if not isinstance(preset, str) or find_preset(preset) is None:
            raise ModelsFileError(f"{where} has preset {quoted(str(preset))}; presets: {', '.join(preset_names())}")
        preset = find_preset(preset)
        row = preset_row(preset, entry.get("steps") if isinstance(entry.get("steps"), int) else None)
        values.update(steps=row.steps, cfg_scale=row.cfg_scale, sampler=row.sampler)
    values.update(_checked_defaults(entry, where))
    parts = {key: _part_path(where, key, entry[key], base) for key in SEPARATE_PARTS if key in entry}
    family = family_of(kind) if kind else ""
    if parts and family not in ("sd3", "flux", ""):
        raise ModelsFileError(f"{where} is {kind}: {', '.join(parts)} name encoder files for SD 3 and FLUX.1 "
                              "models, whose weights may come without them")
    if family == "flux" and "clip_g" in parts:
        raise ModelsFileError(f"{where} is FLUX.1, which has no CLIP-G encoder: drop 'clip_g'")
    if zero_snr and family not in ("sd1", "sd2", "sdxl", ""):
        raise ModelsFileError(f"{where}: zero_snr is for SD 1.x/2.x/XL schedules; {kind} is a flow-matching model")
    t5_tokenizer = entry.get("t5_tokenizer")
    if t5_tokenizer is not None:
        t5_tokenizer = Path(os.path.expanduser(_path_value(t5_tokenizer, "t5_tokenizer", where)))
        t5_tokenizer = t5_tokenizer if t5_tokenizer.is_absolute() else base / t5_tokenizer
    vae = entry.get("vae")
    if vae is not None:
        vae = check_value("vae", vae, where)
        local = Path(os.path.expanduser(vae))
        local = local if local.is_absolute() else base / local
        vae = str(local) if kind_of(local) in ("file", "folder") else vae   # else a name in the VAE folder
    decoder = entry.get("decoder")
    if decoder is not None:
        decoder = check_value("decoder", decoder, where)
        local = Path(os.path.expanduser(decoder))
        local = local if local.is_absolute() else base / local
        if decoder not in ("taesd", "vae") and kind_of(local) in ("file", "folder"):
            decoder = str(local)   # else a name in the decoders folder
    config = entry.get("config")
    config = base / _path_value(config, "config", where) if config else None
    rng = find_rng(_token(entry.get("rng", DEFAULT_RNG)))
    if rng is None:
        raise ModelsFileError(f"{where} has rng {quoted(_token(entry.get('rng')))}; use one of "
                              f"{', '.join(rng_names())} (the noise source of its lines)")
    return ModelSpec(name, path, kind, values.pop("description", ""), default=default, config=config,
                     prediction=prediction, vae=vae, zero_snr=bool(zero_snr), t5_tokenizer=t5_tokenizer,
                     preset=preset, rng=rng, decoder=decoder, **parts, **values)


MAX_MODELS_FILE_BYTES = 1024 * 1024
FOLDER_KEYS = {"loras": "loras", "embeddings": "embeddings", "vaes": "vaes",   # top-level keys: folders
               "controlnets": "controlnets", "decoders": "decoders"}


MAX_YAML_DEPTH = 8         # mappings and lists inside each other (a models file needs 3)


def _read_yaml(path: Path):
    """The models file's data: plain YAML only (safe_load: no Python tags; no anchors or aliases, so a
    1 KB file cannot grow into gigabytes; nesting bounded), a small regular text file."""
    import yaml  # pyyaml; only here, so the parser stays light

    label = shorten(str(path), 120)
    try:
        data = read_bounded(path, MAX_MODELS_FILE_BYTES)
    except NotRegular:
        raise ModelsFileError(f"{label} is not a regular file; give a models.yaml text file") from None
    except OSError as e:
        if e.errno == errno.EFBIG:
            raise ModelsFileError(f"{label} is over {MAX_MODELS_FILE_BYTES:,} bytes; a models file is at most "
                                  "1 MB") from None
        raise ModelsFileError(f"{label}: cannot be read ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelsFileError(f"{label} is not UTF-8 text; a models file is plain YAML") from None
    try:
        _check_yaml_events(yaml.parse(text, Loader=yaml.SafeLoader), label)
        return yaml.safe_load(text) or {}
    except yaml.constructor.ConstructorError as e:
        tag = (e.problem or "").rsplit(" ", 1)[-1]
        raise ModelsFileError(f"{label}: the tag {shorten(tag, 80)}{_at(e)} is not allowed; a models file is "
                              "plain YAML (names, paths, numbers), never Python objects") from None
    except yaml.YAMLError as e:
        what = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise ModelsFileError(f"{label}: not valid YAML ({shorten(what, 100)}{_at(e)})") from None
    except RecursionError:
        raise ModelsFileError(f"{label}: nested too deep; a models file is names with a few keys each") from None


def _check_yaml_events(events, label: str) -> None:
    """Refuse anchors and aliases (&name, *name) and deep nesting, from the parser's events, before
    anything is built."""
    import yaml

    depth = 0
    for event in events:
        if isinstance(event, yaml.AliasEvent) or getattr(event, "anchor", None) is not None:
            raise ModelsFileError(f"{label}: anchors and aliases (&name, *name){_at_mark(event)} are not "
                                  "allowed in a models file; write each value out")
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ModelsFileError(f"{label}: nested more than {MAX_YAML_DEPTH} levels deep{_at_mark(event)}; a "
                                      "models file is names with a few keys each")
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


def _at_mark(event) -> str:
    mark = getattr(event, "start_mark", None)
    return f" at line {mark.line + 1}" if mark is not None else ""


def _at(error) -> str:
    mark = getattr(error, "problem_mark", None)
    return f" at line {mark.line + 1}" if mark is not None else ""


def load_registry(path: Path | None) -> Registry:
    """Read a models file; with none (or a missing default file) the demo model is the registry."""
    models: dict[str, ModelSpec] = {}
    upscalers: dict[str, Path] = {}
    folders = default_folders()
    there = path is not None and kind_of(path) != "missing"
    if there:
        data = _read_yaml(path)
        src = shorten(str(path), 120)
        if not isinstance(data, dict):
            raise ModelsFileError(f"{src}: expected 'name: {{weights: ...}}' entries")
        base = path.parent
        for name, entry in data.items():
            if name == "upscalers":
                if not isinstance(entry or {}, dict):
                    raise ModelsFileError(f"{src}: 'upscalers' maps factors to weight files "
                                          "(4: RealESRGAN_x4plus.pth)")
                for factor, weights in (entry or {}).items():
                    where = f"{src}: upscalers: {shorten(str(factor), 40)}"
                    p = Path(os.path.expanduser(_path_value(weights, "the weights", where)))
                    p = p if p.is_absolute() else base / p
                    if kind_of(p) not in ("file", "missing"):
                        raise ModelsFileError(f"{where}: {shorten(str(p), 120)} is {describe_kind(kind_of(p))}; "
                                              "give a Real-ESRGAN weights file")
                    upscalers[str(factor)] = p
                continue
            if name in FOLDER_KEYS:
                if not isinstance(entry, str) or not entry.strip():
                    raise ModelsFileError(f"{src}: '{name}' is a folder path ({name}: my/{name})")
                p = Path(os.path.expanduser(entry))
                folders = replace(folders, **{FOLDER_KEYS[name]: p if p.is_absolute() else base / p})
                continue
            if not isinstance(name, (str, int)) or isinstance(name, bool) or not str(name).strip():
                raise ModelsFileError(f"{src}: a model's name is a word ({shorten(str(name), 40)} is not)")
            models[str(name)] = _spec_from_entry(str(name), entry, base, path)
    if not models:
        models[DEMO_NAME] = demo_spec()
    original = Path("models/ldm/stable-diffusion-v1/model.ckpt")   # where lstein/stable-diffusion kept it
    if original.exists() and not any(s.weights.resolve() == original.resolve() for s in models.values()):
        models["stable-diffusion-1.4"] = ModelSpec("stable-diffusion-1.4", original.resolve(), "sd1",
                                                   "the original shell's checkpoint path")
    return Registry(models, upscalers, path if there else None, folders)


def with_folders(registry: Registry, loras=None, embeddings=None, vaes=None, controlnets=None,
                 decoders=None) -> Registry:
    """The registry with the LoRA, embedding, VAE, ControlNet and tiny-decoder folders the launch switches name
    (over the models file's)."""
    changes = {field: Path(value).expanduser() for field, value in
               (("loras", loras), ("embeddings", embeddings), ("vaes", vaes), ("controlnets", controlnets),
                ("decoders", decoders)) if value}
    return replace(registry, folders=replace(registry.folders, **changes)) if changes else registry
