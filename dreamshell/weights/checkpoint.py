"""What a weights file or folder is, from its keys and shapes, without torch.

A .safetensors file starts with an 8-byte length and a JSON header naming every tensor with its
shape, so its kind is read without reading the weights. A .ckpt is a zip holding a pickle; its keys
and shapes are read here with an unpickler that builds nothing but placeholders (no code runs).
The rules follow the keys diffusers' `infer_diffusers_model_type` looks at (CHECKPOINT_KEY_NAMES), the
marker keys ComfyUI and A1111 read (`v_pred`, `ztsnr`, `edm_mean`), and the ModelSpec header
(`modelspec.architecture`, `.title`, `.prediction_type`) where the file has one. A GGUF file (a quantised
FLUX.1 or SD 3 transformer, as ComfyUI-GGUF writes them) is read the same way: only its header.
"""

from __future__ import annotations

import io
import pickle
import re
import struct
import zipfile
import zlib
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import NotAModel
from .files import (
    BadJSON,
    NotRegular,
    describe_kind,
    kind_of,
    open_regular,
    read_json_file,
)
from .safetensors import read_header as read_safetensors_header

UNET = "model.diffusion_model."
CONV_IN = UNET + "input_blocks.0.0.weight"
ATTN2_K = UNET + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"  # level 1, first attention
XL_BASE = "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias"
XL_REFINER = "conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias"
FAMILIES = {"sd1": "SD 1.x", "sd2": "SD 2.x", "sdxl": "SDXL", "sd3": "SD 3", "flux": "FLUX.1"}
KIND_NAMES = {"sd1": "SD 1.x", "sd1-inpaint": "SD 1.x inpainting", "sd2": "SD 2.x", "sd2-inpaint": "SD 2.x inpainting",
              "sdxl": "SDXL base", "sdxl-refiner": "SDXL refiner", "sdxl-inpaint": "SDXL inpainting",
              "sdxl-playground": "Playground v2.5 (SDXL with an EDM schedule)",
              "sd3-medium": "SD 3 Medium", "sd35-medium": "SD 3.5 Medium", "sd35-large": "SD 3.5 Large",
              "sd35-large-turbo": "SD 3.5 Large Turbo", "flux-dev": "FLUX.1 dev", "flux-schnell": "FLUX.1 schnell"}
KINDS = tuple(KIND_NAMES)
FAMILY_OF = {"sdxl-playground": "sdxl", "sd3-medium": "sd3", "sd35-medium": "sd3", "sd35-large": "sd3",
             "sd35-large-turbo": "sd3", "flux-dev": "flux", "flux-schnell": "flux"}
SAME_WEIGHTS = {"sd35-large-turbo": "sd35-large"}   # kinds the keys cannot tell apart (the models file may say)
PARTS = ("clip_l", "clip_g", "t5xxl", "vae")        # what a model file may carry beside its denoiser


@dataclass(frozen=True)
class Detected:
    kind: str | None            # one of KINDS, or None when the keys could not be read
    prediction: str | None = None  # "v" or "epsilon" when the weights tell; None when they cannot
    note: str = ""              # how it was told (for messages)
    zero_snr: bool = False      # trained with a zero-terminal-SNR schedule (the `ztsnr` key)
    bundled: tuple[str, ...] = ()  # parts (PARTS) inside the file beside the denoiser
    quantization: str = ""      # GGUF tensor types of the big weights ("Q4_0"), "" for a plain file
    title: str = ""             # ModelSpec title, when the header has one
    architecture: str = ""      # ModelSpec architecture, when the header has one

    @property
    def family(self) -> str:
        return family_of(self.kind or "sd1")

    @property
    def label(self) -> str:
        return KIND_NAMES.get(self.kind or "", "unknown kind")


def family_of(kind: str) -> str:
    """sd1, sd2, sdxl, sd3 or flux for a kind."""
    return FAMILY_OF.get(kind, kind.split("-")[0])


def same_model(given: str, found: str) -> bool:
    """May the models file call weights detected as `found` by the kind `given`? (the same kind, its family,
    or a kind whose weights look the same: SD 3.5 Large Turbo has SD 3.5 Large's keys)."""
    return (given == found or given == family_of(found) or SAME_WEIGHTS.get(given) == found
            or SAME_WEIGHTS.get(found) == given)


# ----- reading keys and shapes

