#!/usr/bin/env python
"""Write the diffusers configs that single-file SD 1.x / 2.x / SDXL checkpoints load with, offline.

`from_single_file(path, config=<folder>)` needs a folder with the JSON configs and tokenizer files
that `save_pretrained` writes (no weights); without it diffusers asks the Hub. This writes
dreamshell/configs/{sd1,sd1-inpaint,sd2,sd2-base,sd2-inpaint,sdxl,sdxl-refiner,sdxl-inpaint}/
(JSON only) and dreamshell/configs/clip_tokenizer/ (CLIP's BPE
vocabulary, derived from open_clip's bpe_simple_vocab_16e6.txt.gz the way CLIP builds it: 49,408
tokens). At load time dreamshell copies the tokenizer files into each config's tokenizer folders.

    pip download --no-deps -d /tmp/oc open-clip-torch
    python scripts/make_sd_configs.py --open_clip_wheel /tmp/oc/open_clip_torch-*.whl
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from dreamshell.demo.tokenizer import bytes_to_unicode  # noqa: E402

OUT = ROOT / "dreamshell" / "configs"
V = "0.30.0"
BETAS = dict(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", num_train_timesteps=1000)

SD_VAE = dict(_class_name="AutoencoderKL", _diffusers_version=V, act_fn="silu",
              block_out_channels=[128, 256, 512, 512], down_block_types=["DownEncoderBlock2D"] * 4,
              in_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32, out_channels=3,
              sample_size=512, scaling_factor=0.18215, up_block_types=["UpDecoderBlock2D"] * 4)
SD_UNET = dict(_class_name="UNet2DConditionModel", _diffusers_version=V, act_fn="silu", attention_head_dim=8,
               block_out_channels=[320, 640, 1280, 1280], center_input_sample=False, cross_attention_dim=768,
               down_block_types=["CrossAttnDownBlock2D"] * 3 + ["DownBlock2D"], downsample_padding=1,
               flip_sin_to_cos=True, freq_shift=0, in_channels=4, layers_per_block=2, mid_block_scale_factor=1,
               norm_eps=1e-05, norm_num_groups=32, out_channels=4, sample_size=64,
               up_block_types=["UpBlock2D"] + ["CrossAttnUpBlock2D"] * 3)
CLIP_L = dict(architectures=["CLIPTextModel"], model_type="clip_text_model", attention_dropout=0.0,
              bos_token_id=0, eos_token_id=2, pad_token_id=1, hidden_act="quick_gelu", hidden_size=768,
              initializer_factor=1.0, initializer_range=0.02, intermediate_size=3072, layer_norm_eps=1e-05,
              max_position_embeddings=77, num_attention_heads=12, num_hidden_layers=12, projection_dim=768,
              torch_dtype="float32", vocab_size=49408)
OPENCLIP_H = dict(CLIP_L, hidden_act="gelu", hidden_size=1024, intermediate_size=4096, num_attention_heads=16,
                  num_hidden_layers=23, projection_dim=512)
OPENCLIP_BIGG = dict(CLIP_L, architectures=["CLIPTextModelWithProjection"], hidden_act="gelu", hidden_size=1280,
                     intermediate_size=5120, num_attention_heads=20, num_hidden_layers=32, projection_dim=1280)


def tokenizer_config(pad: str) -> dict:
    return {"tokenizer_class": "CLIPTokenizer", "model_max_length": 77, "bos_token": "<|startoftext|>",
            "eos_token": "<|endoftext|>", "unk_token": "<|endoftext|>", "pad_token": pad, "do_lower_case": True,
            "clean_up_tokenization_spaces": True, "errors": "replace"}


def kinds() -> dict[str, dict]:
    pndm = dict(BETAS, _class_name="PNDMScheduler", _diffusers_version=V, set_alpha_to_one=False,
                skip_prk_steps=True, steps_offset=1, clip_sample=False, prediction_type="epsilon")
    sd1 = {
        "model_index.json": {"_class_name": "StableDiffusionPipeline", "_diffusers_version": V,
                             "feature_extractor": [None, None], "safety_checker": [None, None],
                             "requires_safety_checker": False, "image_encoder": [None, None],
                             "scheduler": ["diffusers", "PNDMScheduler"],
                             "text_encoder": ["transformers", "CLIPTextModel"],
                             "tokenizer": ["transformers", "CLIPTokenizer"],
                             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]},
        "scheduler/scheduler_config.json": pndm,
        "text_encoder/config.json": CLIP_L,
        "tokenizer/tokenizer_config.json": tokenizer_config("<|endoftext|>"),
        "unet/config.json": SD_UNET,
        "vae/config.json": SD_VAE,
    }
    sd2 = {
        **sd1,
        "model_index.json": dict(sd1["model_index.json"], scheduler=["diffusers", "DDIMScheduler"]),
        "scheduler/scheduler_config.json": dict(BETAS, _class_name="DDIMScheduler", _diffusers_version=V,
                                                clip_sample=False, set_alpha_to_one=False, steps_offset=1,
                                                prediction_type="v_prediction"),
        "text_encoder/config.json": OPENCLIP_H,
        "tokenizer/tokenizer_config.json": tokenizer_config("!"),
        "unet/config.json": dict(SD_UNET, attention_head_dim=[5, 10, 20, 20], cross_attention_dim=1024,
                                 use_linear_projection=True, upcast_attention=True, sample_size=96),
        "vae/config.json": dict(SD_VAE, sample_size=768),
    }
    sdxl = {
        "model_index.json": {"_class_name": "StableDiffusionXLPipeline", "_diffusers_version": V,
                             "force_zeros_for_empty_prompt": True, "feature_extractor": [None, None],
                             "image_encoder": [None, None], "scheduler": ["diffusers", "EulerDiscreteScheduler"],
                             "text_encoder": ["transformers", "CLIPTextModel"],
                             "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                             "tokenizer": ["transformers", "CLIPTokenizer"],
                             "tokenizer_2": ["transformers", "CLIPTokenizer"],
                             "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"]},
        "scheduler/scheduler_config.json": dict(BETAS, _class_name="EulerDiscreteScheduler", _diffusers_version=V,
                                                interpolation_type="linear", prediction_type="epsilon",
                                                steps_offset=1, timestep_spacing="leading",
                                                use_karras_sigmas=False, set_alpha_to_one=False,
                                                skip_prk_steps=True, clip_sample=False, sample_max_value=1.0),
        "text_encoder/config.json": CLIP_L,
        "text_encoder_2/config.json": OPENCLIP_BIGG,
        "tokenizer/tokenizer_config.json": tokenizer_config("<|endoftext|>"),
        "tokenizer_2/tokenizer_config.json": tokenizer_config("!"),
        "unet/config.json": dict(SD_UNET, addition_embed_type="text_time", addition_time_embed_dim=256,
                                 attention_head_dim=[5, 10, 20], block_out_channels=[320, 640, 1280],
                                 cross_attention_dim=2048,
                                 down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
                                 up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "UpBlock2D"],
                                 projection_class_embeddings_input_dim=2816, sample_size=128,
                                 transformer_layers_per_block=[1, 2, 10], use_linear_projection=True),
        "vae/config.json": dict(SD_VAE, sample_size=1024, scaling_factor=0.13025, force_upcast=True),
    }
    return {"sd1": sd1, "sd2": sd2, "sdxl": sdxl, **variants(sd1, sd2, sdxl)}


def _inpaint(files: dict, pipeline: str) -> dict:
    """The same model with a 9-channel UNet (4 latent + 1 mask + 4 masked-image latent channels)."""
    return {**files, "model_index.json": dict(files["model_index.json"], _class_name=pipeline),
            "unet/config.json": dict(files["unet/config.json"], in_channels=9)}


def variants(sd1: dict, sd2: dict, sdxl: dict) -> dict[str, dict]:
    """Inpainting UNets, SD 2.x base (epsilon, 512) and the SDXL refiner."""
    sd2_base = {**sd2, "scheduler/scheduler_config.json": dict(sd2["scheduler/scheduler_config.json"],
                                                                prediction_type="epsilon"),
                "unet/config.json": dict(sd2["unet/config.json"], sample_size=64),
                "vae/config.json": dict(sd2["vae/config.json"], sample_size=512)}
    refiner = {
        "model_index.json": dict(sdxl["model_index.json"], _class_name="StableDiffusionXLImg2ImgPipeline",
                                 force_zeros_for_empty_prompt=False, requires_aesthetics_score=True,
                                 text_encoder=[None, None], tokenizer=[None, None]),
        "scheduler/scheduler_config.json": sdxl["scheduler/scheduler_config.json"],
        "text_encoder_2/config.json": sdxl["text_encoder_2/config.json"],
        "tokenizer_2/tokenizer_config.json": sdxl["tokenizer_2/tokenizer_config.json"],
        "unet/config.json": dict(sdxl["unet/config.json"], attention_head_dim=[6, 12, 24, 24],
                                 block_out_channels=[384, 768, 1536, 1536], cross_attention_dim=1280,
                                 down_block_types=["DownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                                   "DownBlock2D"],
                                 up_block_types=["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                                                 "UpBlock2D"],
                                 projection_class_embeddings_input_dim=2560, transformer_layers_per_block=4),
        "vae/config.json": sdxl["vae/config.json"],
    }
    return {"sd1-inpaint": _inpaint(sd1, "StableDiffusionInpaintPipeline"), "sd2-base": sd2_base,
            "sd2-inpaint": _inpaint(sd2_base, "StableDiffusionInpaintPipeline"),
            "sdxl-refiner": refiner, "sdxl-inpaint": _inpaint(sdxl, "StableDiffusionXLInpaintPipeline")}


def clip_vocab(bpe_gz: bytes) -> tuple[dict[str, int], list[str]]:
    """CLIP's vocabulary and merges from bpe_simple_vocab_16e6.txt.gz (openai/CLIP simple_tokenizer.py)."""
    merges = gzip.decompress(bpe_gz).decode("utf-8").split("\n")
    merges = merges[1:49152 - 256 - 2 + 1]
    vocab = list(bytes_to_unicode().values())
    vocab = vocab + [v + "</w>" for v in vocab]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {t: i for i, t in enumerate(vocab)}, merges


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--open_clip_wheel", type=Path, help="open_clip_torch wheel holding bpe_simple_vocab_16e6.txt.gz")
    args = ap.parse_args()
    for kind, files in kinds().items():
        for rel, data in files.items():
            path = OUT / kind / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
    if args.open_clip_wheel:
        with zipfile.ZipFile(args.open_clip_wheel) as z:
            name = next(n for n in z.namelist() if n.endswith("bpe_simple_vocab_16e6.txt.gz"))
            vocab, merges = clip_vocab(z.read(name))
        tok = OUT / "clip_tokenizer"
        tok.mkdir(parents=True, exist_ok=True)
        (tok / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False) + "\n", encoding="utf-8")
        (tok / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
        print(f"CLIP vocabulary: {len(vocab)} tokens, {len(merges)} merges")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
