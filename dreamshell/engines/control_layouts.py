"""ControlNets and T2I-Adapters with random weights in the layouts people download, for tests and benchmarks
(imports torch; scripts/make_fullsize_control.py writes the full-size ones).

- original: lllyasviel's single file (`control_v11p_sd15_canny.pth` / `.safetensors`): `control_model.` + the
  SD UNet's encoder in its original names (`time_embed`, `input_blocks`, `middle_block`), `input_hint_block`
  (the conditioning embedding's convolutions at 0, 2, ..., 14), `zero_convs.N.0` and `middle_block_out.0`;
- diffusers: `ControlNetModel.save_pretrained` (config.json + diffusion_pytorch_model.safetensors), and the
  T2I-Adapter folder (`T2IAdapter`).
The renaming is written from the block structure (engines/fullsize.py renames the UNet's encoder the same way);
`compare` loads a file through dreamshell's own loader (engines/control.py) and checks every tensor.
"""

from __future__ import annotations

import json
from pathlib import Path

from .fullsize import CONFIGS, unet_to_ldm, write_safetensors

ENCODER = ("time_embedding.", "conv_in.", "down_blocks.", "mid_block.", "add_embedding.")


def random_controlnet(config: dict | str = "controlnet-sd1", seed: int = 0, dtype=None):
    """A ControlNetModel from a config (a shipped configs/ folder name or a dict), every weight random: the zero
    convolutions too, so its residuals are not zero (a file as trained, not as initialised)."""
    import torch
    from diffusers import ControlNetModel
    if isinstance(config, str):
        config = json.loads((CONFIGS / config / "config.json").read_text())
    torch.manual_seed(seed)
    model = ControlNetModel.from_config({k: v for k, v in config.items() if not k.startswith("_")})
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("controlnet_down_blocks.", "controlnet_mid_block.",
                                "controlnet_cond_embedding.conv_out")):
                p.copy_(torch.randn_like(p) * 0.02)
    return model.to(dtype or torch.float32).eval()


def to_original(state: dict, config: dict, prefix: str = "control_model.") -> dict:
    """diffusers ControlNetModel tensors -> lllyasviel's original names."""
    encoder = {k: v for k, v in state.items() if k.startswith(ENCODER)}
    unet_like = dict(config, up_block_types=())
    out = {prefix + k: v for k, v in unet_to_ldm(encoder, unet_like).items()}
    blocks = 0
    for key, value in state.items():
        if key.startswith(ENCODER):
            continue
        head, _, rest = key.partition(".")
        if key.startswith("controlnet_cond_embedding.conv_in."):
            name = "input_hint_block.0." + key.rsplit(".", 1)[1]
        elif key.startswith("controlnet_cond_embedding.conv_out."):
            name = None   # after the blocks: its index depends on how many there are
        elif key.startswith("controlnet_cond_embedding.blocks."):
            index = int(key.split(".")[2])
            blocks = max(blocks, index + 1)
            name = f"input_hint_block.{2 * (index + 1)}." + key.rsplit(".", 1)[1]
        elif key.startswith("controlnet_down_blocks."):
            name = f"zero_convs.{key.split('.')[1]}.0." + key.rsplit(".", 1)[1]
        elif key.startswith("controlnet_mid_block."):
            name = "middle_block_out.0." + key.rsplit(".", 1)[1]
        else:
            raise KeyError(f"no original name for {key}")
        if name:
            out[prefix + name] = value
    for end in ("weight", "bias"):
        out[prefix + f"input_hint_block.{2 * (blocks + 1)}.{end}"] = state[f"controlnet_cond_embedding.conv_out.{end}"]
    return out


def write_original(model, path: Path) -> Path:
    """The model as one original-layout .safetensors file (written a tensor at a time)."""
    write_safetensors(path, to_original(model.state_dict(), dict(model.config)))
    return path


def write_folder(model, path: Path) -> Path:
    model.save_pretrained(str(path), safe_serialization=True)
    return path


def random_adapter(seed: int = 0, dtype=None, in_channels: int = 1, channels=(320, 640, 1280, 1280),
                   downscale_factor: int = 8):
    """A T2IAdapter like TencentARC's t2iadapter_canny_sd15v2 (full_adapter, one input channel), random."""
    import torch
    from diffusers import T2IAdapter
    torch.manual_seed(seed)
    model = T2IAdapter(in_channels=in_channels, channels=list(channels), num_res_blocks=2,
                       downscale_factor=downscale_factor, adapter_type="full_adapter")
    return model.to(dtype or torch.float32).eval()


def compare(loaded, written: dict) -> tuple[int, int]:
    """(tensors equal to what was written, tensors loaded) of a loaded model against a diffusers state dict."""
    import torch
    state = loaded.state_dict()
    equal = sum(1 for k, v in state.items() if k in written and torch.equal(v.float(), written[k].float()))
    return equal, len(state)
