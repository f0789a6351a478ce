"""What a weights file or folder is, from its keys and shapes, without torch.

A .safetensors file starts with an 8-byte length and a JSON header naming every tensor with its
shape, so its kind is read without reading the weights. A .ckpt is a zip holding a pickle; its keys
and shapes are read here with an unpickler that builds nothing but placeholders (no code runs).
The rules follow the keys diffusers' `infer_diffusers_model_type` looks at (CHECKPOINT_KEY_NAMES).
"""

from __future__ import annotations

import io
import pickle
import zipfile
import zlib
from dataclasses import dataclass
from pathlib import Path

from .errors import NotAModel
from .files import BadJSON, NotRegular, describe_kind, kind_of, open_regular, read_json_file
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


MAX_PICKLE = 64 * 1024 * 1024   # bytes of a checkpoint's data.pkl (SDXL's is under 2 MB; the tensors are apart)


def ckpt_keys(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a zip-format torch checkpoint (.ckpt/.pt), executing nothing.
    Whatever is wrong with the file (not a zip, a corrupt or encrypted member, a pickle that is not a
    dictionary, or one that is not a pickle at all) is one NotAModel line."""
    try:
        f = open_regular(path)
    except NotRegular as e:
        raise NotAModel(e.strerror) from None
    with f:
        data = _read_pickle(path, f)
    if isinstance(data, dict) and isinstance(data.get("state_dict"), dict):
        data = {**data["state_dict"], **{k: v for k, v in data.items() if k == "global_step"}}
    if not isinstance(data, dict):
        raise NotAModel(f"{path} holds a {type(data).__name__}, not a dictionary of weights")
    return {k: (v.shape if isinstance(v, _Shape) else v) for k, v in data.items() if isinstance(k, str)}


def _read_pickle(path: Path, f):
    try:
        with zipfile.ZipFile(f) as z:
            info = next((i for i in z.infolist() if i.filename.endswith("/data.pkl") or i.filename == "data.pkl"),
                        None)
            if info is None:
                raise NotAModel(f"{path} is not a torch checkpoint (no data.pkl inside)")
            if info.flag_bits & 0x1:
                raise NotAModel(f"{path} is an encrypted zip: not a torch checkpoint dreamshell can read")
            if info.file_size > MAX_PICKLE:
                raise NotAModel(f"{path}: its data.pkl is {info.file_size:,} bytes, over the {MAX_PICKLE:,} a "
                                "checkpoint's index of tensors takes; not read")
            raw = z.read(info)
    except NotAModel:
        raise
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, NotImplementedError, zlib.error, ValueError):
        raise NotAModel(f"{path} is not a zip-format torch checkpoint, or a damaged one (older torch.save "
                        "files are not read)") from None
    except RuntimeError as e:   # zipfile: an encrypted member, a bad password, ...
        raise NotAModel(f"{path}: its zip cannot be read ({str(e)[:120]})") from None
    try:
        return _KeysUnpickler(io.BytesIO(raw)).load()
    except (MemoryError, RecursionError):
        raise NotAModel(f"{path}: its pickle is too large or too deeply nested to read") from None
    except Exception as e:   # a hostile pickle can fail in any way the unpickler can: it is not a checkpoint
        raise NotAModel(f"{path}: its pickle cannot be read ({type(e).__name__}: {str(e)[:120]})") from None


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


def folder_config(path: Path, rel: str) -> dict:
    """One JSON config of a diffusers folder ({} when it is not there); NotAModel when it is there but
    is not a small regular JSON file holding an object."""
    p = path / rel
    kind = kind_of(p)
    if kind == "missing":
        return {}
    try:
        data = read_json_file(p)
    except (OSError, BadJSON) as e:
        why = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise NotAModel(f"{path}: its {rel} cannot be read ({why})") from None
    if not isinstance(data, dict):
        raise NotAModel(f"{path}: its {rel} is not a JSON object")
    return data


def detect_folder(path: Path) -> Detected:
    """The kind of a diffusers folder, from its JSON configs."""
    if kind_of(path / "model_index.json") == "missing":
        raise NotAModel(f"{path} is a folder without model_index.json: not a diffusers pipeline folder")
    index, unet = folder_config(path, "model_index.json"), folder_config(path, "unet/config.json")
    prediction = {"v_prediction": "v", "epsilon": "epsilon"}.get(
        folder_config(path, "scheduler/scheduler_config.json").get("prediction_type"))
    inpaint = "-inpaint" if unet.get("in_channels") == 9 else ""
    te2, te1 = index.get("text_encoder_2"), index.get("text_encoder")
    if isinstance(te2, list) and te2 and te2[0]:
        refiner = not (isinstance(te1, list) and te1 and te1[0])
        return Detected("sdxl-refiner" if refiner else "sdxl" + inpaint, prediction, "diffusers folder")
    if unet.get("cross_attention_dim") == 1024:
        return Detected("sd2" + inpaint, prediction, "diffusers folder")
    return Detected("sd1" + inpaint, prediction, "diffusers folder")


def native_size(path: Path) -> tuple[int, int] | None:
    """A diffusers folder's own image size, as its pipeline computes the default height and width:
    unet sample_size times the VAE's scale factor (2 ** (len(vae block_out_channels) - 1)); None
    when the configs do not say."""
    unet, vae = folder_config(path, "unet/config.json"), folder_config(path, "vae/config.json")
    size, blocks = unet.get("sample_size"), vae.get("block_out_channels")
    if isinstance(size, list) and len(size) == 2:
        height, width = size
    else:
        height = width = size
    if not (isinstance(blocks, list) and 1 <= len(blocks) <= 8):
        return None
    factor = 2 ** (len(blocks) - 1)
    if not all(isinstance(n, int) and not isinstance(n, bool) and 0 < n * factor <= 1 << 16 for n in (width, height)):
        return None
    return width * factor, height * factor


def detect(path: Path) -> Detected:
    """The kind of weights at path (folder or file); NotAModel with one line when it is not a model
    (a FIFO, a device or a socket is refused before anything is opened)."""
    kind = kind_of(path)
    if kind == "folder":
        return detect_folder(path)
    if kind == "file":
        return detect_file(path)
    if kind == "missing":
        raise NotAModel(f"{path}: no such file or folder")
    raise NotAModel(f"{path} is {describe_kind(kind)}; give a weights file or a diffusers folder")
