"""Tiny decoders: a user's TAESD (madebyollin/taesd) as diffusers' AutoencoderTiny, and decoding with it.

`load_tiny_decoder(path, model_family)` reads a diffusers AutoencoderTiny folder or a single decoder file
(taesd_decoder.pth / .safetensors with madebyollin's numbered keys, or a diffusers state dict), refusing one
for another family in one line (weights/checkpoint.py `detect_tiny_decoder`). Only the decoder is needed: a
single file loads into AutoencoderTiny's decoder and the encoder stays unused (img2img keeps the model's VAE).

Latents: TAESD decodes the latents the UNet works in, the ones a pipeline returns with output_type="latent"
(the VAE's latent times its scaling_factor: 0.18215 for SD 1.x, 0.13025 for SDXL); that is why diffusers'
AutoencoderTiny config has scaling_factor 1.0 and shift_factor 0.0. Its `latent_magnitude` (3) and
`latent_shift` (0.5) only serve `scale_latents` / `unscale_latents` (latents stored as 8-bit images), not
decoding. The decoder clamps its input with tanh(x / 3) * 3 and returns RGB in [-1, 1] (madebyollin's
returns [0, 1]).
"""

from __future__ import annotations

from pathlib import Path

from ..weights.checkpoint import (
    NotATinyDecoder,
    TinyDecoder,
    detect_tiny_decoder,
    tiny_decoder_refusal,
)


class DecoderError(ValueError):
    """A tiny decoder that cannot be used; str() is the one line for the user."""


def _state_dict(found: TinyDecoder) -> dict:
    """The decoder's tensors from a single file, keyed as AutoencoderTiny's `decoder.layers.N...`."""
    import torch
    if found.path.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file
        raw = load_file(str(found.path))
    else:
        raw = torch.load(found.path, map_location="cpu", weights_only=True)
        if isinstance(raw, dict) and isinstance(raw.get("state_dict"), dict):
            raw = raw["state_dict"]
    out = {}
    for key, value in raw.items():
        if not key.startswith(found.prefix):
            continue
        rest = key[len(found.prefix):]
        if found.layout == "original file":   # taesd's Sequential has its Clamp at 0; diffusers' layers start after
            index, _, tail = rest.partition(".")
            if not index.isdigit():
                continue
            rest = f"{int(index) - 1}.{tail}"
        out["decoder.layers." + rest] = value
    return out


def decoder_config(state: dict) -> dict:
    """AutoencoderTiny's decoder settings (width, blocks per stage) read from a decoder's keys (`decoder.layers.N`):
    after the input convolution and its ReLU, each stage is residual blocks (`N.conv.0.weight`), an upsampling (no
    weights) unless it is the last, and a convolution (bias-free, but the last one's, to RGB). madebyollin's TAESD
    gives (3, 3, 3, 1) blocks of 64 channels; a TAESD for a factor-4 VAE (the demo's) one stage fewer."""
    first = state["decoder.layers.0.weight"]
    width, channels = int(first.shape[0]), int(first.shape[1])
    index = max(int(k.split(".")[2]) for k in state if k.split(".")[2].isdigit())
    blocks, stage, i = [], 0, 2
    while i <= index:
        if f"decoder.layers.{i}.conv.0.weight" in state:
            stage += 1
        elif f"decoder.layers.{i}.weight" in state:
            blocks.append(stage)
            stage = 0
            if f"decoder.layers.{i}.bias" in state:   # the last convolution, to RGB
                break
        i += 1
    return dict(latent_channels=channels, decoder_block_out_channels=(width,) * len(blocks),
                num_decoder_blocks=tuple(blocks), encoder_block_out_channels=(width,) * len(blocks),
                num_encoder_blocks=(1,) + (3,) * (len(blocks) - 1))