def safetensors_header(path: Path) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape from a .safetensors header (reads the first bytes only)."""
    return read_safetensors_header(path).shapes


def safetensors_metadata(path: Path) -> dict[str, str]:
    """A .safetensors file's `__metadata__` (string -> string: ModelSpec `modelspec.*`, kohya `ss_*` keys); {}
    for other files and for a header that cannot be read (a hint, never a refusal)."""
    if Path(path).suffix.lower() != ".safetensors":
        return {}
    try:
        return read_safetensors_header(path).metadata
    except (NotAModel, OSError):
        return {}


def few_step_hint(path: Path, running: tuple[str, float] | None = None) -> str | None:
    """A one-line note when a model or LoRA file looks like a few-step one by its name or header (ModelSpec
    `modelspec.*`, kohya `ss_*`): the preset to try (line/presets.suggest_preset); None otherwise, and None when
    the line (`running`: its sampler and CFG) already runs that preset. Never a switch."""
    from ..line.presets import suggest_preset
    hint = suggest_preset(Path(path).name, safetensors_metadata(path), running)
    return f"note: {hint}" if hint else None


# GGUF (llama.cpp's format, which ComfyUI-GGUF and diffusers use for quantised transformers): a header of
# typed key/value pairs and tensor infos, then the data. Only the header is read, with the stdlib.
GGML_TYPES = {0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1", 10: "Q2_K",
              11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS", 17: "IQ2_XS",
              18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S", 23: "IQ4_XS", 24: "I8",
              25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16"}
_GGUF_SCALARS = {0: "<B", 1: "<b", 2: "<H", 3: "<h", 4: "<I", 5: "<i", 6: "<f", 7: "<?", 10: "<Q", 11: "<q", 12: "<d"}
MAX_GGUF_HEADER = 256 * 1024 * 1024


@dataclass(frozen=True)
class GGUFHeader:
    metadata: dict          # key -> value (arrays longer than 64 items are left out)
    shapes: dict            # tensor name -> shape in torch order (GGUF lists dimensions innermost first)
    types: dict             # tensor name -> GGML type name ("Q4_0", "F16", ...)


class _Reader:
    def __init__(self, f, path):
        self.f, self.path, self.read_bytes = f, path, 0

    def take(self, n: int) -> bytes:
        self.read_bytes += n
        if self.read_bytes > MAX_GGUF_HEADER:
            raise NotAModel(f"{self.path}: its GGUF header is over {MAX_GGUF_HEADER >> 20} MB; not a model file")
        data = self.f.read(n)
        if len(data) < n:
            raise NotAModel(f"{self.path} is not a complete GGUF file (it ends inside its header)")
        return data

    def unpack(self, fmt: str):
        return struct.unpack(fmt, self.take(struct.calcsize(fmt)))[0]

    def string(self) -> str:
        return self.take(self.unpack("<Q")).decode("utf-8", "replace")

    def value(self, kind: int):
        if kind in _GGUF_SCALARS:
            return self.unpack(_GGUF_SCALARS[kind])
        if kind == 8:
            return self.string()
        if kind == 9:
            inner, count = self.unpack("<I"), self.unpack("<Q")
            items = [self.value(inner) for _ in range(count)]
            return items if count <= 64 else None
        raise NotAModel(f"{self.path}: its GGUF header has a value of unknown type {kind}")


def gguf_header(path: Path) -> GGUFHeader:
    """Metadata, tensor shapes and tensor types from a GGUF file's header (reads no weights)."""
    with open(path, "rb") as f:
        r = _Reader(f, path)
        if r.take(4) != b"GGUF":
            raise NotAModel(f"{path} is not a GGUF file (it does not start with GGUF)")
        version = r.unpack("<I")
        if version not in (2, 3):
            raise NotAModel(f"{path}: GGUF version {version} is not read (versions 2 and 3 are)")
        n_tensors, n_kv = r.unpack("<Q"), r.unpack("<Q")
        if n_tensors > 1_000_000 or n_kv > 1_000_000:
            raise NotAModel(f"{path}: its GGUF header counts make no sense ({n_tensors} tensors, {n_kv} keys)")
        metadata = {}
        for _ in range(n_kv):
            key = r.string()
            metadata[key] = r.value(r.unpack("<I"))
        shapes, types = {}, {}
        for _ in range(n_tensors):
            name = r.string()
            dims = [r.unpack("<Q") for _ in range(r.unpack("<I"))]
            kind = r.unpack("<I")
            r.unpack("<Q")  # offset of the data
            shapes[name] = tuple(reversed(dims))
            types[name] = GGML_TYPES.get(kind, f"type {kind}")
    return GGUFHeader(metadata, shapes, types)


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
    """Tensor name -> shape for a single weights file (safetensors, GGUF or torch zip)."""
    return weights_header(path)[0]


