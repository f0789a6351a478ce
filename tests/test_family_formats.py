"""Recipes of the newer families both ways: written as A1111/Forge write them (`Distilled CFG Scale`, `Schedule
type`, `CFG Rescale phi`) and read back alone; read from Forge's FLUX.1 infotext, InvokeAI 5-6's FLUX.1 and SD 3
invokeai_metadata (frontend buildFLUXGraph.ts / buildSD3Graph.ts) and ComfyUI's FLUX.1 and SD 3.5 API graphs
(UNETLoader / UnetLoaderGGUF, DualCLIPLoader / TripleCLIPLoader, FluxGuidance, ModelSamplingFlux / SD3,
EmptySD3LatentImage, SamplerCustomAdvanced, RescaleCFG) as ComfyUI writes them."""

import json

import pytest
from PIL import Image, PngImagePlugin

from dreamshell.line.parser import parse_request
from dreamshell.line.request import DreamRequest
from dreamshell.store.pngmeta import ImageMeta, a1111_parameters, fetch_recipe, png_bytes, read_chunks

NOT_CARRIED = "not carried over: "


def png(tmp_path, chunks, name="x.png"):
    info = PngImagePlugin.PngInfo()
    for k, v in chunks.items():
        info.add_text(k, v)
    path = tmp_path / name
    Image.new("RGB", (8, 8)).save(path, "PNG", pnginfo=info)
    return path
# Forge and A1111 write no RNG key for their default, GPU noise: read as --rng nv (tests/test_formats.py)
GPU_NOTE = ("no RNG key (A1111's default: GPU) read as --rng nv: CUDA's torch.randn made on any device, equal to "
            "A1111's GPU noise to within rounding (--rng gpu draws it on a CUDA GPU itself)")


# ----- ours, written and read back

DEV_LINE = parse_request('"a lighthouse at dusk" -s 20 -S 42 -W 1024 -H 768 -C 1 -A k_euler --schedule simple '
                         '--model flux1-dev --guidance 3.5')
SD35_LINE = parse_request('"a lighthouse [fog]" -s 40 -S 7 -W 1024 -H 1024 -C 4.5 -A k_euler --schedule uniform '
                          '--model sd3.5_medium --clip_skip 2')
VPRED_LINE = parse_request('"1girl, looking at viewer [lowres]" -s 28 -S 9 -W 832 -H 1216 -C 5 -A k_euler_a '
                           '--schedule sgm_uniform --model noobai-vpred --cfg_rescale 0.7')


def test_a1111_text_says_what_forge_writes_for_flux_dev_and_the_rescale_extensions_for_cfg_rescale():
    text = a1111_parameters(ImageMeta(DEV_LINE))
    assert text.splitlines()[-1].startswith("Steps: 20, Sampler: Euler, Schedule type: Simple, CFG scale: 1, "
                                            "Distilled CFG Scale: 3.5, Seed: 42, Size: 1024x768, Model: flux1-dev, ")
    text = a1111_parameters(ImageMeta(VPRED_LINE))
    assert "Sampler: Euler a, Schedule type: SGM Uniform, CFG scale: 5" in text
    assert ", CFG Rescale phi: 0.7, Dreamshell: " in text


@pytest.mark.parametrize("line", [DEV_LINE, SD35_LINE, VPRED_LINE])
@pytest.mark.parametrize("keep", ["parameters-alone", "sd-metadata", "Dream"])
def test_each_chunk_alone_gives_the_family_line_back(tmp_path, line, keep):
    chunks = read_chunks(png_with_meta(tmp_path, line))
    if keep == "parameters-alone":      # as A1111/Forge alone would have written it: no Dreamshell key
        text = chunks["parameters"]
        chunks = {"parameters": text[:text.index(", Dreamshell: ")]}
    else:
        chunks = {keep: chunks[keep]}
    recipe = fetch_recipe(png(tmp_path, chunks, "one.png"))
    if keep == "Dream":   # InvokeAI 2.2.5's switches only (the other chunks carry the rest): its k_ schedule named
        assert recipe.request == line.with_(model=None, schedule="uniform", guidance=None, clip_skip=None,
                                            cfg_rescale=None)
        assert recipe.notes == (f"--schedule uniform: InvokeAI 2.x ran {line.sampler} on the model's own sigmas at "
                                f"{line.steps} steps (Karras below 0)",)
    else:
        assert recipe.request == line and recipe.notes == ()