def load_tiny_decoder(path, model_family: str | None = None, dtype=None, factor: int | None = None):
    """An AutoencoderTiny (eval mode, float32 unless `dtype`) from a TAESD folder or decoder file; DecoderError
    when the path is not one or is for another family than `model_family` (sd1, sd2, sdxl, demo, ...) or, given
    `factor` (the model VAE's pixels per latent), makes another number of pixels per latent."""
    import torch
    from diffusers import AutoencoderTiny
    path = Path(path).expanduser()
    if not path.exists():
        raise DecoderError(f"no tiny decoder at {path}: give a TAESD decoder file (taesd_decoder.safetensors or "
                           ".pth) or a diffusers AutoencoderTiny folder")
    try:
        found = detect_tiny_decoder(path)
    except NotATinyDecoder as e:
        raise DecoderError(str(e)) from None
    if model_family:
        why = tiny_decoder_refusal(found, model_family)
        if why:
            raise DecoderError(why)
    if factor is not None and found.factor != factor:
        raise DecoderError(f"{path.name} makes {found.factor} pixels of each latent and this model's VAE {factor}: "
                           "it is a tiny decoder for another model")
    if found.layout == "diffusers folder":
        model = AutoencoderTiny.from_pretrained(path, local_files_only=True)
    else:
        if found.families in (("sana",), ("flux2",)):   # other layers than AutoencoderTiny's
            raise DecoderError(f"{path.name} is a tiny decoder for {found.label}: not a family dreamshell runs")
        state = _state_dict(found)
        if "decoder.layers.0.weight" not in state:
            raise DecoderError(f"{path.name}: no decoder input layer among its keys")
        model = AutoencoderTiny(**decoder_config(state))
        own = {k: v for k, v in model.state_dict().items() if k.startswith("decoder.")}
        missing, extra = sorted(set(own) - set(state)), sorted(set(state) - set(own))
        if missing or extra:
            raise DecoderError(f"{path.name}: its decoder keys do not match TAESD's "
                               f"({len(missing)} missing, e.g. {missing[:1]}; {len(extra)} unknown, e.g. {extra[:1]})")
        bad = [k for k in own if tuple(own[k].shape) != tuple(state[k].shape)]
        if bad:
            raise DecoderError(f"{path.name}: {bad[0]} has shape {tuple(state[bad[0]].shape)}, TAESD's is "
                               f"{tuple(own[bad[0]].shape)}")
        model.load_state_dict(state, strict=False)
    model.to(dtype or torch.float32).eval()
    model.requires_grad_(False)
    model._ds_families = found.families
    return model


def decode(tiny, latents):
    """RGB in [-1, 1] (N, 3, 8h, 8w) from the UNet's latents (N, C, h, w), as the full VAE's decode gives it; the
    latents go to the decoder's device and dtype (the result stays there)."""
    import torch
    weight = next(tiny.decoder.parameters())   # its first convolution
    with torch.no_grad():
        x = (latents.to(weight.device).float() / tiny.config.scaling_factor + tiny.config.shift_factor).to(weight.dtype)
        if weight.dim() == 4 and weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous():
            x = x.contiguous(memory_format=torch.channels_last)   # the layout of its weights (CPU: NHWC convs)
        return tiny.decode(x).sample.float()


def to_pil(images):
    """PIL images from RGB in [-1, 1] (N, 3, H, W), rounded as diffusers' image processor rounds."""
    from PIL import Image
    arr = ((images / 2 + 0.5).clamp(0, 1).permute(0, 2, 3, 1).cpu().numpy() * 255).round().astype("uint8")
    return [Image.fromarray(a) for a in arr]


def decode_to_pil(tiny, latents):
    """The images for a pipeline's output_type="latent" result, through the tiny decoder."""
    return to_pil(decode(tiny, latents))


class TinyPreview:
    """A live preview through the tiny decoder, for `preview.PreviewTap` in place of the linear projection:
    a real image of the predicted clean latent. `scale` 0.5 decodes the latent average-pooled by 2 (a quarter
    of the cost: 256 px for a 512 px image); 1 decodes it whole."""

    def __init__(self, tiny, scale: float = 0.5):
        if scale not in (0.25, 0.5, 1):
            raise ValueError(f"the preview scale is 0.25, 0.5 or 1, not {scale}")
        self.tiny, self.scale = tiny, scale
        self.channels = tiny.config.latent_channels

    def to_image(self, latent):
        import torch
        x = latent.detach().float()   # decode() takes it to the decoder's device
        if self.scale != 1:
            x = torch.nn.functional.avg_pool2d(x, int(1 / self.scale))
        return decode_to_pil(self.tiny, x[:1])[0]


class TinyDecoders:
    """The tiny decoders a generator has loaded, one per (model, path): loaded on first use, dropped with the
    model. `get` raises DecoderError (one line) for a file that is not one or is for another family."""

    def __init__(self):
        self._loaded: dict = {}

    def get(self, model: str, path, family: str, factor: int | None = None, dtype=None, channels_last: bool = False,
            device: str = "cpu"):
        """The AutoencoderTiny at `path` for `model` on `device` (the model's), in `dtype` (float32 unless given:
        the VAE's precision; its weights channels_last where the model's are), None for no path."""
        if path is None:
            return None
        key = (model, str(path), str(dtype), str(device))
        if key not in self._loaded:
            try:
                tiny = load_tiny_decoder(path, family, dtype=dtype, factor=factor)
                if str(device) != "cpu":
                    tiny.to(device)
                if channels_last:
                    import torch
                    tiny.to(memory_format=torch.channels_last)
                self._loaded[key] = tiny
            except DecoderError:
                raise
            except Exception as e:   # a damaged file: torch, safetensors and diffusers raise many kinds
                from ..line.safetext import first_line
                raise DecoderError(f"{Path(path).name} cannot be loaded as a tiny decoder: {first_line(e)}") from None
        return self._loaded[key]

    def loaded(self) -> list:
        return list(self._loaded.values())

    def clear(self) -> None:
        self._loaded.clear()