def weights_header(path: Path) -> tuple[dict, dict]:
    """(tensor name -> shape, metadata) for a single weights file, reading only its header."""
    suffix = path.suffix.lower()
    if suffix == ".safetensors":
        return safetensors_header(path), safetensors_metadata(path)
    if suffix == ".gguf":
        header = gguf_header(path)
        quant = _main_quantization(header.types)
        return header.shapes, {**{k: v for k, v in header.metadata.items() if isinstance(v, (str, int, float))},
                               "gguf.quantization": quant}
    return ckpt_keys(path), {}


def _main_quantization(types: dict) -> str:
    """The tensor type most weights have (the big matrices are quantised, small ones stay F32/F16)."""
    counts: dict[str, int] = {}
    for t in types.values():
        counts[t] = counts.get(t, 0) + 1
    quantised = {t: n for t, n in counts.items() if t not in ("F32", "F16", "BF16")}
    pool = quantised or counts
    return max(pool, key=pool.get) if pool else ""


# ----- telling what the keys are

@dataclass(frozen=True)
class ModelSpecHeader:
    """The ModelSpec keys of a safetensors header (Stability-AI/ModelSpec; kohya's sd-scripts and ComfyUI
    write them): what the file says it is, beside what its keys show."""
    title: str = ""
    architecture: str = ""
    prediction: str | None = None   # "v" or "epsilon"

    @classmethod
    def read(cls, meta: dict) -> "ModelSpecHeader":
        pred = str(meta.get("modelspec.prediction_type") or meta.get("modelspec.predict_key") or "").lower()
        return cls(str(meta.get("modelspec.title", ""))[:200], str(meta.get("modelspec.architecture", ""))[:200],
                   {"v": "v", "v_prediction": "v", "epsilon": "epsilon", "eps": "epsilon"}.get(pred))

    @property
    def says_turbo(self) -> bool:
        return "turbo" in (self.title + " " + self.architecture).lower()


def classify(keys: dict, meta: dict | None = None, name: str = "") -> Detected:
    """The kind of a checkpoint from its keys (and header metadata, and file name where only that tells),
    or NotAModel saying what the file is."""
    meta = meta or {}
    spec = ModelSpecHeader.read(meta)
    core = _denoiser_keys(keys)
    if any(k.startswith("joint_blocks.") for k in core):
        found = _classify_sd3(keys, core, spec, name)
    elif any(k.startswith(("double_blocks.", "single_transformer_blocks.")) for k in core):
        found = _classify_flux(keys, core)
    elif CONV_IN in keys:
        found = _classify_ldm(keys, spec)
    else:
        raise NotAModel(describe_other(keys))
    return replace(found, title=spec.title, architecture=spec.architecture,
                   quantization=str(meta.get("gguf.quantization", "")))


def _denoiser_keys(keys: dict) -> dict:
    """The denoiser's keys without the checkpoint prefix (a transformer-only file has none)."""
    inside = {k[len(UNET):]: v for k, v in keys.items() if k.startswith(UNET)}
    return inside or keys


def bundled_parts(keys: dict) -> tuple[str, ...]:
    """Which of PARTS a whole-model file carries (ComfyUI's and Stability's single-file layouts)."""
    found = []
    for part in ("clip_l", "clip_g", "t5xxl"):
        if any(k.startswith(f"text_encoders.{part}.") for k in keys):
            found.append(part)
    if any(k.startswith(("first_stage_model.", "vae.")) for k in keys):
        found.append("vae")
    return tuple(found)


def _blocks(core: dict, prefix: str) -> int:
    """How many numbered blocks `prefix.N.` the keys have."""
    numbers = {k[len(prefix):].split(".", 1)[0] for k in core if k.startswith(prefix)}
    return max((int(n) for n in numbers if n.isdigit()), default=-1) + 1


