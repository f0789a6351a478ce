"""Random-weight files in the layouts people download for SD 3 / 3.5, FLUX.1 and SDXL variants, full size or
tiny (imports torch when it writes): the writers behind scripts/make_family_checkpoints.py (full-size files for
bench/bench_families.py, never in the repository) and the tiny files the tests run end to end."""

from __future__ import annotations

import json
import shutil
import struct
import time
from pathlib import Path

from . import family_layouts as layouts

ROOT = Path(__file__).resolve().parent.parent.parent
CONFIGS = ROOT / "dreamshell" / "configs"
SAFETENSORS_DTYPES = {"F16": 2, "BF16": 2, "F32": 4}


# ----- writing

def _value(name: str, shape, dtype, gen):
    """A random tensor for a key: norms and scales at 1, everything else small normal noise."""
    import torch
    if len(shape) == 1 and any(p in name for p in ("norm", ".scale", "ln_q", "ln_k", "layer_norm")) \
            and not name.endswith(".bias"):
        return torch.ones(shape, dtype=dtype)
    if not shape or 0 in shape:
        return torch.zeros(shape, dtype=dtype)
    return (torch.randn(shape, generator=gen) * 0.02).to(dtype)


def write_random_safetensors(path: Path, shapes: dict, dtype: str = "F16", metadata: dict | None = None,
                             seed: int = 0, values: dict | None = None) -> Path:
    """A .safetensors file of random tensors with these names and shapes, made and written one at a time
    (a 10 GB file needs one tensor in memory, not ten gigabytes). `values` gives fixed tensors."""
    import torch
    torch_dtype = {"F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32}[dtype]
    values = values or {}
    header, offset = {}, 0
    if metadata:
        header["__metadata__"] = metadata
    order = sorted(shapes)
    for key in order:
        n = SAFETENSORS_DTYPES[dtype]
        for d in shapes[key]:
            n *= d
        header[key] = {"dtype": dtype, "shape": list(shapes[key]), "data_offsets": [offset, offset + n]}
        offset += n
    blob = json.dumps(header, separators=(",", ":")).encode()
    blob += b" " * (-len(blob) % 8)
    gen = torch.Generator().manual_seed(seed)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        for key in order:
            t = values.get(key)
            t = _value(key, shapes[key], torch_dtype, gen) if t is None else t.to(torch_dtype)
            f.write(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    tmp.rename(path)
    return path


def write_random_gguf(path: Path, shapes: dict, quant: str = "Q4_0", arch: str = "flux", seed: int = 0) -> Path:
    """A GGUF file as ComfyUI-GGUF's convert.py writes a transformer: 2-D weights quantised, biases and
    norm scales in float32; tensors made, quantised and written one at a time."""
    import numpy as np
    import torch
    from gguf import GGMLQuantizationType, GGUFWriter
    from gguf.quants import quant_shape_to_byte_shape, quantize

    qt = GGMLQuantizationType[quant]
    writer = GGUFWriter(str(path.with_name(path.name + ".tmp")), arch)
    writer.add_quantization_version(2)
    writer.add_file_type({"Q4_0": 2, "Q8_0": 7, "F16": 1}.get(quant, 0))
    order = list(shapes)
    plan = {}
    for key in order:
        shape = tuple(shapes[key])
        if len(shape) == 2 and shape[-1] % 32 == 0 and qt not in (GGMLQuantizationType.F16,):
            byte_shape = quant_shape_to_byte_shape(shape, qt)
            writer.add_tensor_info(key, byte_shape, np.dtype(np.uint8), int(np.prod(byte_shape)), raw_dtype=qt)
            plan[key] = qt
        else:
            writer.add_tensor_info(key, shape, np.dtype(np.float32), int(np.prod(shape)) * 4)
            plan[key] = None
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    gen = torch.Generator().manual_seed(seed)
    for key in order:
        t = _value(key, tuple(shapes[key]), torch.float32, gen).numpy()
        writer.write_tensor_data(quantize(t, plan[key]) if plan[key] is not None else t)
    writer.close()
    path.with_name(path.name + ".tmp").rename(path)
    return path


# ----- what to write

def full_size(name: str, out: Path) -> Path:
    t = time.time()
    if name == "sdxl-vpred":
        path = out / "sdxl-vpred-ztsnr-random.safetensors"
        if not path.exists():
            import torch
            from dreamshell.engines.fullsize import build_parts, ldm_state
            parts = build_parts("sdxl", 0, torch.float16)
            state = ldm_state(parts, "sdxl")
            del parts
            state.update({"v_pred": torch.tensor([]), "ztsnr": torch.tensor([])})
            meta = {"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "stable-diffusion-xl-v1-base",
                    "modelspec.implementation": "sgm", "modelspec.title": "Random SDXL v-pred ztsnr",
                    "modelspec.prediction_type": "v"}
            write_random_safetensors(path, {k: tuple(v.shape) for k, v in state.items()}, "F16", meta,
                                     values=state)
    elif name in ("sd35m", "sd35m-clips"):
        path = out / ("sd3.5_medium-random.safetensors" if name == "sd35m" else "sd3.5_medium_incl_clips-random.safetensors")
        if not path.exists():
            encoders = ("clip_l", "clip_g") if name == "sd35m-clips" else ()
            write_random_safetensors(path, layouts.sd3_single_file("sd35-medium", encoders), "F16", seed=1)
    elif name == "flux-schnell-q4":
        path = out / "flux1-schnell-Q4_0-random.gguf"
        if not path.exists():
            write_random_gguf(path, layouts.flux_transformer(False), "Q4_0", seed=2)
    elif name == "clip_l":
        path = out / "clip_l.safetensors"
        if not path.exists():
            write_random_safetensors(path, layouts.clip_text(768, 12), "F16", seed=3)
    elif name == "clip_g":
        path = out / "clip_g.safetensors"
        if not path.exists():
            write_random_safetensors(path, layouts.clip_text(1280, 32), "F16", seed=4)
    elif name == "t5xxl":
        path = out / "t5xxl_fp16.safetensors"
        if not path.exists():
            write_random_safetensors(path, layouts.t5_encoder(), "F16", seed=5)
    elif name == "ae":
        path = out / "ae.safetensors"
        if not path.exists():
            write_random_safetensors(path, layouts.ldm_vae(), "F32", seed=6)
    else:
        raise SystemExit(f"unknown file {name}")
    print(f"{name}: {path} ({path.stat().st_size / 1e9:.2f} GB) in {time.time() - t:.0f} s", flush=True)
    return path


FULL = ("sdxl-vpred", "sd35m", "sd35m-clips", "clip_l", "clip_g", "ae", "t5xxl", "flux-schnell-q4")


# ----- tiny: the same layouts at toy widths, with configs to match

TINY_CLIP_L = dict(hidden_size=16, intermediate_size=64, num_attention_heads=2, num_hidden_layers=2,
                   projection_dim=16, max_position_embeddings=77)
TINY_CLIP_G = dict(hidden_size=32, intermediate_size=128, num_attention_heads=2, num_hidden_layers=2,
                   projection_dim=32, max_position_embeddings=77)
TINY_T5 = dict(d_model=64, d_kv=16, num_heads=4, num_layers=2, num_decoder_layers=2, d_ff=128)
TINY_VAE = dict(block_out_channels=[8, 16], down_block_types=["DownEncoderBlock2D"] * 2,
                up_block_types=["UpDecoderBlock2D"] * 2, layers_per_block=1, norm_num_groups=4, sample_size=32)


def tiny_config(kind: str, out: Path) -> Path:
    """The shipped config of `kind` at toy widths (same classes, same schedules)."""
    src = CONFIGS / kind
    folder = out / f"config-{kind}"
    shutil.rmtree(folder, ignore_errors=True)
    shutil.copytree(src, folder)

    def edit(rel, **changes):
        p = folder / rel
        p.write_text(json.dumps({**json.loads(p.read_text()), **changes}, indent=2))
    edit("vae/config.json", **TINY_VAE)
    if kind.startswith("sd3"):
        edit("text_encoder/config.json", **TINY_CLIP_L)
        edit("text_encoder_2/config.json", **TINY_CLIP_G)
        edit("text_encoder_3/config.json", **TINY_T5)
        edit("transformer/config.json", attention_head_dim=8, num_attention_heads=2, caption_projection_dim=16,
             joint_attention_dim=64, pooled_projection_dim=48, pos_embed_max_size=16, sample_size=16)
    else:
        edit("text_encoder/config.json", **TINY_CLIP_L)
        edit("text_encoder_2/config.json", **TINY_T5)
        edit("transformer/config.json", attention_head_dim=16, num_attention_heads=2, joint_attention_dim=64,
             pooled_projection_dim=16, axes_dims_rope=[4, 6, 6])
    return folder


def tiny_files(out: Path) -> dict[str, Path]:
    """Tiny files: an SD 3.5 Medium single file in the original layout (24 blocks, 13 with dual
    attention, 16 wide) with and without CLIPs, FLUX.1 schnell and dev transformers (19 + 38 blocks,
    32 wide, diffusers names: diffusers' converter of the original names assumes 3072) as safetensors
    and GGUF, and ComfyUI-layout CLIP-L, CLIP-G, T5 and VAE files."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"sd35-medium-config": tiny_config("sd35-medium", out), "flux-schnell-config": tiny_config("flux-schnell", out),
             "flux-dev-config": tiny_config("flux-dev", out)}
    sd3 = layouts.sd3_transformer(width=16, depth=24, pos=16, dual=tuple(range(13)), head_dim=8, context=64, pooled=48)
    vae = layouts.ldm_vae(channels=(8, 16), layers=1, prefix="first_stage_model.")
    clips = {**layouts.clip_text(16, 2, prefix="text_encoders.clip_l.transformer."),
             **layouts.clip_text(32, 2, prefix="text_encoders.clip_g.transformer.")}
    files["sd35-medium"] = write_random_safetensors(out / "sd35m-tiny.safetensors", {**sd3, **vae}, "F32", seed=1)
    files["sd35-medium-clips"] = write_random_safetensors(out / "sd35m-clips-tiny.safetensors",
                                                          {**sd3, **vae, **clips}, "F32", seed=1)
    files["clip_l"] = write_random_safetensors(out / "clip_l.safetensors", layouts.clip_text(16, 2), "F32", seed=3)
    files["clip_g"] = write_random_safetensors(out / "clip_g.safetensors", layouts.clip_text(32, 2), "F32", seed=4)
    files["t5xxl"] = write_random_safetensors(out / "t5xxl.safetensors",
                                              layouts.t5_encoder(width=64, blocks=2, ff=128, heads=4, head_dim=16),
                                              "F32", seed=5)
    files["ae"] = write_random_safetensors(out / "ae.safetensors", layouts.ldm_vae(channels=(8, 16), layers=1), "F32",
                                           seed=6)
    for kind in ("flux-schnell", "flux-dev"):
        shapes = tiny_flux_diffusers(files[f"{kind}-config"], guidance=kind == "flux-dev")
        files[kind] = write_random_safetensors(out / f"{kind}-tiny.safetensors", shapes, "F32", seed=2)
        files[kind + "-gguf"] = write_random_gguf(out / f"{kind}-tiny-Q8_0.gguf", shapes, "Q8_0", seed=2)
    files["sdxl-playground"], files["sdxl-playground-config"] = tiny_playground(out)
    return files


def tiny_playground(out: Path) -> tuple[Path, Path]:
    """A tiny Playground v2.5 single file (SDXL's original layout with edm_mean/edm_std, two levels, toy
    widths) and its config: the shipped sdxl-playground one, shrunk."""
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection
    from dreamshell.engines.fullsize import _text_keys, openclip_to_ldm, unet_to_ldm, vae_to_ldm
    config = out / "config-sdxl-playground"
    shutil.rmtree(config, ignore_errors=True)
    shutil.copytree(CONFIGS / "sdxl-playground", config)

    def edit(rel, **changes):
        p = config / rel
        p.write_text(json.dumps({**json.loads(p.read_text()), **changes}, indent=2))
    edit("unet/config.json", block_out_channels=[32, 64], attention_head_dim=[2, 4],
         down_block_types=["DownBlock2D", "CrossAttnDownBlock2D"], up_block_types=["CrossAttnUpBlock2D", "UpBlock2D"],
         transformer_layers_per_block=[1, 1], layers_per_block=1, norm_num_groups=8, cross_attention_dim=48,
         addition_time_embed_dim=8, projection_class_embeddings_input_dim=80, sample_size=8)
    edit("vae/config.json", **TINY_VAE, latent_channels=4)
    edit("text_encoder/config.json", **TINY_CLIP_L)
    edit("text_encoder_2/config.json", **TINY_CLIP_G)
    torch.manual_seed(0)
    unet = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(config / "unet"))
    vae = AutoencoderKL.from_config(AutoencoderKL.load_config(config / "vae"))
    te = CLIPTextModel(CLIPTextConfig.from_pretrained(config / "text_encoder"))
    te2 = CLIPTextModelWithProjection(CLIPTextConfig.from_pretrained(config / "text_encoder_2"))
    state = {"model.diffusion_model." + k: v for k, v in unet_to_ldm(unet.state_dict(), dict(unet.config)).items()}
    state.update({"first_stage_model." + k: v for k, v in vae_to_ldm(vae.state_dict(), levels=2, layers=1).items()})
    state.update({"conditioner.embedders.0.transformer." + k: v for k, v in _text_keys(te.state_dict()).items()})
    state.update({"conditioner.embedders.1.model." + k: v for k, v in openclip_to_ldm(te2.state_dict()).items()})
    stats = json.loads((CONFIGS / "sdxl-playground" / "vae" / "config.json").read_text())
    state["edm_mean"] = torch.tensor(stats["latents_mean"]).reshape(1, 4, 1, 1)
    state["edm_std"] = torch.tensor(stats["latents_std"]).reshape(1, 4, 1, 1)
    path = write_random_safetensors(out / "playground-tiny.safetensors", {k: tuple(v.shape) for k, v in state.items()},
                                    "F32", values=state)
    return path, config


def tiny_flux_diffusers(config: Path, guidance: bool) -> dict:
    """FluxTransformer2DModel's own names and shapes at the tiny config, but FLUX.1's 19 + 38 blocks."""
    from accelerate import init_empty_weights
    from diffusers import FluxTransformer2DModel
    cfg = json.loads((config / "transformer" / "config.json").read_text())
    cfg.update(guidance_embeds=guidance)
    with init_empty_weights():
        model = FluxTransformer2DModel.from_config(cfg)
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}