def png_with_meta(tmp_path, line):
    path = tmp_path / "made.png"
    path.write_bytes(png_bytes(Image.new("RGB", (8, 8)), ImageMeta(line, model_hash="ab" * 32)))
    return path


# ----- Forge

FORGE_FLUX = """a lighthouse at dusk, volumetric light
Steps: 20, Sampler: Euler, Schedule type: Simple, CFG scale: 1, Distilled CFG Scale: 3.5, Seed: 1234, \
Size: 896x1152, Model hash: 4610115bb0, Model: flux1-dev-bnb-nf4-v2, Module 1: ae, Module 2: clip_l, \
Module 3: t5xxl_fp16, Diffusion in Low Bits: Automatic (fp16 LoRA), Version: f2.0.1v1.10.1-previous-313-g8a042934"""


def test_forge_flux_dev_infotext(tmp_path):
    recipe = fetch_recipe(png(tmp_path, {"parameters": FORGE_FLUX}))
    assert recipe.request == DreamRequest("a lighthouse at dusk, volumetric light", steps=20, seed=1234, width=896,
                                          height=1152, cfg_scale=1.0, sampler="k_euler", schedule="simple",
                                          model="flux1-dev-bnb-nf4-v2", guidance=3.5, rng="nv")
    assert recipe.notes == ("Forge's Module files (ae, clip_l, t5xxl_fp16: the model's VAE and text encoders) are the "
                            "ones the models file names for the model here", GPU_NOTE)


def test_forge_hires_distilled_cfg_the_same_is_no_drop_and_another_is_named(tmp_path):
    hires = FORGE_FLUX.replace("Module 1: ae, Module 2: clip_l, Module 3: t5xxl_fp16, ", "").replace(
        "Version:", "Denoising strength: 0.4, Hires upscale: 1.5, Hires steps: 10, Hires upscaler: Latent, "
                    "Hires Distilled CFG Scale: 3.5, Version:")
    recipe = fetch_recipe(png(tmp_path, {"parameters": hires}))
    assert recipe.request.guidance == 3.5 and recipe.request.hires_fix and recipe.notes == (GPU_NOTE,)
    recipe = fetch_recipe(png(tmp_path, {"parameters": hires.replace("Hires Distilled CFG Scale: 3.5",
                                                                     "Hires Distilled CFG Scale: 2")}, "b.png"))
    assert recipe.notes[-1] == NOT_CARRIED + ("Hires Distilled CFG Scale: 2 (dreamshell's hires pass uses the first "
                                              "pass's distilled guidance)")


@pytest.mark.parametrize("key", ["CFG Rescale phi", "CFG Rescale φ", "CFG Rescale"])
def test_the_cfg_rescale_extensions_keys_and_a1111s_zero_snr_noise_schedule(tmp_path, key):
    text = ("1girl\nNegative prompt: lowres\nSteps: 28, Sampler: Euler a, Schedule type: SGM Uniform, CFG scale: 5, "
            f"Seed: 9, Size: 832x1216, Model: noobai-vpred, {key}: 0.7, Noise Schedule: Zero Terminal SNR, "
            "Version: v1.10.1")
    recipe = fetch_recipe(png(tmp_path, {"parameters": text}))
    assert (recipe.request.cfg_rescale, recipe.request.schedule) == (0.7, "sgm_uniform")
    assert recipe.notes == ("Noise Schedule: Zero Terminal SNR: here a property of the model ('zero_snr: true' in the "
                            "models file, or the weights' ztsnr key)", GPU_NOTE)


def test_an_sdxl_vae_module_is_still_named_as_not_carried_over(tmp_path):
    text = FORGE_FLUX.replace("Module 1: ae, Module 2: clip_l, Module 3: t5xxl_fp16", "Module 1: sdxl_vae")
    assert fetch_recipe(png(tmp_path, {"parameters": text})).notes == (GPU_NOTE, NOT_CARRIED + "Module 1: sdxl_vae")


# ----- InvokeAI 5-6