def _classify_sd3(keys: dict, core: dict, spec: ModelSpecHeader, name: str) -> Detected:
    """SD 3 Medium, SD 3.5 Medium (MMDiT-X: second attention in the first blocks, 384 positions a side),
    SD 3.5 Large (38 blocks, 2432 wide). diffusers: infer_diffusers_model_type's sd3 / sd35_* rules."""
    width = (core.get("context_embedder.weight") or core.get("x_embedder.proj.weight") or (0,))[0]
    depth = _blocks(core, "joint_blocks.")
    dual = any(".x_block.attn2." in k for k in core)
    note = f"MMDiT, {depth} blocks {width} wide"
    if (width, depth) == (1536, 24):
        kind = "sd35-medium" if dual else "sd3-medium"
        note += ", dual attention" if dual else ""
    elif (width, depth) == (2432, 38):
        kind = "sd35-large"
        if spec.says_turbo:
            kind, note = "sd35-large-turbo", note + "; its ModelSpec header says Turbo"
        elif "turbo" in name.lower():
            kind, note = "sd35-large-turbo", note + "; its file name says Turbo"
    else:
        raise NotAModel(f"an SD 3-family model of a shape dreamshell has no config for ({depth} MMDiT blocks, "
                        f"{width} wide; it knows SD 3 / 3.5 Medium and SD 3.5 Large)")
    return Detected(kind, None, note, bundled=bundled_parts(keys))


FLUX_FILL_CHANNELS = {384: "FLUX.1 Fill", 128: "FLUX.1 Depth/Canny"}


def _classify_flux(keys: dict, core: dict) -> Detected:
    """FLUX.1 dev or schnell: the same 12 B transformer; only dev has the guidance embedder. Original
    (BFL/ComfyUI) keys or diffusers' names."""
    if "single_stream_modulation.lin.weight" in core:
        raise NotAModel("a FLUX.2 model: not supported (dreamshell runs FLUX.1 dev and schnell)")
    if any(k.startswith("distilled_guidance_layer.") for k in core):
        raise NotAModel("a Chroma model (FLUX.1-shaped, its own guidance layer): not supported")
    diffusers = not any(k.startswith("double_blocks.") for k in core)
    img_in = core.get("x_embedder.weight" if diffusers else "img_in.weight", (0, 0))
    if len(img_in) == 2 and img_in[1] in FLUX_FILL_CHANNELS:
        raise NotAModel(f"a {FLUX_FILL_CHANNELS[img_in[1]]} model ({img_in[1]} input channels): not supported; "
                        "dreamshell runs FLUX.1 dev and schnell")
    double = _blocks(core, "transformer_blocks." if diffusers else "double_blocks.")
    single = _blocks(core, "single_transformer_blocks." if diffusers else "single_blocks.")
    if (double, single) != (19, 38):
        raise NotAModel(f"a FLUX.1-shaped model with {double} double and {single} single blocks: dreamshell has "
                        "configs for FLUX.1 dev and schnell (19 and 38)")
    guidance = any(k.startswith(("guidance_in.", "time_text_embed.guidance_embedder.")) for k in core)
    layout = "diffusers names" if diffusers else "original names"
    return Detected("flux-dev" if guidance else "flux-schnell", None,
                    f"FLUX.1 transformer ({layout}), {'with' if guidance else 'no'} guidance embedder",
                    bundled=bundled_parts(keys))


def _classify_ldm(keys: dict, spec: ModelSpecHeader | None = None) -> Detected:
    spec = spec or ModelSpecHeader()
    channels = keys[CONV_IN][1] if len(keys[CONV_IN]) > 1 else 4
    if "edm_vpred.sigma_max" in keys:
        raise NotAModel("an SDXL v-prediction EDM model (CosXL style, edm_vpred keys): not supported")
    if UNET + "input_blocks.10.0.skip_connection.bias" in keys or channels == 7:
        raise NotAModel("a Stable Diffusion x4 upscaler checkpoint, not a text-to-image model")
    if channels == 8:
        raise NotAModel("an InstructPix2Pix checkpoint (8-channel UNet): not supported")
    if channels not in (4, 9):
        raise NotAModel(f"a UNet with {channels} input channels: not an SD 1.x/2.x/XL model dreamshell knows")
    inpaint = "-inpaint" if channels == 9 else ""
    # marker keys (A1111 PR #16567/#16569, ComfyUI supported_models.SDXL.model_type), then the header
    prediction = "v" if "v_pred" in keys else spec.prediction
    zero_snr = "ztsnr" in keys
    if XL_BASE in keys or any(k.startswith("conditioner.embedders.1.") for k in keys):
        if "edm_mean" in keys and not inpaint:
            return Detected("sdxl-playground", None, "SDXL with edm_mean/edm_std keys (Playground v2.5)")
        note = "SDXL's two text encoders" + (", v_pred key" if "v_pred" in keys else "") + \
            (", ztsnr key" if zero_snr else "")
        return Detected("sdxl" + inpaint, prediction, note, zero_snr=zero_snr)
    if XL_REFINER in keys or any(k.startswith("conditioner.embedders.0.model.") for k in keys):
        return Detected("sdxl-refiner", None, "one OpenCLIP-G text encoder")
    context = keys.get(ATTN2_K, (0, 0))[-1]
    if context == 1024 or any(k.startswith("cond_stage_model.model.") for k in keys):
        return Detected("sd2" + inpaint, _sd2_prediction(keys, inpaint, spec), "1024-wide cross-attention (OpenCLIP-H)",
                        zero_snr=zero_snr)
    return Detected("sd1" + inpaint, prediction, f"{context or 768}-wide cross-attention", zero_snr=zero_snr)


