#!/usr/bin/env python
"""Write the diffusers configs that single-file SD 1.x / 2.x / SDXL / Playground v2.5 / SD 3 / 3.5 and
FLUX.1 checkpoints load with, offline.

`from_single_file(path, config=<folder>)` needs a folder with the JSON configs and tokenizer files
that `save_pretrained` writes (no weights); without it diffusers asks the Hub. This writes
dreamshell/configs/{sd1,sd1-inpaint,sd2,sd2-base,sd2-inpaint,sdxl,sdxl-refiner,sdxl-inpaint}/
(JSON only) and dreamshell/configs/clip_tokenizer/ (CLIP's BPE
vocabulary, derived from open_clip's bpe_simple_vocab_16e6.txt.gz the way CLIP builds it: 49,408
tokens). At load time dreamshell copies the tokenizer files into each config's tokenizer folders.

    pip download --no-deps -d /tmp/oc open-clip-torch
    python scripts/make_sd_configs.py --open_clip_wheel /tmp/oc/open_clip_torch-*.whl

The new families' values are the published ones: the model_index.json, scheduler, transformer, VAE and
text-encoder configs of playgroundai/playground-v2.5-1024px-aesthetic, stabilityai/stable-diffusion-3-
medium-diffusers, stable-diffusion-3.5-medium / -large, black-forest-labs/FLUX.1-dev / -schnell (as the
Forge repository keeps copies of them under backend/huggingface/). The T5 tokenizer (google/t5-v1_1-xxl's
SentencePiece vocabulary as tokenizer.json, the file SD 3 and FLUX.1 use) is on the registry inside the
diffsynth 1.x wheels (diffsynth/tokenizer_configs/stable_diffusion_3/tokenizer_3/, byte-identical to
stable-diffusion-3-medium-diffusers/tokenizer_3/):

    pip download --no-deps -d /tmp/ds diffsynth==1.1.9
    python scripts/make_sd_configs.py --t5_wheel /tmp/ds/diffsynth-1.1.9-py3-none-any.whl
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


CLIP_L_PROJ = dict(CLIP_L, architectures=["CLIPTextModelWithProjection"])
T5_XXL = dict(architectures=["T5EncoderModel"], classifier_dropout=0.0, d_ff=10240, d_kv=64, d_model=4096,
              decoder_start_token_id=0, dense_act_fn="gelu_new", dropout_rate=0.1, eos_token_id=1,
              feed_forward_proj="gated-gelu", initializer_factor=1.0, is_encoder_decoder=True, is_gated_act=True,
              layer_norm_epsilon=1e-06, model_type="t5", num_decoder_layers=24, num_heads=64, num_layers=24,
              output_past=True, pad_token_id=0, relative_attention_max_distance=128,
              relative_attention_num_buckets=32, tie_word_embeddings=False, torch_dtype="bfloat16", use_cache=True,
              vocab_size=32128)
VAE_16 = dict(SD_VAE, latent_channels=16, sample_size=1024, force_upcast=True, use_quant_conv=False,
              use_post_quant_conv=False, latents_mean=None, latents_std=None)
SD3_TRANSFORMER = dict(_class_name="SD3Transformer2DModel", _diffusers_version=V, attention_head_dim=64,
                       caption_projection_dim=1536, in_channels=16, joint_attention_dim=4096, num_attention_heads=24,
                       num_layers=24, out_channels=16, patch_size=2, pooled_projection_dim=2048,
                       pos_embed_max_size=192, sample_size=128)
FLOW = dict(_class_name="FlowMatchEulerDiscreteScheduler", _diffusers_version=V, base_image_seq_len=256,
            base_shift=0.5, max_image_seq_len=4096, max_shift=1.15, num_train_timesteps=1000, shift=3.0,
            use_dynamic_shifting=False)
T5_TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


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
    return {"sd1": sd1, "sd2": sd2, "sdxl": sdxl, **variants(sd1, sd2, sdxl), **new_families(sdxl)}


def new_families(sdxl: dict) -> dict[str, dict]:
    """Playground v2.5 (SDXL with an EDM schedule and its own latent statistics), SD 3 / 3.5 (MMDiT,
    flow matching, shift 3), FLUX.1 dev (dynamic shift) and schnell (shift 1). The T5 tokenizer folder
    (tokenizer_3 / tokenizer_2) is filled from configs/t5_tokenizer/ when the config is assembled."""
    playground = {
        **sdxl,
        "model_index.json": dict(sdxl["model_index.json"], scheduler=["diffusers", "EDMDPMSolverMultistepScheduler"]),
        "scheduler/scheduler_config.json": dict(
            _class_name="EDMDPMSolverMultistepScheduler", _diffusers_version=V, algorithm_type="dpmsolver++",
            dynamic_thresholding_ratio=0.995, euler_at_final=False, final_sigmas_type="zero", lower_order_final=True,
            num_train_timesteps=1000, prediction_type="epsilon", rho=7.0, sample_max_value=1.0, sigma_data=0.5,
            sigma_max=80.0, sigma_min=0.002, solver_order=2, solver_type="midpoint", thresholding=False),
        "vae/config.json": dict(sdxl["vae/config.json"], scaling_factor=0.5,
                                latents_mean=[-1.6574, 1.886, -1.383, 2.5155],
                                latents_std=[8.4927, 5.9022, 6.5498, 5.2299]),
    }
    sd3 = {
        "model_index.json": {"_class_name": "StableDiffusion3Pipeline", "_diffusers_version": V,
                             "image_encoder": [None, None], "feature_extractor": [None, None],
                             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
                             "text_encoder": ["transformers", "CLIPTextModelWithProjection"],
                             "text_encoder_2": ["transformers", "CLIPTextModelWithProjection"],
                             "text_encoder_3": ["transformers", "T5EncoderModel"],
                             "tokenizer": ["transformers", "CLIPTokenizer"],
                             "tokenizer_2": ["transformers", "CLIPTokenizer"],
                             "tokenizer_3": ["transformers", "T5TokenizerFast"],
                             "transformer": ["diffusers", "SD3Transformer2DModel"],
                             "vae": ["diffusers", "AutoencoderKL"]},
        "scheduler/scheduler_config.json": FLOW,
        "text_encoder/config.json": CLIP_L_PROJ,
        "text_encoder_2/config.json": OPENCLIP_BIGG,
        "text_encoder_3/config.json": T5_XXL,
        "tokenizer/tokenizer_config.json": tokenizer_config("<|endoftext|>"),
        "tokenizer_2/tokenizer_config.json": tokenizer_config("!"),
        "transformer/config.json": SD3_TRANSFORMER,
        "vae/config.json": dict(VAE_16, scaling_factor=1.5305, shift_factor=0.0609),
    }
    sd35_medium = {**sd3, "transformer/config.json": dict(SD3_TRANSFORMER, dual_attention_layers=list(range(13)),
                                                          pos_embed_max_size=384, qk_norm="rms_norm")}
    sd35_large = {**sd3, "transformer/config.json": dict(SD3_TRANSFORMER, caption_projection_dim=2432,
                                                         num_attention_heads=38, num_layers=38, qk_norm="rms_norm")}
    flux_dev = {
        "model_index.json": {"_class_name": "FluxPipeline", "_diffusers_version": V,
                             "image_encoder": [None, None], "feature_extractor": [None, None],
                             "scheduler": ["diffusers", "FlowMatchEulerDiscreteScheduler"],
                             "text_encoder": ["transformers", "CLIPTextModel"],
                             "text_encoder_2": ["transformers", "T5EncoderModel"],
                             "tokenizer": ["transformers", "CLIPTokenizer"],
                             "tokenizer_2": ["transformers", "T5TokenizerFast"],
                             "transformer": ["diffusers", "FluxTransformer2DModel"],
                             "vae": ["diffusers", "AutoencoderKL"]},
        "scheduler/scheduler_config.json": dict(FLOW, use_dynamic_shifting=True),
        "text_encoder/config.json": CLIP_L,
        "text_encoder_2/config.json": T5_XXL,
        "tokenizer/tokenizer_config.json": tokenizer_config("<|endoftext|>"),
        "transformer/config.json": dict(_class_name="FluxTransformer2DModel", _diffusers_version=V,
                                        attention_head_dim=128, guidance_embeds=True, in_channels=64,
                                        joint_attention_dim=4096, num_attention_heads=24, num_layers=19,
                                        num_single_layers=38, patch_size=1, pooled_projection_dim=768),
        "vae/config.json": dict(VAE_16, scaling_factor=0.3611, shift_factor=0.1159, mid_block_add_attention=True),
    }
    flux_schnell = {**flux_dev,
                    "scheduler/scheduler_config.json": dict(FLOW, shift=1.0, use_dynamic_shifting=False),
                    "transformer/config.json": dict(flux_dev["transformer/config.json"], guidance_embeds=False)}
    return {"sdxl-playground": playground, "sd3-medium": sd3, "sd35-medium": sd35_medium, "sd35-large": sd35_large,
            "flux-dev": flux_dev, "flux-schnell": flux_schnell}


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
    ap.add_argument("--t5_wheel", type=Path, help="diffsynth 1.x wheel holding the T5 tokenizer files")
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
    if args.t5_wheel:
        folder = "diffsynth/tokenizer_configs/stable_diffusion_3/tokenizer_3/"
        tok = OUT / "t5_tokenizer"
        tok.mkdir(parents=True, exist_ok=True)
        with zipfile.ZipFile(args.t5_wheel) as z:
            for name in T5_TOKENIZER_FILES:
                (tok / name).write_bytes(z.read(folder + name))
        vocab = json.loads((tok / "tokenizer.json").read_text(encoding="utf-8"))["model"]["vocab"]
        print(f"T5 tokenizer: {len(vocab)} pieces")
    print(f"wrote {OUT}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