INVOKE_FLUX = {
    "guidance": 4, "width": 1024, "height": 1024, "positive_prompt": "a lighthouse at dusk",
    "model": {"key": "b6c1", "hash": "blake3:0d2a", "name": "FLUX Dev (Quantized)", "base": "flux", "type": "main"},
    "seed": 3407, "steps": 30,
    "vae": {"key": "a1", "hash": "blake3:9f", "name": "FLUX.1-schnell_ae", "base": "flux", "type": "vae"},
    "t5_encoder": {"key": "c2", "hash": "blake3:11", "name": "t5_bnb_int8_quantized_encoder", "base": "any",
                   "type": "t5_encoder"},
    "clip_embed_model": {"key": "d3", "hash": "blake3:22", "name": "clip-vit-large-patch14", "base": "any",
                         "type": "clip_embed"},
    "generation_mode": "flux_txt2img", "app_version": "5.4.3"}

INVOKE_SD3 = {
    "cfg_scale": 4.5, "width": 1024, "height": 1024, "positive_prompt": "a lighthouse", "negative_prompt": "fog",
    "model": {"key": "e4", "hash": "blake3:33", "name": "SD3.5 Medium", "base": "sd-3", "type": "main"},
    "seed": 7, "steps": 40, "generation_mode": "sd3_txt2img", "app_version": "6.0.1"}


def test_invokeai_flux_metadata(tmp_path):
    recipe = fetch_recipe(png(tmp_path, {"invokeai_metadata": json.dumps(INVOKE_FLUX)}))
    assert recipe.request == DreamRequest("a lighthouse at dusk", steps=30, seed=3407, width=1024, height=1024,
                                          model="FLUX Dev (Quantized)", guidance=4.0, vae="FLUX.1-schnell_ae")
    assert recipe.notes == ("InvokeAI's text encoders (t5_encoder t5_bnb_int8_quantized_encoder; clip_embed_model "
                            "clip-vit-large-patch14) are the ones the models file names for the model here",)
    schnell = dict(INVOKE_FLUX, model=dict(INVOKE_FLUX["model"], name="FLUX Schnell"))
    recipe = fetch_recipe(png(tmp_path, {"invokeai_metadata": json.dumps(schnell)}, "s.png"))
    assert recipe.request.guidance is None
    assert recipe.notes[0] == "guidance 4 left out: FLUX.1 schnell has no distilled guidance"


def test_invokeai_sd3_metadata_and_cfg_rescale_multiplier(tmp_path):
    recipe = fetch_recipe(png(tmp_path, {"invokeai_metadata": json.dumps(INVOKE_SD3)}))
    assert recipe.request == DreamRequest("a lighthouse [fog]", steps=40, seed=7, width=1024, height=1024,
                                          cfg_scale=4.5, model="SD3.5 Medium")
    assert recipe.notes == ()
    xl = dict(INVOKE_SD3, model={"name": "noob-vpred", "base": "sdxl"}, cfg_rescale_multiplier=0.7,
              scheduler="euler_a", generation_mode="sdxl_txt2img")
    recipe = fetch_recipe(png(tmp_path, {"invokeai_metadata": json.dumps(xl)}, "xl.png"))
    assert (recipe.request.cfg_rescale, recipe.request.sampler, recipe.notes) == (0.7, "k_euler_a", ())


# ----- ComfyUI API graphs, as ComfyUI writes them

def link(node, index=0):
    return [node, index]