def _sd2_prediction(keys: dict, inpaint: str, spec: ModelSpecHeader | None = None) -> str | None:
    """SD 2.x: v or epsilon is not in the weights; the training step tells the 512 base (875000)."""
    if inpaint:
        return "epsilon"
    step = keys.get("global_step")
    if isinstance(step, int):
        return "epsilon" if step == 875000 else "v"
    if "v_pred" in keys:
        return "v"
    arch = spec.architecture if spec else ""
    if arch.startswith("stable-diffusion-v2-768-v"):
        return "v"
    if arch.startswith("stable-diffusion-v2-512"):
        return "epsilon"
    return spec.prediction if spec else None


# ----- parts kept in files of their own (ComfyUI's models/text_encoders and models/vae)

PART_NAMES = {"clip_l": "CLIP-L text encoder", "clip_g": "CLIP-G (OpenCLIP bigG) text encoder",
              "t5xxl": "T5-XXL text encoder", "vae": "VAE"}


def part_fits(found: str, wanted: str) -> bool:
    """May a file found to be `found` serve as `wanted`? (a CLIP or T5 of a width no release has fits
    the slot it is named for: its config then decides)"""
    return found == wanted or (found, wanted) in {("clip", "clip_l"), ("clip", "clip_g"), ("t5", "t5xxl")}


@dataclass(frozen=True)
class Part:
    part: str             # one of PARTS, or "clip" / "t5" for encoders of widths no release has
    note: str             # what it is, for messages
    latent_channels: int = 0   # a VAE's latent channels (4: SD 1.x/2.x/XL, 16: SD 3 and FLUX.1)
    layout: str = ""      # "transformers", "ldm" (original), "gguf"


def part_of(keys: dict) -> Part | None:
    """What an encoder or VAE file is (ComfyUI's clip_l / clip_g / t5xxl_fp16 / ae layouts), or None."""
    names = {k.removeprefix("transformer.") for k in keys}  # some CLIP files keep a transformer. prefix
    layers = _blocks(names, "text_model.encoder.layers.")
    if layers:
        width = (keys.get("text_model.final_layer_norm.weight") or keys.get("transformer.text_model.final_layer_norm.weight")
                 or (0,))[0]
        if width == 768:
            return Part("clip_l", f"a CLIP-L text encoder ({layers} layers)", layout="transformers")
        if width == 1280:
            return Part("clip_g", f"a CLIP-G text encoder ({layers} layers)", layout="transformers")
        return Part("clip", f"a CLIP text encoder ({layers} layers, {width} wide)", layout="transformers")
    if "encoder.block.0.layer.0.SelfAttention.k.weight" in keys:
        width = keys.get("shared.weight", keys.get("encoder.embed_tokens.weight", (0, 0)))[-1]
        blocks = _blocks(keys, "encoder.block.")
        if width == 4096:
            return Part("t5xxl", f"a T5-XXL text encoder ({blocks} blocks)", layout="transformers")
        return Part("t5", f"a T5 text encoder ({blocks} blocks, {width} wide)", layout="transformers")
    if "enc.blk.0.attn_k.weight" in keys:
        return Part("t5xxl", "a T5-XXL text encoder in llama.cpp's GGUF names", layout="gguf")
    conv = keys.get("decoder.conv_in.weight")
    if conv is not None and "encoder.conv_in.weight" in keys and len(conv) == 4:
        channels = conv[1]
        known = {4: "SD 1.x/2.x/XL", 16: "SD 3 and FLUX.1"}.get(channels, "no family dreamshell knows")
        layout = "ldm" if "encoder.down.0.block.0.conv1.weight" in keys else "diffusers"
        return Part("vae", f"a VAE with {channels} latent channels ({known})", channels, layout)
    return None


