"""What a weights file or folder is, from its keys and shapes, without torch.

A .safetensors file starts with an 8-byte length and a JSON header naming every tensor with its
shape, so its kind is read without reading the weights. A .ckpt is a zip holding a pickle; its keys
and shapes are read here with an unpickler that builds nothing but placeholders (no code runs).
The rules follow the keys diffusers' `infer_diffusers_model_type` looks at (CHECKPOINT_KEY_NAMES).
"""

from __future__ import annotations

import json
import pickle
import struct
import zipfile
from dataclasses import dataclass
from pathlib import Path

UNET = "model.diffusion_model."
CONV_IN = UNET + "input_blocks.0.0.weight"
ATTN2_K = UNET + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"  # level 1, first attention
XL_BASE = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"
XL_REFINER = "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias"
FAMILIES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL"}
KIND_NAMES = {"sd1": "SD 1.x", "sd1-inpaint": "SD 1.x inpainting", "sd2": "SD 2.x", "sd2-inpaint": "SD 2.x inpainting",
              "sdxl": "SDXL base", "sdxl-refiner": "SDXL refiner", "sdxl-inpaint": "SDXL inpainting"}
KINDS = tuple(KIND_NAMES)


class NotAModel(ValueError):
    """The file is readable but is not a Stable Diffusion model dreamshell loads; str() says what it is."""


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
    with open(path, "rb") as f:
        head = f.read(8)
        if len(head) < 8:
            raise NotAModel(f"{path} is not a safetensors file (shorter than its 8-byte header length)")
        (length,) = struct.unpack("<Q", head)
        if length > 100_000_000:
            raise NotAModel(f"{path} is not a safetensors file (header length {length} makes no sense)")
        try:
            header = json.loads(f.read(length))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise NotAModel(f"{path} is not a safetensors file (its header is not JSON)") from None
    return {k: tuple(v["shape"]) for k, v in header.items() if k != "__metadata__" and isinstance(v, dict)}


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
        return "a ControlNet: not supported as a model"
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


# ----- tiny decoders (TAESD): madebyollin/taesd single files and diffusers AutoencoderTiny folders

# madebyollin/taesd `taesd.py`: Decoder = Sequential(Clamp, conv(C, 64), ReLU, Block x3, Upsample, conv, ...,
# Block, conv(64, 3)), so a single decoder file's keys are `1.weight` (64, C, 3, 3) ... `19.weight` (3, 64, 3, 3)
# and `N.conv.0.weight` for the blocks; Encoder = Sequential(conv(3, 64), Block, ...) from `0.weight`. diffusers'
# AutoencoderTiny keeps the same Sequentials as `encoder.layers.N` and `decoder.layers.N`, the decoder one lower
# (its tanh clamp is in forward(), not a layer: taesd `N` = diffusers `decoder.layers.N-1`).
TINY_PREFIXES = ("", "taesd_decoder.", "decoder.")       # the numbered decoder layers, as files carry them
TINY_NAMES = {"sd1": "SD 1.x/2.x (taesd)", "sdxl": "SDXL (taesdxl)", "sd3": "SD3 (taesd3)", "flux": "FLUX.1 (taef1)",
              "flux2": "FLUX.2 (taef2)", "sana": "Sana (taesana)"}


class NotATinyDecoder(NotAModel):
    """The file or folder is not a TAESD decoder dreamshell reads; str() says what it is."""


@dataclass(frozen=True)
class TinyDecoder:
    """A TAESD decoder on disk: its layout, latent channels and the model families it can decode.

    TAESD and TAESDXL have the same layers and shapes (so do TAESD3 and TAEF1): the weights cannot tell them
    apart, the name does (madebyollin's files and repos are named taesd, taesdxl, taesd3, taef1). `families`
    holds every family the keys allow when the name does not narrow them."""

    path: Path
    layout: str                 # "original file" (taesd_decoder.pth/.safetensors) | "diffusers file" | "diffusers folder"
    latent_channels: int
    families: tuple[str, ...]   # of "sd1", "sdxl", "sd3", "flux", "flux2", "sana"
    prefix: str = ""            # the decoder's numbered layers' key prefix in a single file
    has_encoder: bool = False

    @property
    def label(self) -> str:
        return " or ".join(TINY_NAMES[f] for f in self.families)


