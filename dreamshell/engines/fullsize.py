"""Random-weight full-size checkpoints in the ORIGINAL (LDM) key layouts people download (SD 1.5, SD 1.5
inpainting, SD 2.x 768-v, SDXL base), built from the shipped configs (dreamshell/configs/) with diffusers
models and renamed to the original keys; `check` loads one through dreamshell offline (its kind detected,
every tensor compared with what was written, one small image). For the tests and the benchmarks; the
command is scripts/make_fullsize_checkpoints.py (imports torch).

The renaming follows the layouts that diffusers' converters read and write (its
scripts/convert_diffusers_to_original_stable_diffusion.py and convert_diffusers_to_original_sdxl.py);
it is written here from the block structure in the configs, for any number of levels and layers.
"""

from __future__ import annotations

import gc
import json
import struct
import time
from pathlib import Path

CONFIGS = Path(__file__).resolve().parent.parent / "configs"
CHECKPOINTS = {  # file stem -> (shipped config, kind dreamshell must detect, prediction it must run with)
    "sd15": ("sd1", "sd1", None), "sd15-inpaint": ("sd1-inpaint", "sd1-inpaint", None),
    "sd2-768v": ("sd2", "sd2", "v"), "sdxl": ("sdxl", "sdxl", None),
}


# ----- diffusers names -> original names