def detect_part(path: Path) -> Part:
    """What a separate encoder or VAE file is; NotAModel with one line when it is none of them."""
    keys = read_keys(path)
    found = part_of(keys)
    if found is None:
        try:
            what = classify(keys, name=path.name).label
            raise NotAModel(f"a whole model ({what}), not a text encoder or VAE")
        except NotAModel as e:
            if str(e).startswith("a whole model"):
                raise
            raise NotAModel(describe_other(keys)) from None
    return found


def describe_other(keys: dict) -> str:
    """One line saying what a weights file that is not an SD checkpoint is."""
    names = list(keys)
    tiny = _tiny_shape(keys)
    if tiny is not None and tiny[0] == "encoder":
        return "a TAESD tiny encoder, not a model (its decoder file decodes images: --decoder takes that)"
    if tiny is not None:
        return (f"a TAESD tiny decoder ({tiny[2]} latent channels), not a model: give it to --decoder "
                "(or 'decoder:' in the models file)")
    def has(*parts):
        return any(any(p in k for p in parts) for k in names)
    def starts(*prefixes):
        return any(k.startswith(prefixes) for k in names)
    if starts("lora_unet_", "lora_te_", "lora_te1_", "lora_te2_"):
        base = "SDXL" if starts("lora_te1_", "lora_te2_") else "SD 1.x/2.x"
        return f"a LoRA (kohya layout, for {base}), not a model: it adds to a model and is not loaded as one"
    if has(".lora_down.", ".lora_up.", ".lora_A.", ".lora_B.", "lora.down.", "lora.up.", ".hada_w1", ".lokr_w1"):
        return "a LoRA (diffusers/peft layout), not a model: it adds to a model and is not loaded as one"
    part = part_of(keys)
    if part is not None:
        if part.part == "vae":
            return (f"a VAE alone ({part.note.removeprefix('a VAE with ')}), not a full model"
                    + (": name it as 'vae:' beside an SD 3 or FLUX.1 model" if part.latent_channels == 16 else ""))
        slot = {"clip": "clip_l:' or 'clip_g", "t5": "t5xxl"}.get(part.part, part.part)
        return f"{part.note} alone, not a model: name it as '{slot}:' beside an SD 3 or FLUX.1 model"
    if has("control_model.", "controlnet_cond_embedding."):
        return ("a ControlNet, not a model: put it in the controlnets folder and use it with "
                "--control NAME:IMAGE")
    if keys and len(keys) <= 4 and (set(names) & {"emb_params", "clip_l", "clip_g", "string_to_param"}
                                    or all(isinstance(s, tuple) and len(s) == 2 and s[-1] in (768, 1024, 1280)
                                           for s in keys.values())):
        return "a textual-inversion embedding, not a model"
    if has("first_stage_model.") and not has(UNET):
        return "a VAE alone (first_stage_model keys, no UNet), not a full model"
    if "encoder.down.0.block.0.conv1.weight" in keys:
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
    keys, meta = weights_header(path)
    return classify(keys, meta, path.name)


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
    pipeline = str(index.get("_class_name", ""))
    if pipeline.startswith("StableDiffusion3"):
        t = folder_config(path, "transformer/config.json")
        shape = (t.get("caption_projection_dim"), t.get("num_layers"))
        kind = {(1536, 24): "sd35-medium" if t.get("dual_attention_layers") else "sd3-medium",
                (2432, 38): "sd35-large"}.get(shape)
        if kind is None:
            raise NotAModel(f"{path}: an SD 3-family folder of a shape dreamshell does not know ({shape})")
        return Detected(kind, None, "diffusers folder")
    if pipeline.startswith("Flux"):
        t = folder_config(path, "transformer/config.json")
        if t.get("in_channels", 64) != 64:
            raise NotAModel(f"{path}: a FLUX.1 Fill/Depth/Canny folder ({t.get('in_channels')} input channels): "
                            "not supported")
        return Detected("flux-dev" if t.get("guidance_embeds") else "flux-schnell", None, "diffusers folder")
    if kind_of(path / "scheduler" / "scheduler_config.json") == "file" and \
            str(folder_config(path, "scheduler/scheduler_config.json").get("_class_name", "")).startswith("EDM"):
        return Detected("sdxl-playground", None, "diffusers folder with an EDM scheduler")
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