def flux_dev_graph(loader="UNETLoader", unet="flux1-dev-Q4_0.gguf"):
    """ComfyUI's FLUX.1 dev workflow (comfyanonymous' flux_dev example): UNET + DualCLIP + VAE loaders, FluxGuidance,
    BasicGuider, KSamplerSelect, BasicScheduler, RandomNoise, ModelSamplingFlux, EmptySD3LatentImage,
    SamplerCustomAdvanced."""
    unet_inputs = {"unet_name": unet} if loader != "UNETLoader" else {"unet_name": unet, "weight_dtype": "default"}
    return {
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse at dusk", "clip": link("11")}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": link("13"), "vae": link("10")}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": link("8")}},
        "10": {"class_type": "VAELoader", "inputs": {"vae_name": "ae.safetensors"}},
        "11": {"class_type": "DualCLIPLoader", "inputs": {"clip_name1": "t5xxl_fp16.safetensors",
                                                          "clip_name2": "clip_l.safetensors", "type": "flux",
                                                          "device": "default"}},
        "12": {"class_type": loader, "inputs": unet_inputs},
        "13": {"class_type": "SamplerCustomAdvanced", "inputs": {"noise": link("25"), "guider": link("22"),
                                                                 "sampler": link("16"), "sigmas": link("17"),
                                                                 "latent_image": link("27")}},
        "16": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler"}},
        "17": {"class_type": "BasicScheduler", "inputs": {"scheduler": "simple", "steps": 20, "denoise": 1,
                                                          "model": link("30")}},
        "22": {"class_type": "BasicGuider", "inputs": {"model": link("30"), "conditioning": link("26")}},
        "25": {"class_type": "RandomNoise", "inputs": {"noise_seed": 2196702787}},
        "26": {"class_type": "FluxGuidance", "inputs": {"guidance": 3.5, "conditioning": link("6")}},
        "27": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
        "30": {"class_type": "ModelSamplingFlux", "inputs": {"max_shift": 1.1500000000000001,
                                                             "base_shift": 0.5000000000000001, "width": 1024,
                                                             "height": 1024, "model": link("12")}},
    }


ENCODERS = ("DualCLIPLoader t5xxl_fp16, clip_l: the text encoders are the ones the models file names for the "
            "model here")


@pytest.mark.parametrize("loader", ["UNETLoader", "UnetLoaderGGUF"])
def test_comfyui_flux_dev_with_the_custom_sampler(tmp_path, loader):
    recipe = fetch_recipe(png(tmp_path, {"prompt": json.dumps(flux_dev_graph(loader))}))
    assert recipe.request == DreamRequest("a lighthouse at dusk", steps=20, seed=2196702787, width=1024, height=1024,
                                          cfg_scale=1.0,
                                          sampler="k_euler", schedule="simple", model="flux1-dev-Q4_0",
                                          vae="ae.safetensors", guidance=3.5)
    assert recipe.notes == (ENCODERS,)


def test_comfyui_flux_with_a_cfg_guider_negative_and_another_shift_is_named(tmp_path):
    graph = flux_dev_graph()
    graph["22"] = {"class_type": "CFGGuider", "inputs": {"model": link("30"), "positive": link("26"),
                                                        "negative": link("7"), "cfg": 3.5}}
    graph["7"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "fog", "clip": link("11")}}
    graph["30"]["inputs"]["max_shift"] = 1.5
    graph["12"]["inputs"]["weight_dtype"] = "fp8_e4m3fn"
    graph["40"] = {"class_type": "RescaleCFG", "inputs": {"multiplier": 0.7, "model": link("12")}}
    graph["30"]["inputs"]["model"] = link("40")
    recipe = fetch_recipe(png(tmp_path, {"prompt": json.dumps(graph)}))
    r = recipe.request
    assert (r.prompt, r.cfg_scale, r.cfg_rescale, r.guidance) == ("a lighthouse at dusk [fog]", 3.5, 0.7, 3.5)
    assert recipe.notes == (ENCODERS, NOT_CARRIED + (
        "ModelSamplingFlux max_shift 1.5 base_shift 0.5 (dreamshell runs FLUX.1's own: 1.15 and 0.5); "
        "weight_dtype fp8_e4m3fn (ComfyUI's storage precision; dreamshell runs the weights as the file holds them)"))


def test_comfyui_flux_schnell_checkpoint_with_ksampler_and_a_zeroed_negative(tmp_path):
    graph = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "flux1-schnell-fp8.safetensors"}},
        "5": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a cute cat", "clip": link("4", 1)}},
        "7": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": link("6")}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 972054013, "steps": 4, "cfg": 1.0,
                                                   "sampler_name": "euler", "scheduler": "simple", "denoise": 1.0,
                                                   "model": link("4"), "positive": link("6"), "negative": link("7"),
                                                   "latent_image": link("5")}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": link("3"), "vae": link("4", 2)}},
    }
    recipe = fetch_recipe(png(tmp_path, {"prompt": json.dumps(graph)}))
    r = recipe.request
    assert (r.prompt, r.steps, r.cfg_scale, r.sampler, r.schedule, r.model) == \
        ("a cute cat", 4, 1.0, "k_euler", "simple", "flux1-schnell-fp8")


