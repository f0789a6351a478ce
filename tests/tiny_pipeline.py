"""A tiny random Stable Diffusion 1.x pipeline in diffusers format, for tests that need any model."""

from __future__ import annotations

from pathlib import Path


def make_tiny_pipeline(folder: Path, seed: int = 0) -> Path:
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from dreamshell.demo.shapes import vocabulary_words
    from dreamshell.demo.tokenizer import write_tokenizer

    torch.manual_seed(seed)
    tok_dir = folder / "_tok"
    vocab = write_tokenizer(tok_dir, vocabulary_words())
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir, local_files_only=True)
    unet = UNet2DConditionModel(sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
                                block_out_channels=(8, 16), norm_num_groups=4, cross_attention_dim=16,
                                attention_head_dim=4,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"))
    vae = AutoencoderKL(block_out_channels=(8, 8), norm_num_groups=4, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=1,
                                        num_attention_heads=2, max_position_embeddings=77,
                                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id))
    sched = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True, steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    out = folder / "tiny-sd"
    pipe.save_pretrained(out, safe_serialization=True)
    return out


def make_tiny_sd1_single_file(folder: Path, seed: int = 0, in_channels: int = 4) -> tuple[Path, Path]:
    """A tiny pipeline shaped like SD 1.x (4 levels, 2 layers a block), written as one original-layout
    (LDM) .safetensors file, plus its config folder (JSON and tokenizer, no weights); the same
    pipeline in diffusers format is left in folder/diffusers."""
    import torch
    from diffusers import AutoencoderKL, PNDMScheduler, StableDiffusionPipeline, UNet2DConditionModel
    from safetensors.torch import save_file
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

    from dreamshell.demo.shapes import vocabulary_words
    from dreamshell.demo.tokenizer import write_tokenizer

    torch.manual_seed(seed)
    vocab = write_tokenizer(folder / "_tok", vocabulary_words())
    tokenizer = CLIPTokenizer.from_pretrained(folder / "_tok", local_files_only=True)
    unet = UNet2DConditionModel(sample_size=8, block_out_channels=(8, 8, 16, 16), layers_per_block=2, in_channels=in_channels,
                                norm_num_groups=4, cross_attention_dim=16, attention_head_dim=2)
    vae = AutoencoderKL(block_out_channels=(8, 8, 8, 8), layers_per_block=2, norm_num_groups=4, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4)
    text = CLIPTextModel(CLIPTextConfig(vocab_size=vocab, hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                                        num_attention_heads=2, max_position_embeddings=77,
                                        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                                        pad_token_id=tokenizer.pad_token_id))
    sched = PNDMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", skip_prk_steps=True,
                          steps_offset=1)
    pipe = StableDiffusionPipeline(vae=vae, text_encoder=text, tokenizer=tokenizer, unet=unet, scheduler=sched,
                                   safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    import shutil
    pipe.save_pretrained(folder / "diffusers", safe_serialization=True)
    config = folder / "config"
    shutil.copytree(folder / "diffusers", config, ignore=shutil.ignore_patterns("*.safetensors"))
    state = {"model.diffusion_model." + k: v for k, v in _unet_to_ldm(unet.state_dict()).items()}
    state.update({"first_stage_model." + k: v for k, v in _vae_to_ldm(vae.state_dict()).items()})
    # the original layout keeps CLIP's text_model. prefix (transformers >= 5.6 drops it from CLIPTextModel)
    state.update({"cond_stage_model.transformer." + (k if k.startswith("text_model.") else "text_model." + k): v
                  for k, v in text.state_dict().items()})
    path = folder / ("tiny-sd1.safetensors" if in_channels == 4 else f"tiny-sd1-{in_channels}ch.safetensors")
    save_file({k: v.contiguous() for k, v in state.items()}, str(path))
    return path, config


def _rename(state: dict, pairs: list[tuple[str, str]]) -> dict:
    out = {}
    for key, value in state.items():
        for diffusers_part, ldm_part in pairs:
            key = key.replace(diffusers_part, ldm_part)
        out[key] = value
    return out


def _unet_to_ldm(state: dict) -> dict:
    """Diffusers UNet keys -> the original repository's (SD 1.x layout: 4 levels, 2 resnets a level)."""
    pairs = [("time_embedding.linear_1.", "time_embed.0."), ("time_embedding.linear_2.", "time_embed.2."),
             ("conv_in.", "input_blocks.0.0."), ("conv_norm_out.", "out.0."), ("conv_out.", "out.2.")]
    for level in range(4):
        for j in range(2):
            pairs.append((f"down_blocks.{level}.resnets.{j}.", f"input_blocks.{3 * level + j + 1}.0."))
            pairs.append((f"down_blocks.{level}.attentions.{j}.", f"input_blocks.{3 * level + j + 1}.1."))
        for j in range(3):
            pairs.append((f"up_blocks.{level}.resnets.{j}.", f"output_blocks.{3 * level + j}.0."))
            pairs.append((f"up_blocks.{level}.attentions.{j}.", f"output_blocks.{3 * level + j}.1."))
        pairs.append((f"down_blocks.{level}.downsamplers.0.conv.", f"input_blocks.{3 * level + 3}.0.op."))
        pairs.append((f"up_blocks.{level}.upsamplers.0.", f"output_blocks.{3 * level + 2}.{1 if level == 0 else 2}."))
    pairs += [("mid_block.attentions.0.", "middle_block.1."), ("mid_block.resnets.0.", "middle_block.0."),
              ("mid_block.resnets.1.", "middle_block.2.")]
    resnet = [("norm1", "in_layers.0"), ("conv1", "in_layers.2"), ("norm2", "out_layers.0"),
              ("conv2", "out_layers.3"), ("time_emb_proj", "emb_layers.1"), ("conv_shortcut", "skip_connection")]
    state = {(_rename({k: None}, resnet).popitem()[0] if ".resnets." in k else k): v for k, v in state.items()}
    return _rename(state, pairs)


def _vae_to_ldm(state: dict) -> dict:
    """Diffusers VAE keys -> the original's (4 levels; decoder levels numbered in reverse)."""
    pairs = [("conv_shortcut", "nin_shortcut"), ("conv_norm_out", "norm_out"), ("mid_block.attentions.0.", "mid.attn_1.")]
    for level in range(4):
        for j in range(2):
            pairs.append((f"encoder.down_blocks.{level}.resnets.{j}.", f"encoder.down.{level}.block.{j}."))
        for j in range(3):
            pairs.append((f"decoder.up_blocks.{level}.resnets.{j}.", f"decoder.up.{3 - level}.block.{j}."))
        pairs.append((f"down_blocks.{level}.downsamplers.0.", f"down.{level}.downsample."))
        pairs.append((f"up_blocks.{level}.upsamplers.0.", f"up.{3 - level}.upsample."))
    pairs += [("mid_block.resnets.0.", "mid.block_1."), ("mid_block.resnets.1.", "mid.block_2.")]
    out = {}
    attn = [("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")]
    for key, value in _rename(state, pairs).items():
        if "mid.attn_1." in key:
            key = _rename({key: None}, attn).popitem()[0]
            if value.ndim == 2:
                value = value.reshape(*value.shape, 1, 1)  # linear -> 1x1 conv
        out[key] = value
    return out