# ----- tiny decoders (TAESD): madebyollin/taesd single files and diffusers AutoencoderTiny folders

# madebyollin/taesd `taesd.py`: Decoder = Sequential(Clamp, conv(C, 64), ReLU, Block x3, Upsample, conv, ...,
# Block, conv(64, 3)), so a single decoder file's keys are `1.weight` (64, C, 3, 3) ... `19.weight` (3, 64, 3, 3)
# and `N.conv.0.weight` for the blocks; Encoder = Sequential(conv(3, 64), Block, ...) from `0.weight`. diffusers'
# AutoencoderTiny keeps the same Sequentials as `encoder.layers.N` and `decoder.layers.N`, the decoder one lower
# (its tanh clamp is in forward(), not a layer: taesd `N` = diffusers `decoder.layers.N-1`).
TINY_PREFIXES = ("", "taesd_decoder.", "decoder.")       # the numbered decoder layers, as files carry them
TINY_NAMES = {"sd1": "SD 1.x/2.x (taesd)", "sdxl": "SDXL (taesdxl)", "sd3": "SD3 (taesd3)", "flux": "FLUX.1 (taef1)",
              "flux2": "FLUX.2 (taef2)", "sana": "Sana (taesana)", "demo": "the demo model's (factor 4)"}


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
    factor: int = 8             # pixels per latent: 2 ** its upsamplings (8 for every TAESD; 4 for the demo's)

    @property
    def label(self) -> str:
        return " or ".join(TINY_NAMES[f] for f in self.families)


def _tiny_families(name: str, channels: int, arch: str, factor: int = 8) -> tuple[str, ...]:
    name = name.lower()
    if channels == 4 and factor == 4:
        return ("demo",)
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


def tiny_upsamplings(keys: dict, prefix: str) -> int:
    """The upsamplings of a TAESD decoder from its keys: each is followed by a bias-free 3x3 convolution
    (the last convolution, to RGB, has a bias)."""
    return sum(1 for k, shape in keys.items()
               if k.startswith(prefix) and k.endswith(".weight") and k[len(prefix):-len(".weight")].isdigit()
               and isinstance(shape, tuple) and len(shape) == 4 and k[:-len("weight")] + "bias" not in keys)


def _tiny_shape(keys: dict) -> tuple[str, str, int, int, bool] | None:
    """(layout, prefix, latent channels, factor, has an encoder) of a single file's TAESD decoder keys (decoder
    layers numbered from 1, or diffusers' from 0), ("encoder", ...) for a TAESD encoder alone, else None."""
    if "decoder.layers.0.weight" in keys:
        shape = keys["decoder.layers.0.weight"]
        if isinstance(shape, tuple) and len(shape) == 4:
            return ("diffusers file", "decoder.layers.", shape[1], 2 ** tiny_upsamplings(keys, "decoder.layers."),
                    any(k.startswith("encoder.layers.") for k in keys))
    for prefix in TINY_PREFIXES:
        first = keys.get(prefix + "1.weight")
        if isinstance(first, tuple) and len(first) == 4 and first[2:] == (3, 3) and prefix + "0.weight" not in keys:
            last = max(int(k[len(prefix):].split(".")[0]) for k in keys
                       if k.startswith(prefix) and k[len(prefix):].split(".")[0].isdigit())
            last_shape = keys.get(f"{prefix}{last}.weight", (0,))
            if not isinstance(last_shape, tuple) or not last_shape or last_shape[0] != 3:
                break
            return "original file", prefix, first[1], 2 ** tiny_upsamplings(keys, prefix), False
    first = keys.get("0.weight")
    if isinstance(first, tuple) and len(first) == 4 and first[1] == 3 and "1.conv.0.weight" in keys:
        return "encoder", "", 0, 0, False
    return None