def test_comfyui_sd35_with_triple_clip_model_sampling_and_its_negative_recipe(tmp_path):
    graph = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "sd3.5_medium.safetensors"}},
        "11": {"class_type": "TripleCLIPLoader", "inputs": {"clip_name1": "clip_l.safetensors",
                                                            "clip_name2": "clip_g.safetensors",
                                                            "clip_name3": "t5xxl_fp16.safetensors"}},
        "13": {"class_type": "ModelSamplingSD3", "inputs": {"shift": 3, "model": link("4")}},
        "16": {"class_type": "CLIPTextEncode", "inputs": {"text": "a lighthouse", "clip": link("11")}},
        "40": {"class_type": "CLIPTextEncode", "inputs": {"text": "fog", "clip": link("11")}},
        "67": {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": link("40")}},
        "68": {"class_type": "ConditioningSetTimestepRange", "inputs": {"start": 0.1, "end": 1,
                                                                         "conditioning": link("67")}},
        "69": {"class_type": "ConditioningSetTimestepRange", "inputs": {"start": 0, "end": 0.1,
                                                                         "conditioning": link("40")}},
        "70": {"class_type": "ConditioningCombine", "inputs": {"conditioning_1": link("68"),
                                                               "conditioning_2": link("69")}},
        "135": {"class_type": "EmptySD3LatentImage", "inputs": {"width": 1024, "height": 1024, "batch_size": 1}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 5, "steps": 40, "cfg": 4.5, "sampler_name": "euler",
                                                   "scheduler": "sgm_uniform", "denoise": 1, "model": link("13"),
                                                   "positive": link("16"), "negative": link("70"),
                                                   "latent_image": link("135")}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": link("3"), "vae": link("4", 2)}},
    }
    recipe = fetch_recipe(png(tmp_path, {"prompt": json.dumps(graph)}))
    r = recipe.request
    assert (r.prompt, r.cfg_scale, r.schedule, r.model) == ("a lighthouse [fog]", 4.5, "sgm_uniform", "sd3.5_medium")
    assert recipe.notes == (
        "the negative prompt is ComfyUI's SD 3 recipe (the text over the first steps, zeroed after): read as the "
        "text for every step",
        "TripleCLIPLoader clip_l, clip_g, t5xxl_fp16: the text encoders are the ones the models file names for the "
        "model here")
    graph["13"]["inputs"]["shift"] = 6
    assert fetch_recipe(png(tmp_path, {"prompt": json.dumps(graph)}, "b.png")).notes[-1] == NOT_CARRIED + (
        "ModelSamplingSD3 shift 6 (dreamshell runs the model's own shift, 3 for SD 3 / 3.5)")


def test_comfyui_v_prediction_zsnr_and_rescale_cfg_on_an_sdxl_graph(tmp_path):
    graph = {
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "noobai-vpred.safetensors"}},
        "20": {"class_type": "ModelSamplingDiscrete", "inputs": {"sampling": "v_prediction", "zsnr": True,
                                                                  "model": link("4")}},
        "21": {"class_type": "RescaleCFG", "inputs": {"multiplier": 0.7, "model": link("20")}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 832, "height": 1216, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "1girl", "clip": link("4", 1)}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "lowres", "clip": link("4", 1)}},
        "3": {"class_type": "KSampler", "inputs": {"seed": 9, "steps": 28, "cfg": 5, "sampler_name": "euler_ancestral",
                                                   "scheduler": "sgm_uniform", "denoise": 1, "model": link("21"),
                                                   "positive": link("6"), "negative": link("7"),
                                                   "latent_image": link("5")}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": link("3"), "vae": link("4", 2)}},
    }
    recipe = fetch_recipe(png(tmp_path, {"prompt": json.dumps(graph)}))
    assert recipe.request == parse_request('"1girl [lowres]" -s 28 -S 9 -W 832 -H 1216 -C 5 -A k_euler_a '
                                           '--schedule sgm_uniform --model noobai-vpred --cfg_rescale 0.7')
    assert recipe.notes == ("ModelSamplingDiscrete v_prediction zsnr: here the model's own (the models file's "
                            "'prediction: v' / 'zero_snr: true', or the weights' v_pred / ztsnr keys)",)
