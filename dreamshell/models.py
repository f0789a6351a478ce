"""The models file -> model specs (no torch). REFERENCE.md section 4.

models.yaml maps a name to weights (a diffusers folder or one .safetensors/.ckpt file), a kind
(sd1, sd2, sdxl), a description and defaults. The reserved key `upscalers` maps factors to
Real-ESRGAN weight files. With no models file, the built-in demo model is the default.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

KINDS = ("sd1", "sd2", "sdxl")
DEFAULT_SIZES = {"sd1": 512, "sd2": 768, "sdxl": 1024}
DEMO_NAME = "demo"
PACKAGE_ROOT = Path(__file__).resolve().parent


class ModelsFileError(ValueError):
    """A models file that cannot be used; str() names the file, the entry and the rule."""


@dataclass(frozen=True)
class ModelSpec:
    name: str
    weights: Path
    kind: str = "sd1"
    description: str = ""
    width: int = 512
    height: int = 512
    steps: int = 30
    cfg_scale: float = 7.5
    sampler: str = "k_lms"
    default: bool = False
    config: Path | None = None   # diffusers config folder for a single file (default: the shipped one)

    @property
    def is_single_file(self) -> bool:
        return self.weights.suffix.lower() in (".safetensors", ".ckpt", ".pt", ".bin", ".pth")


@dataclass(frozen=True)
class Registry:
    models: dict[str, ModelSpec]
    upscalers: dict[str, Path] = field(default_factory=dict)
    source: Path | None = None

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
        raise ModelsFileError(f"no model '{name_or_path}': use a name ({names}) or a path to a "
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


def spec_for_path(path: Path, name: str | None = None) -> ModelSpec:
    """A spec for weights given by path, guessing the kind from what is there."""
    kind = "sd1"
    if path.is_dir():
        if (path / "text_encoder_2").exists():
            kind = "sdxl"
        elif (path / "scheduler" / "scheduler_config.json").exists() and \
                '"v_prediction"' in (path / "scheduler" / "scheduler_config.json").read_text():
            kind = "sd2"
    elif path.stat().st_size > 5_000_000_000:
        kind = "sdxl"
    size = DEFAULT_SIZES[kind]
    return ModelSpec(name or str(path), path, kind, f"weights at {path}",
                     width=size, height=size)


def _spec_from_entry(name: str, entry: dict, base: Path, source: Path) -> ModelSpec:
    if not isinstance(entry, dict):
        raise ModelsFileError(f"{source}: entry '{name}' must be a mapping with at least 'weights'")
    weights = entry.get("weights")
    if not weights:
        raise ModelsFileError(f"{source}: model '{name}' has no 'weights' (a diffusers folder or a file)")
    kind = str(entry.get("kind", "sd1"))
    if kind not in KINDS:
        raise ModelsFileError(f"{source}: model '{name}' has kind '{kind}'; kinds are {', '.join(KINDS)}")
    if weights == "builtin:demo":
        path = builtin_models_dir() / DEMO_NAME
    else:
        path = Path(os.path.expanduser(str(weights)))
        path = path if path.is_absolute() else base / path
    size = DEFAULT_SIZES[kind]
    known = {"weights", "kind", "description", "width", "height", "steps", "cfg", "cfg_scale", "sampler",
             "default", "config"}
    unknown = set(entry) - known
    if unknown:
        raise ModelsFileError(f"{source}: model '{name}' has unknown keys {sorted(unknown)}; "
                              f"known: {', '.join(sorted(known))}")
    try:
        return ModelSpec(name, path, kind, str(entry.get("description", "")),
                         width=int(entry.get("width", size)), height=int(entry.get("height", size)),
                         steps=int(entry.get("steps", 30)),
                         cfg_scale=float(entry.get("cfg_scale", entry.get("cfg", 7.5))),
                         sampler=str(entry.get("sampler", "k_lms")), default=bool(entry.get("default", False)),
                         config=(base / str(entry["config"])) if entry.get("config") else None)
    except (TypeError, ValueError) as e:
        raise ModelsFileError(f"{source}: model '{name}': {e}") from None


def load_registry(path: Path | None) -> Registry:
    """Read a models file; with none (or a missing default file) the demo model is the registry."""
    import yaml  # pyyaml; only here, so the parser stays light

    models: dict[str, ModelSpec] = {}
    upscalers: dict[str, Path] = {}
    if path is not None and path.exists():
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as e:
            raise ModelsFileError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
        if not isinstance(data, dict):
            raise ModelsFileError(f"{path}: expected 'name: {{weights: ..., kind: ...}}' entries")
        base = path.parent
        for name, entry in data.items():
            if name == "upscalers":
                for factor, weights in (entry or {}).items():
                    p = Path(os.path.expanduser(str(weights)))
                    upscalers[str(factor)] = p if p.is_absolute() else base / p
                continue
            models[str(name)] = _spec_from_entry(str(name), entry, base, path)
    if not models:
        models[DEMO_NAME] = demo_spec()
    anchor = Path("models/ldm/stable-diffusion-v1/model.ckpt")
    if anchor.exists() and not any(s.weights.resolve() == anchor.resolve() for s in models.values()):
        models["stable-diffusion-1.4"] = ModelSpec("stable-diffusion-1.4", anchor.resolve(), "sd1",
                                                   "the original shell's checkpoint path")
    return Registry(models, upscalers, path if path is not None and path.exists() else None)
