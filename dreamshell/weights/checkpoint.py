"""What a weights file or folder is, from its keys and shapes, without torch.

A .safetensors file starts with an 8-byte length and a JSON header naming every tensor with its
shape, so its kind is read without reading the weights. A .ckpt is a zip holding a pickle; its keys
and shapes are read here with an unpickler that builds nothing but placeholders (no code runs).
The rules follow the keys diffusers' `infer_diffusers_model_type` looks at (CHECKPOINT_KEY_NAMES).
"""

from __future__ import annotations

import json
import pickle
import re
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import NotAModel
from .safetensors import read_header

UNET = "model.diffusion_model."
CONV_IN = UNET + "input_blocks.0.0.weight"
ATTN2_K = UNET + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"  # level 1, first attention
XL_BASE = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"
XL_REFINER = "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias"
KIND_NAMES = {"sd1": "SD 1.x", "sd1-inpaint": "SD 1.x inpainting", "sd2": "SD 2.x", "sd2-inpaint": "SD 2.x inpainting",
              "sdxl": "SDXL base", "sdxl-refiner": "SDXL refiner", "sdxl-inpaint": "SDXL inpainting"}
KINDS = tuple(KIND_NAMES)


@dataclass(frozen=True)
class Detected:
    kind: str | None            # one of KINDS, or None when the keys could not be read
    prediction: str | None = None  # "v" or "epsilon" when the weights tell; None when they cannot
    note: str = ""              # how it was told (for messages)

    @property
    def family(self) -> str:
        return (self.kind or "sd1").split("-")[0]

    @property
    def label(self) -> str:
        return KIND_NAMES.get(self.kind or "", "unknown kind")


# ----- reading keys and shapes