def _tiny_keys(keys: dict, path: Path) -> TinyDecoder:
    """Which TAESD layout a single file's keys are (decoder layers numbered from 1, or diffusers' from 0)."""
    found = _tiny_shape(keys)
    if found is None:
        raise NotATinyDecoder(f"{path.name} is not a TAESD decoder ({describe_other(keys)})")
    layout, prefix, channels, factor, has_encoder = found
    if layout == "encoder":
        raise NotATinyDecoder(f"{path.name} is a TAESD encoder (it makes latents from images); the decoder is the "
                              "file named *_decoder")
    first = keys[prefix + ("0.weight" if layout == "diffusers file" else "1.weight")]
    arch = "f32" if first[0] == 256 else ("gn" if any(".pool." in k for k in keys) else "")
    return TinyDecoder(path, layout, channels, _tiny_families(path.stem, channels, arch, factor), prefix,
                       has_encoder, factor)


def detect_tiny_decoder(path: Path) -> TinyDecoder:
    """A TAESD decoder file (.pth/.safetensors: madebyollin's numbered layers or a diffusers state dict) or a
    diffusers AutoencoderTiny folder (config.json + weights); NotATinyDecoder with one line otherwise."""
    path = Path(path)
    if path.is_dir():
        try:
            config = folder_config(path, "config.json")
        except NotAModel:
            config = {}
        if not config:
            raise NotATinyDecoder(f"{path} is a folder without a readable config.json: not an AutoencoderTiny "
                                  "folder")
        if config.get("_class_name") != "AutoencoderTiny":
            raise NotATinyDecoder(f"{path} holds a {config.get('_class_name') or 'model'}, not an AutoencoderTiny")
        weights = next((path / n for n in ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin")
                        if (path / n).exists()), None)
        if weights is None:
            raise NotATinyDecoder(f"{path} has no diffusion_pytorch_model.safetensors")
        channels = int(config.get("latent_channels", 4))
        arch = "f32" if tuple(config.get("decoder_block_out_channels", (64,)))[:1] == (256,) else ""
        try:
            stages = len(config.get("num_decoder_blocks") or (3, 3, 3, 1))
            factor = int(config.get("upsampling_scaling_factor", 2)) ** (stages - 1)
        except (TypeError, ValueError):
            raise NotATinyDecoder(f"{path}/config.json: num_decoder_blocks or upsampling_scaling_factor is not "
                                  "what an AutoencoderTiny has") from None
        return TinyDecoder(path, "diffusers folder", channels, _tiny_families(path.name, channels, arch, factor),
                           "decoder.layers.", True, factor)
    return _tiny_keys(read_keys(path), path)


def tiny_family(kind: str, factor: int = 8) -> str:
    """The tiny-decoder family of a model of `kind` whose VAE has `factor` pixels per latent: sd1 (SD 1.x and
    2.x share a VAE), sdxl, sd3, flux, or demo (the built-in demo model's factor-4 VAE)."""
    family = family_of(kind or "sd1")
    if family in ("sd1", "sd2"):
        return "demo" if factor == 4 else "sd1"
    return family


TINY_FILES = {"sd1": "taesd", "sdxl": "taesdxl", "sd3": "taesd3", "flux": "taef1", "demo": "demo-taesd"}


def tiny_decoder_refusal(found: TinyDecoder, model_family: str) -> str | None:
    """One line when `found` cannot decode a `model_family` model's latents (tiny_family's names; sd2 is sd1),
    else None."""
    family = "sd1" if model_family == "sd2" else model_family
    if family in found.families:
        return None
    shown = "the demo model" if family == "demo" else FAMILIES.get(model_family, model_family)
    return (f"{found.path.name} is a tiny decoder for {found.label} latents ({found.latent_channels} channels); "
            f"this model is {shown}: use {TINY_FILES.get(family, 'a tiny decoder of its family')} for it")


# ----- ControlNets and T2I-Adapters (issue 20): what a file or folder in the controlnets folder is

CONTROL_FAMILIES = {768: "sd1", 1024: "sd2", 2048: "sdxl"}   # cross-attention width -> the models it guides
FAMILY_NAMES = FAMILIES
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
    if kind_of(path / "config.json") == "missing":
        raise NotAModel(f"{path} is a folder without config.json: not a diffusers ControlNet or T2I-Adapter folder")
    config = folder_config(path, "config.json")
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
    """What a ControlNet or T2I-Adapter file or folder is, without torch; NotAModel with one line when not (a FIFO,
    a device or a socket is refused before anything is opened)."""
    kind = kind_of(path)
    if kind == "folder":
        return detect_control_folder(path)
    if kind == "file":
        return classify_control(read_keys(path))
    if kind == "missing":
        raise NotAModel(f"{path}: no such file or folder")
    raise NotAModel(f"{path} is {describe_kind(kind)}; give a weights file or a diffusers folder")