def unet_prefixes(config: dict) -> list[tuple[str, str]]:
    """(diffusers prefix, original prefix) for every block of a UNet config (SD 1.x/2.x/XL)."""
    n = config["layers_per_block"]
    down, up = config["down_block_types"], config["up_block_types"]
    pairs = [("time_embedding.linear_1.", "time_embed.0."), ("time_embedding.linear_2.", "time_embed.2."),
             ("add_embedding.linear_1.", "label_emb.0.0."), ("add_embedding.linear_2.", "label_emb.0.2."),
             ("conv_in.", "input_blocks.0.0."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2."),
             ("mid_block.resnets.0.", "middle_block.0."), ("mid_block.attentions.0.", "middle_block.1."),
             ("mid_block.resnets.1.", "middle_block.2.")]
    for i, kind in enumerate(down):
        for j in range(n):
            pairs.append((f"down_blocks.{i}.resnets.{j}.", f"input_blocks.{(n + 1) * i + j + 1}.0."))
            pairs.append((f"down_blocks.{i}.attentions.{j}.", f"input_blocks.{(n + 1) * i + j + 1}.1."))
        if i < len(down) - 1:
            pairs.append((f"down_blocks.{i}.downsamplers.0.conv.", f"input_blocks.{(n + 1) * (i + 1)}.0.op."))
    for i, kind in enumerate(up):
        for j in range(n + 1):
            pairs.append((f"up_blocks.{i}.resnets.{j}.", f"output_blocks.{(n + 1) * i + j}.0."))
            pairs.append((f"up_blocks.{i}.attentions.{j}.", f"output_blocks.{(n + 1) * i + j}.1."))
        if i < len(up) - 1:
            slot = 2 if kind.startswith("CrossAttn") else 1
            pairs.append((f"up_blocks.{i}.upsamplers.0.", f"output_blocks.{(n + 1) * i + n}.{slot}."))
    return pairs


RESNET = [("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("norm2.", "out_layers.0."),
          ("conv2.", "out_layers.3."), ("time_emb_proj.", "emb_layers.1."), ("conv_shortcut.", "skip_connection.")]


def _swap_prefix(key: str, pairs: list[tuple[str, str]]) -> tuple[str, str] | None:
    for old, new in pairs:
        if key.startswith(old):
            return old, new
    return None


def unet_to_ldm(state: dict, config: dict) -> dict:
    out = {}
    pairs = unet_prefixes(config)
    for key, value in state.items():
        old, new = _swap_prefix(key, pairs)
        rest = key[len(old):]
        if ".resnets." in old:
            for a, b in RESNET:
                rest = b + rest[len(a):] if rest.startswith(a) else rest
        out[new + rest] = value
    return out


def vae_to_ldm(state: dict, levels: int = 4, layers: int = 2) -> dict:
    pairs = [("encoder.conv_norm_out.", "encoder.norm_out."), ("decoder.conv_norm_out.", "decoder.norm_out.")]
    for part in ("encoder", "decoder"):
        pairs += [(f"{part}.mid_block.resnets.0.", f"{part}.mid.block_1."),
                  (f"{part}.mid_block.resnets.1.", f"{part}.mid.block_2."),
                  (f"{part}.mid_block.attentions.0.", f"{part}.mid.attn_1.")]
    for i in range(levels):
        for j in range(layers):
            pairs.append((f"encoder.down_blocks.{i}.resnets.{j}.", f"encoder.down.{i}.block.{j}."))
        for j in range(layers + 1):
            pairs.append((f"decoder.up_blocks.{i}.resnets.{j}.", f"decoder.up.{levels - 1 - i}.block.{j}."))
        pairs.append((f"encoder.down_blocks.{i}.downsamplers.0.", f"encoder.down.{i}.downsample."))
        pairs.append((f"decoder.up_blocks.{i}.upsamplers.0.", f"decoder.up.{levels - 1 - i}.upsample."))
    attention = [("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")]
    out = {}
    for key, value in state.items():
        found = _swap_prefix(key, pairs)
        if found is None:
            out[key] = value  # conv_in, conv_out, quant_conv, post_quant_conv: the same names
            continue
        old, new = found
        rest = key[len(old):]
        if new.endswith("mid.attn_1."):
            for a, b in attention:
                rest = b + rest[len(a):] if rest.startswith(a) else rest
            if value.ndim == 2:
                value = value.reshape(*value.shape, 1, 1)  # linear -> 1x1 conv
        elif rest.startswith("conv_shortcut."):
            rest = "nin_shortcut." + rest[len("conv_shortcut."):]
        out[new + rest] = value
    return out


def _text_keys(state: dict) -> dict:
    """transformers >= 5.6 drops CLIPTextModel's text_model. prefix; the original layout keeps it."""
    return {(k if k.startswith(("text_model.", "text_projection")) else "text_model." + k): v
            for k, v in state.items()}


def openclip_to_ldm(state: dict) -> dict:
    """A transformers CLIP text model -> OpenCLIP's layout (q/k/v joined, text_projection transposed)."""
    import torch
    state = _text_keys(state)
    out, qkv = {}, {}
    names = [("text_model.embeddings.position_embedding.weight", "positional_embedding"),
             ("text_model.embeddings.token_embedding.weight", "token_embedding.weight"),
             ("text_model.final_layer_norm.", "ln_final.")]
    inner = [("layer_norm1.", "ln_1."), ("layer_norm2.", "ln_2."), ("mlp.fc1.", "mlp.c_fc."), ("mlp.fc2.", "mlp.c_proj."),
             ("self_attn.out_proj.", "attn.out_proj.")]
    for key, value in state.items():
        if key == "text_projection.weight":
            out["text_projection"] = value.T.contiguous()
            continue
        if key.startswith("text_model.encoder.layers."):
            layer, rest = key[len("text_model.encoder.layers."):].split(".", 1)
            if rest.startswith("self_attn.") and rest[len("self_attn."):len("self_attn.") + 6] in ("q_proj", "k_proj", "v_proj"):
                kind, part = rest[len("self_attn."):].split(".", 1)
                qkv.setdefault((layer, part), {})[kind] = value
                continue
            for a, b in inner:
                rest = b + rest[len(a):] if rest.startswith(a) else rest
            out[f"transformer.resblocks.{layer}.{rest}"] = value
            continue
        for a, b in names:
            if key.startswith(a):
                key = b + key[len(a):]
                break
        out[key] = value
    for (layer, part), d in qkv.items():
        out[f"transformer.resblocks.{layer}.attn.in_proj_{part}"] = torch.cat([d["q_proj"], d["k_proj"], d["v_proj"]])
    return out


def ldm_state(parts: dict, kind: str) -> dict:
    """The whole pipeline's tensors under the original keys for its kind."""
    state = {"model.diffusion_model." + k: v for k, v in unet_to_ldm(parts["unet"].state_dict(),
                                                                     dict(parts["unet"].config)).items()}
    state.update({"first_stage_model." + k: v for k, v in vae_to_ldm(parts["vae"].state_dict()).items()})
    if kind.startswith("sdxl"):
        state.update({"conditioner.embedders.0.transformer." + k: v
                      for k, v in _text_keys(parts["text_encoder"].state_dict()).items()})
        state.update({"conditioner.embedders.1.model." + k: v
                      for k, v in openclip_to_ldm(parts["text_encoder_2"].state_dict()).items()})
    elif kind.startswith("sd2"):
        state.update({"cond_stage_model.model." + k: v for k, v in openclip_to_ldm(parts["text_encoder"].state_dict()).items()})
    else:
        state.update({"cond_stage_model.transformer." + k: v
                      for k, v in _text_keys(parts["text_encoder"].state_dict()).items()})
    return state


def extras(kind: str, dtype) -> dict:
    """Tensors real files carry that diffusers does not load (SD 2.x: OpenCLIP's last layer and
    projection), so the files look like the downloads."""
    import torch
    if not kind.startswith("sd2"):
        return {}
    p = "cond_stage_model.model."
    shapes = {"transformer.resblocks.23.attn.in_proj_weight": (3072, 1024), "transformer.resblocks.23.attn.in_proj_bias": (3072,),
              "transformer.resblocks.23.attn.out_proj.weight": (1024, 1024), "transformer.resblocks.23.attn.out_proj.bias": (1024,),
              "transformer.resblocks.23.ln_1.weight": (1024,), "transformer.resblocks.23.ln_1.bias": (1024,),
              "transformer.resblocks.23.ln_2.weight": (1024,), "transformer.resblocks.23.ln_2.bias": (1024,),
              "transformer.resblocks.23.mlp.c_fc.weight": (4096, 1024), "transformer.resblocks.23.mlp.c_fc.bias": (4096,),
              "transformer.resblocks.23.mlp.c_proj.weight": (1024, 4096), "transformer.resblocks.23.mlp.c_proj.bias": (1024,),
              "text_projection": (1024, 1024), "logit_scale": ()}
    return {p + k: (torch.randn(s) * 0.02).to(dtype) for k, s in shapes.items()}


# ----- building and writing

def build_parts(config_kind: str, seed: int, dtype) -> dict:
    """The pipeline's models from a shipped config, with diffusers' own random initialisation."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    folder = CONFIGS / config_kind
    index = json.loads((folder / "model_index.json").read_text())
    parts = {}
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        if not (index.get(name) and index[name][0]):
            continue
        torch.manual_seed(seed + len(parts))
        if name == "unet":
            model = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder / name))
        elif name == "vae":
            model = AutoencoderKL.from_config(AutoencoderKL.load_config(folder / name))
        else:
            cls = CLIPTextModelWithProjection if name == "text_encoder_2" else CLIPTextModel
            model = cls(CLIPTextConfig.from_pretrained(folder / name))
        parts[name] = model.to(dtype).eval()
    return parts


DTYPES = {"F16": 2, "F32": 4, "BF16": 2}


def write_safetensors(path: Path, state: dict) -> None:
    """A .safetensors file written one tensor at a time (no second copy of the whole model in memory)."""
    import torch
    names = {torch.float16: "F16", torch.float32: "F32", torch.bfloat16: "BF16"}
    header, offset = {}, 0
    for key in sorted(state):
        t = state[key]
        size = t.numel() * t.element_size()
        header[key] = {"dtype": names[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    tmp = path.with_suffix(".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for key in sorted(state):
            f.write(state[key].detach().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    tmp.rename(path)


def write_checkpoint(stem: str, out: Path, seed: int = 0) -> Path:
    import torch
    config_kind = CHECKPOINTS[stem][0]
    path = out / f"{stem}-random.safetensors"
    if path.exists():
        return path
    t = time.time()
    parts = build_parts(config_kind, seed, torch.float16)
    state = {**ldm_state(parts, config_kind), **extras(config_kind, torch.float16)}
    write_safetensors(path, state)
    print(f"{stem}: wrote {path} ({path.stat().st_size / 1e9:.2f} GB, {len(state)} tensors) in {time.time() - t:.0f} s",
          flush=True)
    del parts, state
    gc.collect()
    return path


# ----- loading it back with dreamshell

def loaded_as_ldm(pipe, kind: str) -> dict:
    """The resident pipeline's tensors under the original keys (the same renaming as writing)."""
    parts = {n: getattr(pipe, n) for n in ("unet", "vae", "text_encoder", "text_encoder_2") if getattr(pipe, n, None)}
    return ldm_state(parts, kind)


def check(path: Path, stem: str, size: int = 64, steps: int = 2) -> dict:
    """Load with dreamshell offline, detect, compare every loaded tensor, make one image."""
    import torch
    from safetensors import safe_open

    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.line.request import DreamRequest
    from dreamshell.weights.models import spec_for_path
    config_kind, want, prediction = CHECKPOINTS[stem]
    spec = spec_for_path(path)
    result = {"file": str(path), "detected_without_torch": spec.kind, "prediction": spec.prediction}
    t = time.time()
    g = DiffusersGenerator(device="cpu", precision="float32")
    g.load(spec)
    result.update(load_s=round(time.time() - t, 1), detected_by_engine=g.kind,
                  scheduler_prediction=g._pipes["txt2img"].scheduler.config.prediction_type)
    loaded = loaded_as_ldm(g._pipes["txt2img"], config_kind)
    equal = 0
    with safe_open(str(path), framework="pt") as f:
        written = set(f.keys())
        for key, value in loaded.items():
            if key in written and torch.equal(f.get_tensor(key).float(), value.float()):
                equal += 1
    result.update(tensors_written=len(written), tensors_loaded=len(loaded), loaded_equal_to_written=equal,
                  written_not_loaded=sorted(written - set(loaded))[:3], n_written_not_loaded=len(written - set(loaded)))
    t = time.time()
    request = DreamRequest("a red circle", steps=steps, seed=1, width=size, height=size, cfg_scale=spec.cfg_scale,
                           sampler="ddim", model=spec.name)
    image = g.generate(request)
    result.update(image=list(image.size), image_s=round(time.time() - t, 1),
                  ok=(spec.kind == want == g.kind and equal == len(loaded) and image.size == (size, size)
                      and result["scheduler_prediction"] == ("v_prediction" if prediction == "v" else "epsilon")))
    return result