def safetensors_header(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a .safetensors header (reads the first bytes only)."""
    return read_header(path).shapes


class _Shape:
    """Stands in for a tensor in a pickled checkpoint: only its shape is kept."""

    def __init__(self, shape=()):
        self.shape = tuple(shape)


class _Stub:
    """Stands in for any other pickled object (callbacks, storages); it does nothing."""

    def __init__(self, *args, **kwargs):
        pass

    def __setstate__(self, state):
        pass


def _rebuild_tensor(storage, offset, size, *args, **kwargs):
    return _Shape(size)


class _KeysUnpickler(pickle.Unpickler):
    """Reads a torch checkpoint's pickle building only dicts, shapes and inert stubs."""

    def find_class(self, module, name):
        if (module, name) == ("collections", "OrderedDict"):
            import collections
            return collections.OrderedDict
        if module == "torch._utils" and name.startswith("_rebuild_tensor"):
            return _rebuild_tensor
        if module == "torch._utils" and name == "_rebuild_parameter":
            return lambda data, *a, **k: data
        return _Stub

    def persistent_load(self, pid):
        return None


def ckpt_keys(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a zip-format torch checkpoint (.ckpt/.pt), executing nothing."""
    try:
        with zipfile.ZipFile(path) as z:
            name = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                raise NotAModel(f"{path} is not a torch checkpoint (no data.pkl inside)")
            data = _KeysUnpickler(z.open(name)).load()
    except zipfile.BadZipFile:
        raise NotAModel(f"{path} is not a zip-format torch checkpoint (older torch.save files are not read)") \
            from None
    except (pickle.UnpicklingError, EOFError, AttributeError, TypeError, ValueError) as e:
        raise NotAModel(f"{path}: its pickle cannot be read ({e})") from None
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = {**data["state_dict"], **{k: v for k, v in data.items() if k == "global_step"}}
    if not isinstance(data, dict):
        raise NotAModel(f"{path} holds a {type(data).__name__}, not a dictionary of weights")
    return {k: (v.shape if isinstance(v, _Shape) else v) for k, v in data.items() if isinstance(k, str)}


def read_keys(path: Path) -> dict:
    """Tensor name -> shape for a single weights file (safetensors or torch zip)."""
    if path.suffix.lower() == ".safetensors":
        return safetensors_header(path)
    return ckpt_keys(path)


# ----- telling what the keys are

def classify(keys: dict) -> Detected:
    """The kind of an original-layout (LDM) checkpoint, or NotAModel saying what the file is."""
    if CONV_IN in keys:
        return _classify_ldm(keys)
    raise NotAModel(describe_other(keys))


def _classify_ldm(keys: dict) -> Detected:
    channels = keys[CONV_IN][1] if len(keys[CONV_IN]) > 1 else 4
    if any(k.startswith(UNET + "joint_blocks.") or k.startswith(UNET + "double_blocks.") for k in keys):
        raise NotAModel(describe_other(keys))
    if "edm_mean" in keys:
        raise NotAModel("a Playground v2.5 checkpoint (SDXL-shaped with an EDM schedule): not supported")
    if UNET + "input_blocks.10.0.skip_connection.bias" in keys or channels == 7:
        raise NotAModel("a Stable Diffusion x4 upscaler checkpoint, not a text-to-image model")
    if channels == 8:
        raise NotAModel("an InstructPix2Pix checkpoint (8-channel UNet): not supported")
    if channels not in (4, 9):
        raise NotAModel(f"a UNet with {channels} input channels: not an SD 1.x/2.x/XL model dreamshell knows")
    inpaint = "-inpaint" if channels == 9 else ""
    if XL_BASE in keys or any(k.startswith("conditioner.embedders.1.") for k in keys):
        return Detected("sdxl" + inpaint, "v" if "v_pred" in keys else None, "SDXL's two text encoders")
    if XL_REFINER in keys or any(k.startswith("conditioner.embedders.0.model.") for k in keys):
        return Detected("sdxl-refiner", None, "one OpenCLIP-G text encoder")
    context = keys.get(ATTN2_K, (0, 0))[-1]
    if context == 1024 or any(k.startswith("cond_stage_model.model.") for k in keys):
        return Detected("sd2" + inpaint, _sd2_prediction(keys, inpaint), "1024-wide cross-attention (OpenCLIP-H)")
    return Detected("sd1" + inpaint, "v" if "v_pred" in keys else None, f"{context or 768}-wide cross-attention")


def _sd2_prediction(keys: dict, inpaint: str) -> str | None:
    """SD 2.x: v or epsilon is not in the weights; the training step tells the 512 base (875000)."""
    if inpaint:
        return "epsilon"
    step = keys.get("global_step")
    if isinstance(step, int):
        return "epsilon" if step == 875000 else "v"
    return "v" if "v_pred" in keys else None


def describe_other(keys: dict) -> str:
    """One line saying what a weights file that is not an SD checkpoint is."""
    names = list(keys)
    def has(*parts):
        return any(any(p in k for p in parts) for k in names)
    def starts(*prefixes):
        return any(k.startswith(prefixes) for k in names)
    if starts("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_"):
        base = "SDXL" if starts("lora_te1_", "lora_te2_") else "SD 1.x/2.x"
        return f"a LoRA (kohya layout, for {base}), not a model: it adds to a model and is not loaded as one"
    if has(".lora_down.", ".lora_up.", ".lora_A.", ".lora_B.", "lora.down.", "lora.up.", ".hada_w1", ".lokr_w1"):
        return "a LoRA (diffusers/peft layout), not a model: it adds to a model and is not loaded as one"
    if has("joint_blocks."):
        return "a Stable Diffusion 3 checkpoint: not supported (dreamshell runs SD 1.x, 2.x and SDXL)"
    if has("double_blocks.", "single_blocks.", "single_transformer_blocks."):
        return "a Flux checkpoint: not supported (dreamshell runs SD 1.x, 2.x and SDXL)"
    if has("control_model.", "controlnet_cond_embedding."):
        return ("a ControlNet, not a model: put it in the controlnets folder and use it with "
                "--control NAME:IMAGE")
    if keys and len(keys) <= 4 and (set(names) & {"emb_params", "clip_l", "clip_g", "string_to_param"}
                                    or all(isinstance(s, tuple) and len(s) == 2 and s[-1] in (768, 1024, 1280)
                                           for s in keys.values())):
        return "a textual-inversion embedding, not a model"
    if has("first_stage_model.") and not has(UNET):
        return "a VAE alone (first_stage_model keys, no UNet), not a full model"
    if ("encoder.conv_in.weight" in keys and "decoder.conv_in.weight" in keys) or \
            ("encoder.down.0.block.0.conv1.weight" in keys):
        return "a VAE alone (no UNet or text encoder), not a full model"
    if starts("conv_first.", "body.0.rdb1.", "params_ema") or ("body.0.weight" in keys and not has("down_blocks")):
        return "a Real-ESRGAN upscaler: list it under 'upscalers' in the models file, not as a model"
    if has("down_blocks.0.resnets.0.conv1.weight") and has("time_embedding."):
        return "a diffusers UNet alone (no VAE or text encoder): point --model at the whole diffusers folder"
    if has("text_model.encoder.layers.") and not has(UNET):
        return "a text encoder alone, not a full model"
    sample = ", ".join(names[:3]) or "no tensors"
    return f"not a Stable Diffusion checkpoint dreamshell knows (keys like {sample})"


def detect_file(path: Path) -> Detected:
    """The kind of a single weights file; NotAModel when it is something else."""
    return classify(read_keys(path))


def detect_folder(path: Path) -> Detected:
    """The kind of a diffusers folder, from its JSON configs."""
    def config(rel):
        p = path / rel
        try:
            return json.loads(p.read_text(encoding="utf-8")) if p.exists() else {}
        except (OSError, json.JSONDecodeError):
            return {}
    if not (path / "model_index.json").exists():
        raise NotAModel(f"{path} is a folder without model_index.json: not a diffusers pipeline folder")
    index, unet = config("model_index.json"), config("unet/config.json")
    prediction = {"v_prediction": "v", "epsilon": "epsilon"}.get(
        config("scheduler/scheduler_config.json").get("prediction_type"))
    inpaint = "-inpaint" if unet.get("in_channels") == 9 else ""
    if index.get("text_encoder_2") and index.get("text_encoder_2")[0]:
        refiner = not (index.get("text_encoder") and index["text_encoder"][0])
        return Detected("sdxl-refiner" if refiner else "sdxl" + inpaint, prediction, "diffusers folder")
    if unet.get("cross_attention_dim") == 1024:
        return Detected("sd2" + inpaint, prediction, "diffusers folder")
    return Detected("sd1" + inpaint, prediction, "diffusers folder")


def detect(path: Path) -> Detected:
    """The kind of weights at path (folder or file); NotAModel with one line when it is not a model."""
    return detect_folder(path) if path.is_dir() else detect_file(path)


# ----- ControlNets and T2I-Adapters (issue 20): what a file or folder in the controlnets folder is

CONTROL_FAMILIES = {768: "sd1", 1024: "sd2", 2048: "sdxl"}   # cross-attention width -> the models it guides
FAMILY_NAMES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
# the cross-attention's key projection (its width is the text encoder's), original and diffusers names
_CN_ATTN = re.compile(r"input_blocks\.(\d+)\.1\.transformer_blocks\.0\.attn2\.to_k\.weight")
_CN_DIFFUSERS_ATTN = re.compile(r"down_blocks\.(\d+)\.attentions\.0\.transformer_blocks\.0\.attn2\.to_k\.weight")


@dataclass(frozen=True)
class ControlDetected:
    kind: str          # "controlnet" or "t2i-adapter"
    family: str        # "sd1", "sd2" or "sdxl": the models it guides ("" for another width: the engine checks)
    layout: str        # "original" (lllyasviel's control_model.* keys), "diffusers" (keys or a folder)
    note: str = ""

    @property
    def label(self) -> str:
        what = "ControlNet" if self.kind == "controlnet" else "T2I-Adapter"
        return f"{what} for {FAMILY_NAMES.get(self.family, self.family)}"


def _control_family(keys: dict, pattern: re.Pattern, prefix: str = "") -> str | None:
    """The family from the first cross-attention's width; "" for a width of no known family (the demo's 96:
    the engine compares it with the model's); None when the keys have no cross-attention."""
    found = sorted((int(m.group(1)), k) for k in keys if k.startswith(prefix)
                   and (m := pattern.fullmatch(k[len(prefix):])))
    for _, key in found:
        shape = keys[key]
        if isinstance(shape, tuple) and len(shape) == 2:
            return CONTROL_FAMILIES.get(shape[-1], "")
    return None


def classify_control(keys: dict) -> ControlDetected:
    """A ControlNet (original or diffusers keys) from a single file's keys; NotAModel saying what it is else."""
    names = list(keys)
    if any(k.startswith(("lora_controlnet", "lllite_")) for k in names):
        raise NotAModel("a Control-LoRA or ControlNet-LLLite file: not supported (dreamshell loads full ControlNets)")
    if any("task_embedding" in k or "controlnet_mode_embedding" in k for k in names):
        raise NotAModel("a ControlNet Union model: not supported")
    if any(k.startswith(("adapter.body.", "body.0.block1", "body.0.resnets")) for k in names):
        raise NotAModel("a T2I-Adapter single file: dreamshell loads T2I-Adapters from diffusers folders "
                        "(config.json + diffusion_pytorch_model.safetensors)")
    for prefix in ("control_model.", ""):
        if prefix + "input_hint_block.0.weight" in keys and prefix + "zero_convs.0.0.weight" in keys:
            family = _control_family(keys, _CN_ATTN, prefix)
            if family is None:
                raise NotAModel("a ControlNet without cross-attention layers dreamshell knows")
            return ControlDetected("controlnet", family, "original", "control_model keys" if prefix else
                                   "original keys without the control_model prefix")
    if "controlnet_cond_embedding.conv_in.weight" in keys and "controlnet_down_blocks.0.weight" in keys:
        family = _control_family(keys, _CN_DIFFUSERS_ATTN)
        if family == "sd1" and "add_embedding.linear_1.weight" in keys:
            family = "sdxl"
        if family is None:
            raise NotAModel("a ControlNet without cross-attention layers dreamshell knows")
        return ControlDetected("controlnet", family, "diffusers", "diffusers keys in one file")
    if CONV_IN in keys:
        raise NotAModel("a Stable Diffusion model, not a ControlNet: give it with --model")
    raise NotAModel(describe_other(keys) if keys else "an empty weights file")


def detect_control_folder(path: Path) -> ControlDetected:
    """A diffusers ControlNetModel or T2IAdapter folder, from its config.json."""
    try:
        config = json.loads((path / "config.json").read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        raise NotAModel(f"{path} is a folder without a readable config.json: not a diffusers ControlNet or "
                        "T2I-Adapter folder") from None
    if not isinstance(config, dict):
        raise NotAModel(f"{path}/config.json is not a JSON object")
    cls = str(config.get("_class_name", ""))
    if cls == "ControlNetModel":
        family = CONTROL_FAMILIES.get(config.get("cross_attention_dim"), "")
        if config.get("addition_embed_type") == "text_time":
            family = "sdxl"
        return ControlDetected("controlnet", family, "diffusers", "diffusers folder")
    if cls in ("T2IAdapter", "MultiAdapter"):
        kind = config.get("adapter_type")
        family = {"full_adapter": "sd1", "light_adapter": "sd1", "full_adapter_xl": "sdxl"}.get(kind)
        if family is None:
            raise NotAModel(f"{path}: a T2I-Adapter of type {kind!r}, which dreamshell does not know")
        return ControlDetected("t2i-adapter", family, "diffusers", "diffusers folder")
    raise NotAModel(f"{path}: a diffusers {cls or 'folder'} (config.json), not a ControlNet or T2I-Adapter")


def detect_control(path: Path) -> ControlDetected:
    """What a ControlNet or T2I-Adapter file or folder is, without torch; NotAModel with one line when not."""
    if path.is_dir():
        return detect_control_folder(path)
    return classify_control(read_keys(path))