def _tiny_families(name: str, channels: int, arch: str) -> tuple[str, ...]:
    name = name.lower()
    if channels == 4:
        if "xl" in name:
            return ("sdxl",)
        return ("sd1",) if "taesd" in name or "sd1" in name or "sd15" in name or "sd2" in name else ("sd1", "sdxl")
    if channels == 16:
        if "sd3" in name:
            return ("sd3",)
        return ("flux",) if "taef1" in name or "flux" in name else ("sd3", "flux")
    if channels == 32:
        return ("sana",) if arch == "f32" else ("flux2",)
    raise NotATinyDecoder(f"a tiny autoencoder for {channels}-channel latents: no model family dreamshell knows")


def _tiny_keys(keys: dict, path: Path) -> TinyDecoder:
    """Which TAESD layout a single file's keys are (decoder layers numbered from 1, or diffusers' from 0)."""
    if "decoder.layers.0.weight" in keys:
        shape = keys["decoder.layers.0.weight"]
        arch = "f32" if shape[0] == 256 else ("gn" if any(".pool." in k for k in keys) else "")
        return TinyDecoder(path, "diffusers file", shape[1], _tiny_families(path.stem, shape[1], arch),
                           "decoder.layers.", any(k.startswith("encoder.layers.") for k in keys))
    for prefix in TINY_PREFIXES:
        first = keys.get(prefix + "1.weight")
        if isinstance(first, tuple) and len(first) == 4 and first[2:] == (3, 3) and prefix + "0.weight" not in keys:
            last = max(int(k[len(prefix):].split(".")[0]) for k in keys
                       if k.startswith(prefix) and k[len(prefix):].split(".")[0].isdigit())
            if keys.get(f"{prefix}{last}.weight", (0,))[0] != 3:
                break
            arch = "f32" if first[0] == 256 else ("gn" if any(".pool." in k for k in keys) else "")
            return TinyDecoder(path, "original file", first[1], _tiny_families(path.stem, first[1], arch), prefix)
    first = keys.get("0.weight")
    if isinstance(first, tuple) and len(first) == 4 and first[1] == 3 and "1.conv.0.weight" in keys:
        raise NotATinyDecoder(f"{path.name} is a TAESD encoder (it makes latents from images); the decoder is the "
                              "file named *_decoder")
    raise NotATinyDecoder(f"{path.name} is not a TAESD decoder ({describe_other(keys)})")


def detect_tiny_decoder(path: Path) -> TinyDecoder:
    """A TAESD decoder file (.pth/.safetensors: madebyollin's numbered layers or a diffusers state dict) or a
    diffusers AutoencoderTiny folder (config.json + weights); NotATinyDecoder with one line otherwise."""
    path = Path(path)
    if path.is_dir():
        try:
            config = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError):
            raise NotATinyDecoder(f"{path} is a folder without a readable config.json: not an AutoencoderTiny "
                                  "folder") from None
        if config.get("_class_name") != "AutoencoderTiny":
            raise NotATinyDecoder(f"{path} holds a {config.get('_class_name') or 'model'}, not an AutoencoderTiny")
        weights = next((path / n for n in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
                        if (path / n).exists()), None)
        if weights is None:
            raise NotATinyDecoder(f"{path} has no diffusion_pytorch_model.safetensors")
        channels = int(config.get("latent_channels", 4))
        arch = "f32" if tuple(config.get("decoder_block_out_channels", (64,)))[:1] == (256,) else ""
        return TinyDecoder(path, "diffusers folder", channels, _tiny_families(path.name, channels, arch),
                           "decoder.layers.", True)
    return _tiny_keys(read_keys(path), path)


def tiny_decoder_refusal(found: TinyDecoder, model_family: str) -> str | None:
    """One line when `found` cannot decode a `model_family` model's latents (sd1, sd2, sdxl), else None."""
    family = "sd1" if model_family == "sd2" else model_family
    if family in found.families:
        return None
    return (f"{found.path.name} is a tiny decoder for {found.label} latents ({found.latent_channels} channels); "
            f"this model is {FAMILIES.get(model_family, model_family)}: use "
            f"{'taesdxl' if family == 'sdxl' else 'taesd'} for it")


def safetensors_metadata(path: Path) -> dict[str, str]:
    """A .safetensors file's `__metadata__` (ModelSpec `modelspec.*`, kohya `ss_*` keys), {} for other files;
    for `line.presets.suggest_preset`."""
    if Path(path).suffix.lower() != ".safetensors":
        return {}
    try:
        with open(path, "rb") as f:
            (length,) = struct.unpack("<Q", f.read(8))
            if length > 100_000_000:
                return {}
            meta = json.loads(f.read(length)).get("__metadata__") or {}
    except (OSError, struct.error, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        return {}
    return {str(k): str(v) for k, v in meta.items()} if isinstance(meta, dict) else {}
