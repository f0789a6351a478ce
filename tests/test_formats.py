"""Recipes read from the peers' files: A1111 infotexts (several versions; PNG, JPEG and WebP EXIF),
InvokeAI 1.x-2.x Dream/sd-metadata, InvokeAI 3+ invokeai_metadata, ComfyUI prompt graphs. Each
fixture follows the documented format; each test asserts every field and every note."""

import hashlib
import io
import json
import struct
import zlib

import pytest
from PIL import Image, PngImagePlugin

from dreamshell.weights.library import Folders, Library, RecipeExtras
from dreamshell.line.formatter import format_request
from dreamshell.store.pngmeta import MetadataError, fetch_recipe, read_recipe
from dreamshell.line.request import DreamRequest, UpscaleSpec

NOT_CARRIED = "not carried over: "
GPU_NOTE = ("no RNG key (A1111's default: GPU) read as --rng nv: CUDA's torch.randn made on any device, equal to "
            "A1111's GPU noise to within rounding (--rng gpu draws it on a CUDA GPU itself)")


def png(tmp_path, chunks: dict[str, str], name="x.png"):
    info = PngImagePlugin.PngInfo()
    for k, v in chunks.items():
        info.add_text(k, v)
    path = tmp_path / name
    Image.new("RGB", (8, 8)).save(path, "PNG", pnginfo=info)
    return path


def user_comment_exif(text: str) -> bytes:
    """EXIF with the UserComment as A1111 writes it: piexif UserComment.dump(text, encoding="unicode")."""
    exif = Image.Exif()
    exif.get_ifd(0x8769)[0x9286] = b"UNICODE\0" + text.encode("utf-16-be")
    return exif.tobytes()


# ----- A1111

A1111_V1_0 = """a girl with an artist's beret, ((eyeshadow)), [blurry]
Negative prompt: ugly, (((deformed)))
Steps: 20, Sampler: Euler a, CFG scale: 7, Seed: 965400086, Size: 512x512, Model hash: 45dee52b"""

A1111_V1_6 = """portrait of a knight, style: oil painting
Steps: 30, Sampler: DPM++ 2M Karras, CFG scale: 6.5, Seed: 1234, Size: 512x768, Model hash: 6ce0161689, \
Model: v1-5-pruned-emaonly, Version: v1.6.0"""

A1111_V1_10 = """masterpiece, (best quality:1.2), <lora:add_detail:0.8> [dog:cat:0.5] BREAK a castle
Negative prompt: lowres, [bad anatomy]
Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: -1, Size: 985x1266, \
Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, VAE hash: 735e4c3a44, VAE: vae-ft-mse.safetensors, \
Clip skip: 2, Denoising strength: 0.7, Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent, \
Variation seed: 77, Variation seed strength: 0.3, Tiling: True, Lora hashes: "add_detail: 7c6bad76eb54", \
Version: v1.10.1"""


def test_a1111_1_0_plain_names_and_emphasis(tmp_path):
    recipe = fetch_recipe(png(tmp_path, {"parameters": A1111_V1_0}))
    assert recipe.request == DreamRequest(
        "a girl with an artist's beret, (eyeshadow)1.21, (blurry)0.9091 [ugly, (deformed)1.331]", steps=20,
        seed=965400086, width=512, height=512, cfg_scale=7.0, sampler="k_euler_a", schedule="uniform", rng="nv")
    assert recipe.source == "A1111 parameters"
    assert recipe.notes == (GPU_NOTE, NOT_CARRIED + "Model hash: 45dee52b (no model name; dreamshell's model is used)",)


def test_a1111_1_6_combined_sampler_name_and_literal_colon(tmp_path):
    recipe = fetch_recipe(png(tmp_path, {"parameters": A1111_V1_6}))
    assert recipe.request == DreamRequest("portrait of a knight, style\\: oil painting", steps=30, seed=1234,
                                          width=512, height=768, cfg_scale=6.5, sampler="k_dpmpp_2",
                                          schedule="karras", model="v1-5-pruned-emaonly", rng="nv")
    assert recipe.source == "A1111 parameters (v1.6.0)" and recipe.notes == (GPU_NOTE,)


@pytest.mark.parametrize("version, schedule", [("v1.6.0", "uniform"), ("v1.10.1", "karras"), (None, "karras"),
                                               ("f2.0.1v1.10.1-previous-313-g8a042934", "karras")])
def test_a1111_automatic_schedule_means_what_that_version_ran(tmp_path, version, schedule):
    text = "a cat\nSteps: 20, Sampler: DPM++ 2M, CFG scale: 7, Seed: 5, Size: 512x512"
    text += f", Version: {version}" if version else ""
    req = read_recipe(png(tmp_path, {"parameters": text}))
    assert (req.sampler, req.schedule) == ("k_dpmpp_2", schedule)


def test_a1111_1_10_lora_vae_clip_skip_and_hires_fix_are_read(tmp_path):
    recipe = fetch_recipe(png(tmp_path, {"parameters": A1111_V1_10}))
    assert recipe.request == DreamRequest(
        "masterpiece, (best quality)1.2, <lora:add_detail:0.8> cat, a castle [lowres, (bad anatomy)0.9091]", steps=28,
        width=984, height=1264, cfg_scale=7.0, sampler="k_dpmpp_2", schedule="karras", model="v1-5-pruned-emaonly",
        with_variations=((77, 0.3),), seamless=True, clip_skip=2, vae="vae-ft-mse.safetensors", hires_fix=True,
        hires_scale=2.0, hires_steps=10, hires_strength=0.7, hires_upscaler="latent", rng="nv")
    assert recipe.request.seed is None      # Seed: -1 is a new random seed, not -S -1 (the last image's)
    assert recipe.source == "A1111 parameters (v1.10.1)"
    assert recipe.notes == (
        "BREAK in the prompt (A1111: start a new 75-token chunk) became ', '; dreamshell has no chunk break",
        "[dog:cat:0.5] (A1111 prompt editing: 'dog' then 'cat' from 0.5) kept as 'cat', the part A1111 uses for "
        "50% of the steps",
        "seed -1 (random) read as a new random seed; no -S on the line",
        "size 985x1266 rounded to 984x1264 (dreamshell sizes are multiples of 8 from 64 to 8192)", GPU_NOTE)
    assert recipe.recorded == RecipeExtras((("add_detail", 0.8, "7c6bad76eb54"),), (),
                                           ("vae-ft-mse.safetensors", "735e4c3a44"))


# As CivitAI shows an A1111 1.6 image: two LoRAs (one with separate text-encoder and UNet weights), a LyCORIS,
# negative embeddings (A1111 repeats a TI hash when the negative is encoded twice), a VAE, an ESRGAN model upscaler
CIVITAI = """masterpiece, best quality, 1girl, solo, <lora:add_detail:0.6>, <lora:more_details:0.4:0.8>, \
<lyco:GoodHands-beta2:1.0>
Negative prompt: EasyNegative, badhandv4, (worst quality:1.4)
Steps: 25, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 3450239586, Size: 512x768, Model hash: 7f96a1a9ca, \
Model: anything-v5-PrtRE, VAE hash: df3c506e51, VAE: kl-f8-anime2.ckpt, Denoising strength: 0.5, Clip skip: 2, \
Hires upscale: 2, Hires steps: 15, Hires upscaler: 4x-UltraSharp, \
Lora hashes: "add_detail: 7c6bad76eb54, more_details: 3b8aa1d351ef", \
TI hashes: "EasyNegative: c74b4e810b03, badhandv4: 5e40d722fc3d, EasyNegative: c74b4e810b03", Version: v1.6.0"""

# Forge (f2.0.1, on A1111 1.10): its own Hires keys, a latent variant, an SDXL VAE and a Module key
FORGE = """cinematic photo of a red fox in snow <lora:fox_style_xl:0.9>
Negative prompt: blurry
Steps: 30, Sampler: DPM++ 2M SDE, Schedule type: Karras, CFG scale: 5, Seed: 123456789, Size: 832x1216, \
Model hash: 31e35c80fc, Model: sd_xl_base_1.0, VAE hash: 235745af8d, VAE: sdxl_vae.safetensors, \
Denoising strength: 0.35, Hires Module 1: Use same choices, Hires CFG Scale: 5, Hires upscale: 1.5, Hires steps: 12, \
Hires upscaler: Latent (bicubic antialiased), Lora hashes: "fox_style_xl: 1a2b3c4d5e6f", \
Version: f2.0.1v1.10.1-previous-313-g8a042934, Module 1: sdxl_vae"""

# A1111 1.10 with `Hires resize` to another aspect ratio, its own hires sampler and prompt, upscaler None
A1111_HIRES_RESIZE = """a knight in armor <lora:detail:1.2>
Steps: 20, Sampler: Euler a, Schedule type: Automatic, CFG scale: 7, Seed: 5, Size: 512x512, Model hash: 6ce0161689, \
Model: v1-5-pruned-emaonly, Denoising strength: 0.55, Clip skip: 2, Hires resize: 1024x1536, Hires sampler: DPM++ 2M, \
Hires prompt: "a knight in shining armor, detailed", Hires upscaler: None, Lora hashes: "detail: 0123456789ab", \
Version: v1.10.1"""


def test_civitai_a1111_1_6_infotext(tmp_path):
    recipe = fetch_recipe(png(tmp_path, {"parameters": CIVITAI}))
    assert recipe.request == DreamRequest(
        "masterpiece, best quality, 1girl, solo, <lora:add_detail:0.6>, <lora:more_details:0.8>, "
        "[EasyNegative, badhandv4, (worst quality)1.4]", steps=25, seed=3450239586, width=512, height=768,
        cfg_scale=7.0, sampler="k_dpmpp_2", schedule="karras", model="anything-v5-PrtRE", clip_skip=2,
        vae="kl-f8-anime2.ckpt", hires_fix=True, hires_scale=2.0, hires_steps=15, hires_strength=0.5,
        hires_upscaler="esrgan", rng="nv")
    assert recipe.notes == (
        "<lora:more_details:0.4:0.8> (A1111: text-encoder weight 0.4, UNet weight 0.8) kept as "
        "<lora:more_details:0.8>: dreamshell gives a LoRA one weight for both, and the UNet's is the one that "
        "shapes the image most", GPU_NOTE,
        "Hires upscaler: 4x-UltraSharp (an ESRGAN-family model) read as esrgan (Real-ESRGAN 4x+)",
        NOT_CARRIED + "LyCORIS GoodHands-beta2 (weight 1.0; <lyco:...> tags are not supported by dreamshell)")
    assert recipe.recorded == RecipeExtras(
        (("add_detail", 0.6, "7c6bad76eb54"), ("more_details", 0.8, "3b8aa1d351ef")),
        (("EasyNegative", "c74b4e810b03"), ("badhandv4", "5e40d722fc3d")), ("kl-f8-anime2.ckpt", "df3c506e51"))


def test_forge_infotext(tmp_path):
    recipe = fetch_recipe(png(tmp_path, {"parameters": FORGE}))
    assert recipe.request == DreamRequest(
        "cinematic photo of a red fox in snow <lora:fox_style_xl:0.9> [blurry]", steps=30, seed=123456789,
        width=832, height=1216, cfg_scale=5.0, sampler="DPM++ 2M SDE", schedule="karras", model="sd_xl_base_1.0",
        vae="sdxl_vae.safetensors", hires_fix=True, hires_scale=1.5, hires_steps=12, hires_strength=0.35,
        hires_upscaler="latent", rng="nv")
    assert recipe.notes == (GPU_NOTE, "Hires upscaler: Latent (bicubic antialiased) read as latent (A1111's plain Latent: "
                            "bilinear)",
                            NOT_CARRIED + "Module 1: sdxl_vae")


def test_a1111_hires_resize_other_sampler_and_prompt_are_named(tmp_path):
    recipe = fetch_recipe(png(tmp_path, {"parameters": A1111_HIRES_RESIZE}))
    assert recipe.request == DreamRequest(
        "a knight in armor <lora:detail:1.2>", steps=20, seed=5, width=512, height=512, cfg_scale=7.0,
        sampler="k_euler_a", schedule="uniform", model="v1-5-pruned-emaonly", clip_skip=2, hires_fix=True,
        hires_scale=3.0, hires_steps=20, hires_strength=0.55, hires_upscaler="lanczos", rng="nv")
    assert recipe.notes == (
        GPU_NOTE,
        "Hires resize: 1024x1536 is not 512x512 times one scale (A1111 upscales to cover it and crops the rest): "
        "read as --hires_scale 3, which makes 1536x1536",
        "Hires upscaler: None (A1111 then resizes the image with Lanczos) read as lanczos",
        NOT_CARRIED + "Hires sampler: DPM++ 2M (dreamshell's hires pass uses the first pass's sampler); "
        "Hires prompt: a knight in shining armor, detailed (dreamshell's hires pass uses the first pass's prompt)")


@pytest.mark.parametrize("keys, scale, note", [
    ("Hires upscale: 1.5", 1.5, None),
    ("Hires resize: 768x1152", 1.5, None),
    ("Hires resize: 0x1536", 2.0, None),          # one side 0: A1111 keeps the aspect ratio
    ("Hires resize: 1000x1500", 1.953125, None),  # 1000x1496 in both (latents are 1/8 of the size)
    ("Hires sampler: Use same sampler, Hires checkpoint: Use same checkpoint, Hires CFG Scale: 7, "
     "Hires prompt: a cat, Hires schedule type: Karras", 2.0, None),
])
def test_a1111_hires_scales(tmp_path, keys, scale, note):
    text = ("a cat\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 1, Size: 512x768, "
            f"Denoising strength: 0.7, {keys}, Hires upscaler: Latent, Version: v1.10.1")
    recipe = fetch_recipe(png(tmp_path, {"parameters": text}))
    assert (recipe.request.hires_fix, recipe.request.hires_scale, recipe.request.hires_steps) == (True, scale, 20)
    assert recipe.notes == (GPU_NOTE,) + ((note,) if note else ())


def test_a1111_hires_fix_dreamshell_cannot_run_is_dropped_whole(tmp_path):
    text = ("a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, Denoising strength: 0.4, "
            "Hires upscale: 1, Hires upscaler: Latent")
    recipe = fetch_recipe(png(tmp_path, {"parameters": text}))
    assert not recipe.request.hires_fix and recipe.request.hires_scale is None
    assert recipe.notes == (GPU_NOTE, NOT_CARRIED + "hires fix (Hires upscale: 1, Hires upscaler: Latent, Denoising strength: "
                            "0.4; '1' is out of range; the hires scale goes from 1 to 8)",)


def test_a1111_hires_fix_over_dreamshell_limits_is_dropped_whole(tmp_path):
    text = ("a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 4096x4096, Denoising strength: 0.5, "
            "Hires upscale: 4, Hires upscaler: Latent")
    recipe = fetch_recipe(png(tmp_path, {"parameters": text}))
    assert recipe.request == DreamRequest("a cat", steps=20, seed=1, width=4096, height=4096, cfg_scale=7.0,
                                          sampler="k_euler", schedule="uniform", rng="nv")
    assert recipe.notes == (GPU_NOTE, NOT_CARRIED + "hires fix (hires_scale 4, hires_steps 20, hires_strength 0.5, "
                            "hires_upscaler latent; --hires_fix makes 16384x16384 from 4096x4096 at scale 4; sides "
                            "are at most 8192: lower --hires_scale or -W/-H)",)


def test_invokeai_size_that_is_not_a_number_is_named(tmp_path):
    recipe = fetch_recipe(png(tmp_path, {"invokeai_metadata": '{"positive_prompt": "a cat", "width": 1e999, '
                                                              '"height": 512, "seed": 1}'}))
    assert recipe.request == DreamRequest("a cat", seed=1)
    assert recipe.notes == (NOT_CARRIED + "size infx512 (not numbers)",)


def test_a1111_old_first_pass_size(tmp_path):
    text = ("a castle on a hill\nSteps: 30, Sampler: Euler a, CFG scale: 7, Seed: 77, Size: 1024x1024, "
            "Model hash: 7460a6fa, Denoising strength: 0.7, First pass size: 0x0")
    recipe = fetch_recipe(png(tmp_path, {"parameters": text}))
    assert recipe.request == DreamRequest("a castle on a hill", steps=30, seed=77, width=512, height=512,
                                          cfg_scale=7.0, sampler="k_euler_a", schedule="uniform", hires_fix=True,
                                          hires_scale=2.0, hires_steps=30, hires_strength=0.7, hires_upscaler="latent",
                                          rng="nv")
    assert recipe.notes == (
        GPU_NOTE,
        "First pass size: 0x0 (A1111's old hires fix, where Size 1024x1024 is the final size) read as a first pass "
        "of 512x512",
        "A1111's old hires fix did not record its upscaler: latent used",
        NOT_CARRIED + "Model hash: 7460a6fa (no model name; dreamshell's model is used)")


@pytest.mark.parametrize("name, ours, kind", [
    ("Latent", "latent", None), ("Lanczos", "lanczos", None), ("R-ESRGAN 4x+", "esrgan", None),
    ("Latent (nearest-exact)", "latent", "latent"), ("None", "lanczos", "none"), ("Nearest", "lanczos", "nearest"),
    ("R-ESRGAN 4x+ Anime6B", "esrgan", "ESRGAN-family"), ("ESRGAN_4x", "esrgan", "ESRGAN-family"),
    ("4x_foolhardy_Remacri", "esrgan", "ESRGAN-family"), ("SwinIR 4x", "esrgan", "lacks"),
    ("DAT x4", "esrgan", "lacks"), ("LDSR", "esrgan", "lacks"),
])
def test_a1111_hires_upscaler_names(name, ours, kind):
    from dreamshell.store.formats.a1111 import hires_upscaler
    got, note = hires_upscaler(name)
    assert got == ours
    if kind is None:
        assert note is None
    else:
        assert note.startswith(f"Hires upscaler: {name} ") and note.endswith(f"read as {ours}" + (
            " (Real-ESRGAN 4x+)" if ours == "esrgan" else "" if ours == "lanczos" else " (A1111's plain Latent: "
            "bilinear)"))
        assert {"ESRGAN-family": "an ESRGAN-family model", "lacks": "an image upscaler dreamshell lacks",
                "none": "Lanczos", "nearest": "nearest-neighbour", "latent": "Latent"}[kind] in note


@pytest.mark.parametrize("tag, kept, note, dropped", [
    ("<lora:detail:0.80>", "<lora:detail:0.80>", None, None),
    ("<lora:detail>", "<lora:detail>", None, None),
    ("<lora:detail:0.5:0.5>", "<lora:detail:0.5>", None, None),
    ("<lora:detail:unet=0.6:te=0.2>", "<lora:detail:0.6>",
     "<lora:detail:unet=0.6:te=0.2> (A1111: text-encoder weight 0.2, UNet weight 0.6) kept as <lora:detail:0.6>: "
     "dreamshell gives a LoRA one weight for both, and the UNet's is the one that shapes the image most", None),
    ("<lora:detail:1:1:16>", "<lora:detail:1>", None, "dyn=16 of <lora:detail:1:1:16> (A1111's dynamic LoRA rank)"),
    ("<lora:detail:strong>", "", None, "<lora:detail:strong> (the weight is not a number)"),
    ("<lora:detail:12>", "", None, "<lora:detail:12> (dreamshell's LoRA weights go from -10 to 10)"),
    ("<hypernet:anime:0.5>", "", None, "hypernetwork anime (weight 0.5; <hypernet:...> tags are not supported by "
                                       "dreamshell)"),
])
def test_a1111_lora_tags(tmp_path, tag, kept, note, dropped):
    text = f"a cat {tag}, sitting\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 512x512, Version: v1.10.1"
    recipe = fetch_recipe(png(tmp_path, {"parameters": text}))
    assert recipe.request.prompt == f"a cat {kept}, sitting".replace("  ", " ").replace(" ,", ",")
    assert recipe.notes == tuple(([note] if note else []) + [GPU_NOTE] + ([NOT_CARRIED + dropped] if dropped else []))


def test_a1111_lora_tag_in_the_negative_prompt_and_twice(tmp_path):
    text = ("<lora:a:0.5> cat <lora:a:1>\nNegative prompt: <lora:b:1> blurry\nSteps: 20, Sampler: Euler, "
            "CFG scale: 7, Seed: 5, Size: 512x512")
    recipe = fetch_recipe(png(tmp_path, {"parameters": text}))
    assert recipe.request.prompt == "<lora:a:0.5> cat [blurry]"
    assert recipe.notes == (GPU_NOTE, NOT_CARRIED + "<lora:a:1> (LoRA a is tagged again; dreamshell tags each LoRA once and "
                            "keeps the first); <lora:b:1> in the negative prompt (A1111 applies no LoRA from the "
                            "negative prompt)",)


@pytest.mark.parametrize("prompt, ours, note", [
    ("style: oil painting", "style\\: oil painting", None),
    ("\\(literal\\) parens", "\\(literal\\) parens", None),
    ("a (cat:1.3) and [dog]", "a (cat)1.3 and (dog)0.9091", None),
    ("a [cat|dog]", "a cat", "[cat|dog] (A1111: alternate each step) kept as its first option 'cat'"),
    ("[fire::0.3] ice", "ice", "[fire::0.3] (A1111 prompt editing: 'fire' then '' from 0.3) kept as '', the part "
                               "A1111 uses for 70% of the steps"),
    ("[fire:ice:0.8] storm", "fire storm", "[fire:ice:0.8] (A1111 prompt editing: 'fire' then 'ice' from 0.8) "
                                           "kept as 'fire', the part A1111 uses for 80% of the steps"),
    ("a cat :1.2 AND a dog :0.8", "a cat :1.2 AND a dog :0.8", None),   # A1111's AND, as A1111 reads it
    ("red AND blue", "red AND blue", None),                           # before: a blend normalised to 0.5 each
    ("(red:1.2) AND style: flat :0.5", "(red)1.2 AND style\\: flat :0.5", None),
    ("unmatched ] and ( open", "unmatched \\) and (open)1.1", None),
])
def test_a1111_prompt_syntax_is_translated(tmp_path, prompt, ours, note):
    text = f"{prompt}\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 512x512, Version: v1.10.1"
    recipe = fetch_recipe(png(tmp_path, {"parameters": text}))
    assert recipe.request.prompt == ours
    assert recipe.notes == ((note,) if note else ()) + (GPU_NOTE,)


def test_a1111_sampler_diffusers_cannot_run_is_kept_and_named(tmp_path):
    text = "a cat\nSteps: 20, Sampler: UniPC, Schedule type: Polyexponential, CFG scale: 7, Seed: 5, Size: 512x512"
    recipe = fetch_recipe(png(tmp_path, {"parameters": text}))
    assert (recipe.request.sampler, recipe.request.schedule) == ("UniPC", None)
    assert recipe.notes == (GPU_NOTE, NOT_CARRIED + "Schedule type: Polyexponential (A1111 ignores it for UniPC)")
    text = "a cat\nSteps: 20, Sampler: DPM++ 2S a, Schedule type: Karras, CFG scale: 7, Seed: 5, Size: 512x512"
    recipe = fetch_recipe(png(tmp_path, {"parameters": text}, "2.png"))
    assert (recipe.request.sampler, recipe.request.schedule) == ("k_dpmpp_2_a", "karras")
    assert recipe.notes[-1].startswith("cannot run here as it is: sampler 'k_dpmpp_2_a' (A1111 'DPM++ 2S a'), "
                                       "ancestral, has no diffusers scheduler")


def test_a1111_euler_a_with_karras_runs_as_a1111_runs_it(tmp_path):
    # diffusers' Euler a has no Karras schedule; A1111's sigmas are made here (before: refused)
    text = "a cat\nSteps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, Seed: 5, Size: 512x512, RNG: CPU"
    recipe = fetch_recipe(png(tmp_path, {"parameters": text}))
    assert (recipe.request.sampler, recipe.request.schedule, recipe.notes) == ("k_euler_a", "karras", ())


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_a1111_infotext_in_jpeg_and_webp_exif(tmp_path, fmt):
    text = "a cat, 東京\nNegative prompt: dog\nSteps: 20, Sampler: DPM++ SDE, CFG scale: 7, Seed: 1, Size: 512x512, " \
           "Model: sd15, Version: v1.10.1"
    path = tmp_path / f"a.{fmt.lower()}"
    Image.new("RGB", (64, 64)).save(path, fmt, exif=user_comment_exif(text))
    recipe = fetch_recipe(path)
    assert recipe.request == DreamRequest("a cat, 東京 [dog]", steps=20, seed=1, width=512, height=512,
                                          cfg_scale=7.0, sampler="DPM++ SDE", schedule="karras", model="sd15", rng="nv")
    assert recipe.source == f"A1111 parameters ({'JPEG' if fmt == 'JPEG' else 'WebP'} EXIF UserComment) (v1.10.1)"
    assert recipe.notes == (GPU_NOTE,)


# ----- InvokeAI 1.x and 2.x

def test_invokeai_1_x_dream_forms(tmp_path):
    assert read_recipe(png(tmp_path, {"Dream": "a fantastic alien landscape -s 60 -S 3355519391 -W 576 -H 512 "
                                                "-C 7.5 -A k_lms"})) == \
        DreamRequest("a fantastic alien landscape", steps=60, seed=3355519391, width=576, height=512, cfg_scale=7.5,
                     sampler="k_lms")
    assert read_recipe(png(tmp_path, {"Dream": '"a cat" -s50 -W512 -H512 -C7.5 -mplms -S1579445059 -b1'})) == \
        DreamRequest("a cat", steps=50, seed=1579445059, width=512, height=512, cfg_scale=7.5, sampler="plms")


def test_invokeai_2_dream_with_switches_we_lack_keeps_the_rest(tmp_path):
    dream = ('"a photo of an astronaut:0.7 a horse:0.3" -s 20 -S 2891425233 -W 512 -H 512 -C 7.5 -I init.png '
             '-A k_dpmpp_2_a -T -f 0.9 -G 0.8 -ft gfpgan -U 2 0.6 --embiggen 2 0.75 --hires_fix --karras_max 10 -b 2')
    meta = {"model": "stable diffusion", "model_id": "stable-diffusion-1.5", "app_id": "invoke-ai/InvokeAI",
            "app_version": "2.2.4", "image": {"prompt": [{"prompt": "other", "weight": 1}], "seed": 1}}
    recipe = fetch_recipe(png(tmp_path, {"Dream": dream, "sd-metadata": json.dumps(meta)}))
    assert recipe.request == DreamRequest(
        "a photo of an astronaut:0.7 a horse:0.3", steps=20, seed=2891425233, width=512, height=512, cfg_scale=7.5,
        init_img="init.png", sampler="k_dpmpp_2_a", schedule="uniform", fit=True, strength=0.9, upscale=UpscaleSpec(2.0, 0.6),
        model="stable-diffusion-1.5")
    assert recipe.source == "Dream (invoke-ai/InvokeAI 2.2.4)"
    assert recipe.notes == (
        "--schedule uniform: InvokeAI 2.2.4 ran k_dpmpp_2_a on the model's own sigmas at 20 steps (Karras below 10)",
        NOT_CARRIED + "-G 0.8 (face restoration (GFPGAN)); -ft gfpgan (face restoration); --embiggen 2 0.75 "
        "(embiggen); -b 2 (batch size (each image is made on its own; -b1 is "
        "accepted)); --hires_fix (dreamshell's hires fix starts from noise and cannot take -I; the init image is "
        "kept)",
        "cannot run here as it is: sampler 'k_dpmpp_2_a' (A1111 'DPM++ 2S a'), ancestral, has no diffusers "
        "scheduler, so dreamshell cannot run it; try k_euler_a or k_dpm_2_a (ancestral), or dpmpp_2s (diffusers' "
        "DPMSolverSinglestepScheduler, not ancestral, which dreamshell ran for this name before)")


INVOKEAI_2_SD_METADATA = {
    "model": "stable diffusion", "model_id": "stable-diffusion-1.5", "model_hash": "cc6cb27103",
    "app_id": "invoke-ai/InvokeAI", "app_version": "2.2.5",
    "image": {"prompt": [{"prompt": "a tabby cat [blurry]", "weight": 0.5}, {"prompt": "a duck\\: yellow",
                                                                          "weight": 0.5}],
              "steps": 20, "cfg_scale": 7.5, "threshold": 0, "perlin": 0, "height": 512, "width": 576,
              "seed": 1287512637, "seamless": False, "hires_fix": False, "type": "img2img",
              "postprocessing": [{"type": "gfpgan", "strength": 0.8}, {"type": "esrgan", "scale": 4,
                                                                        "strength": 0.75}],
              "sampler": "k_euler_a", "variations": [{"seed": 42, "weight": 0.1}], "strength_steps": 0.6,
              "init_img": "outputs/init.png", "strength": 0.6, "orig_hash": "ab12", "inpaint_replace": 0.0}}


def test_invokeai_2_sd_metadata(tmp_path):
    recipe = fetch_recipe(png(tmp_path, {"sd-metadata": json.dumps(INVOKEAI_2_SD_METADATA)}))
    assert recipe.request == DreamRequest(
        "a tabby cat:0.5 a duck\\: yellow:0.5 [blurry]", steps=20, seed=1287512637, width=576, height=512,
        cfg_scale=7.5, sampler="k_euler_a", schedule="karras", init_img="outputs/init.png", strength=0.6,
        with_variations=((42, 0.1),), upscale=UpscaleSpec(4.0, 0.75), model="stable-diffusion-1.5")
    assert recipe.source == "sd-metadata (invoke-ai/InvokeAI 2.2.5)"
    assert recipe.notes == (
        "--schedule karras: InvokeAI 2.2.5 ran k_euler_a on Karras sigmas at 20 steps (Karras below 30)",
        NOT_CARRIED + 'postprocessing gfpgan {"strength": 0.8} (not supported by dreamshell)')


def test_invokeai_2_hires_fix_without_an_init_image_is_named(tmp_path):
    # InvokeAI 2.x's -W/-H are the final size of its hires fix; dreamshell's are the first pass
    dream = '"a castle" -s 30 -S 5 -W 1024 -H 1024 -C 7.5 -A k_euler --hires_fix'
    meta = {"app_id": "invoke-ai/InvokeAI", "app_version": "2.2.5",
            "image": {"prompt": [{"prompt": "a castle", "weight": 1}], "seed": 5, "steps": 30, "width": 1024,
                      "height": 1024, "sampler": "k_euler", "cfg_scale": 7.5, "hires_fix": True, "type": "txt2img"}}
    for chunks, source in (({"Dream": dream}, "Dream (InvokeAI 1.x/2.x or dreamshell)"),
                           ({"sd-metadata": json.dumps(meta)}, "sd-metadata (invoke-ai/InvokeAI 2.2.5)")):
        recipe = fetch_recipe(png(tmp_path, chunks))
        assert (recipe.request.width, recipe.request.hires_fix, recipe.request.hires_scale) == (1024, False, None)
        assert recipe.source == source
        assert recipe.notes[-1].startswith(NOT_CARRIED) and "InvokeAI 2.x's: " in recipe.notes[-1]
        assert recipe.notes[-1].endswith("is the final size, made from a first pass near the model's own size; for "
                                         "dreamshell's, give the first pass's -W/-H and --hires_scale)")


def test_invokeai_1_x_sd_metadata_with_a_string_prompt(tmp_path):
    meta = {"model": "stable diffusion", "model_id": "stable-diffusion-1.4", "model_hash": "fe4efff1e1",
            "app_id": "lstein/stable-diffusion", "app_version": "v1.15",
            "image": {"height": 512, "width": 512, "steps": 50, "cfg_scale": 7.5, "seed": 1287512637,
                      "sampler": "k_euler_a", "type": "txt2img", "postprocessing": None, "variations": [],
                      "prompt": "a cat:0.5 a duck:0.5"}}
    recipe = fetch_recipe(png(tmp_path, {"sd-metadata": json.dumps(meta)}))
    assert recipe.request == DreamRequest("a cat:0.5 a duck:0.5", steps=50, seed=1287512637, width=512,
                                          height=512, cfg_scale=7.5, sampler="k_euler_a", model="stable-diffusion-1.4")
    assert recipe.notes == ()


def test_invokeai_2_grid_of_random_seeds_names_them(tmp_path):
    image = {"prompt": [{"prompt": "a cat", "weight": 1}], "steps": 20, "seed": 5, "sampler": "k_lms"}
    meta = {"app_id": "invoke-ai/InvokeAI", "images": [dict(image, seed=5), dict(image, seed=900)]}
    recipe = fetch_recipe(png(tmp_path, {"sd-metadata": json.dumps(meta)}))
    assert recipe.request == DreamRequest("a cat", steps=20, seed=5, sampler="k_lms")
    assert recipe.notes == ("a grid of 2 images (seeds 5, 900); this is the first one's recipe",)


# ----- InvokeAI 3.x-6.x

INVOKEAI_3 = {"generation_mode": "txt2img", "positive_prompt": "a cat: sitting (fluffy)1.2 [sic]",
              "negative_prompt": "blurry", "width": 768, "height": 1020, "seed": 42, "rand_device": "cpu",
              "cfg_scale": 6.5, "steps": 30, "scheduler": "euler_k",
              "model": {"model_name": "Juggernaut XL", "base_model": "sdxl", "model_type": "main"},
              "loras": [{"lora": {"model_name": "detail", "base_model": "sdxl"}, "weight": 0.7}],
              "vae": {"model_name": "sdxl-vae", "base_model": "sdxl"}, "clip_skip": 2, "seamless_x": True,
              "seamless_y": False, "app_version": "3.4.0"}


def test_invokeai_3_metadata(tmp_path):
    recipe = fetch_recipe(png(tmp_path, {"invokeai_metadata": json.dumps(INVOKEAI_3), "invokeai_graph": "{}"}))
    assert recipe.request == DreamRequest("a cat\\: sitting (fluffy)1.2 (sic) <lora:detail:0.7> [blurry]", steps=30,
                                          seed=42, width=768, height=1024, cfg_scale=6.5, sampler="k_euler",
                                          schedule="karras", model="Juggernaut XL", clip_skip=3, vae="sdxl-vae")
    assert recipe.source == "InvokeAI 3.4.0 invokeai_metadata"
    assert recipe.notes == (
        "square brackets in the prompt became parentheses (in dreamshell [ ] is the negative prompt)",
        "size 768x1020 rounded to 768x1024 (dreamshell sizes are multiples of 8 from 64 to 8192)",
        "clip_skip 2 (InvokeAI counts the layers skipped) read as --clip_skip 3 (A1111's numbering)",
        NOT_CARRIED + "seamless on the x axis only (dreamshell tiles both)")


INVOKEAI_4 = {"app_version": "4.2.9", "generation_mode": "txt2img", "positive_prompt": "a lighthouse at dusk",
              "negative_prompt": "", "width": 1024, "height": 1024, "seed": 11, "rand_device": "cpu", "cfg_scale": 7.5,
              "steps": 30, "scheduler": "dpmpp_2m_k",
              "model": {"key": "a1b2", "hash": "blake3:9f", "name": "Dreamshaper 8", "base": "sd-1", "type": "main"},
              "loras": [{"model": {"key": "c3", "hash": "blake3:1e", "name": "add_detail", "base": "sd-1",
                                   "type": "lora"}, "weight": 0.75},
                        {"model": {"key": "c4", "hash": "blake3:2e", "name": "film grain", "base": "sd-1",
                                   "type": "lora"}, "weight": 1}],
              "vae": {"key": "d5", "hash": "blake3:3e", "name": "vae-ft-mse-840000-ema-pruned", "base": "sd-1",
                      "type": "vae"},
              "clip_skip": 1, "hrf_enabled": True, "hrf_method": "ESRGAN", "hrf_strength": 0.45}


def test_invokeai_4_loras_vae_clip_skip_and_high_resolution_fix(tmp_path):
    recipe = fetch_recipe(png(tmp_path, {"invokeai_metadata": json.dumps(INVOKEAI_4)}))
    # InvokeAI's 1024x1024 is the final size; its first pass is the model's own size (512 for sd-1)
    assert recipe.request == DreamRequest(
        "a lighthouse at dusk <lora:add_detail:0.75> <lora:film grain:1>", steps=30, seed=11, width=512, height=512,
        cfg_scale=7.5, sampler="k_dpmpp_2", schedule="karras", model="Dreamshaper 8", clip_skip=2,
        vae="vae-ft-mse-840000-ema-pruned", hires_fix=True, hires_scale=2.0, hires_steps=14, hires_strength=0.45,
        hires_upscaler="esrgan")
    assert recipe.notes == (
        "InvokeAI's hires pass ran about 14 of 30 steps (from 0.55 of the way): --hires_steps 14",
        "clip_skip 1 (InvokeAI counts the layers skipped) read as --clip_skip 2 (A1111's numbering)")


def test_invokeai_4_high_resolution_fix_of_another_shape(tmp_path):
    meta = dict(INVOKEAI_4, width=1216, height=832, hrf_method="bilinear", loras=[], clip_skip=0, vae=None)
    recipe = fetch_recipe(png(tmp_path, {"invokeai_metadata": json.dumps(meta)}))
    req = recipe.request
    # calculateHrfRes: 512x512's area at 1216:832 is 618.98x423.51, in multiples of 8 616x424; times 1.974026 that
    # is 1216x836.99, whose latents make 1216x832
    assert (req.width, req.height, req.hires_scale, req.hires_upscaler) == (616, 424, 1.974026, "lanczos")
    assert recipe.notes == (
        "InvokeAI's hires pass ran about 14 of 30 steps (from 0.55 of the way): --hires_steps 14",
        "hrf_method bilinear (InvokeAI resizes the decoded image) read as lanczos")
    meta.update(width=1000, height=1000, model=dict(INVOKEAI_4["model"], base="sd-3"))
    recipe = fetch_recipe(png(tmp_path, {"invokeai_metadata": json.dumps(meta)}, "sd3.png"))
    assert not recipe.request.hires_fix and recipe.request.width == 1000
    assert recipe.notes[-1] == NOT_CARRIED + ("high-resolution fix (hrf_method bilinear, hrf_strength 0.45) (its first "
                                              "pass depends on the model's base, sd-3)")


def test_invokeai_5_img2img_metadata(tmp_path):
    meta = {"app_version": "5.6.0", "generation_mode": "sd1_img2img", "positive_prompt": "a red fox",
            "negative_prompt": "", "width": 512, "height": 512, "seed": 7, "cfg_scale": 7, "steps": 25,
            "scheduler": "dpmpp_2m", "strength": 0.55, "init_image": "0d3c-….png",
            "model": {"key": "k", "hash": "blake3:x", "name": "Dreamshaper 8", "base": "sd-1", "type": "main"}}
    recipe = fetch_recipe(png(tmp_path, {"invokeai_metadata": json.dumps(meta)}))
    assert recipe.request == DreamRequest("a red fox", steps=25, seed=7, width=512, height=512, cfg_scale=7.0,
                                          sampler="k_dpmpp_2", model="Dreamshaper 8")
    assert recipe.notes == (NOT_CARRIED + "img2img from InvokeAI image 0d3c-….png at strength 0.55 (an InvokeAI "
                            "gallery name, not a path: add -I PATH -f STRENGTH)",)


# ----- ComfyUI

def comfy_graph(lora=False, sampler="KSampler"):
    graph = {
        "3": {"class_type": sampler, "inputs": {"seed": 8566257, "steps": 20, "cfg": 8, "sampler_name": "dpmpp_2m",
                                                 "scheduler": "karras", "denoise": 1, "model": ["4", 0],
                                                 "positive": ["6", 0], "negative": ["7", 0],
                                                 "latent_image": ["5", 0]}},
        "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"}},
        "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 510, "batch_size": 1}},
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "glass bottle, (purple galaxy:1.2)\nstars",
                                                         "clip": ["4", 1]}},
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "text, watermark", "clip": ["4", 1]}},
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
        "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "ComfyUI", "images": ["8", 0]}},
    }
    if lora:
        graph["10"] = {"class_type": "LoraLoader", "inputs": {"lora_name": "detail.safetensors", "strength_model": 0.8,
                                                              "strength_clip": 0.8, "model": ["4", 0],
                                                              "clip": ["4", 1]}}
        graph["3"]["inputs"]["model"] = ["10", 0]
    return graph


def test_comfyui_plain_graph(tmp_path):
    recipe = fetch_recipe(png(tmp_path, {"prompt": json.dumps(comfy_graph()), "workflow": "{}"}))
    assert recipe.request == DreamRequest("glass bottle, (purple galaxy)1.2 stars [text, watermark]", steps=20,
                                          seed=8566257, width=512, height=512, cfg_scale=8.0, sampler="k_dpmpp_2",
                                          schedule="karras", model="v1-5-pruned-emaonly")
    assert recipe.source == "ComfyUI prompt graph"
    assert recipe.notes == ("size 512x510 rounded to 512x512 (dreamshell sizes are multiples of 8 from 64 to 8192)",)


def test_comfyui_graph_with_a_lora_loader(tmp_path):
    recipe = fetch_recipe(png(tmp_path, {"prompt": json.dumps(comfy_graph(lora=True))}))
    assert recipe.request.model == "v1-5-pruned-emaonly"
    assert recipe.request.prompt == "glass bottle, (purple galaxy)1.2 stars <lora:detail:0.8> [text, watermark]"
    assert recipe.notes == ("size 512x510 rounded to 512x512 (dreamshell sizes are multiples of 8 from 64 to 8192)",)


def test_comfyui_loras_clip_skip_and_vae(tmp_path):
    graph = comfy_graph(lora=True)
    graph["10"]["inputs"].update(strength_model=0.8, strength_clip=0.5, lora_name="styles/detail.safetensors")
    graph["11"] = {"class_type": "LoraLoaderModelOnly", "inputs": {"lora_name": "lcm-lora-sdv1-5.safetensors",
                                                                   "strength_model": 1.0, "model": ["10", 0]}}
    graph["3"]["inputs"]["model"] = ["11", 0]
    graph["12"] = {"class_type": "CLIPSetLastLayer", "inputs": {"stop_at_clip_layer": -2, "clip": ["10", 1]}}
    graph["6"]["inputs"].update(clip=["12", 0], text="glass bottle <lora:ignored:1>")
    graph["13"] = {"class_type": "VAELoader", "inputs": {"vae_name": "sd15/vae-ft-mse-840000-ema-pruned.safetensors"}}
    graph["8"]["inputs"]["vae"] = ["13", 0]
    recipe = fetch_recipe(png(tmp_path, {"prompt": json.dumps(graph)}))
    assert recipe.request == DreamRequest(
        "glass bottle <lora:detail:0.8> <lora:lcm-lora-sdv1-5:1> [text, watermark]", steps=20, seed=8566257,
        width=512, height=512, cfg_scale=8.0, sampler="k_dpmpp_2", schedule="karras", model="v1-5-pruned-emaonly",
        clip_skip=2, vae="vae-ft-mse-840000-ema-pruned.safetensors")
    assert recipe.notes == (
        "LoRA lcm-lora-sdv1-5.safetensors (model only, strength_model 1) kept as <lora:lcm-lora-sdv1-5:1>: "
        "dreamshell gives a LoRA one weight for the UNet and the text encoder",
        "LoRA styles/detail.safetensors (strength_clip 0.5, strength_model 0.8) kept as <lora:detail:0.8>: "
        "dreamshell gives a LoRA one weight for the UNet and the text encoder",
        "size 512x510 rounded to 512x512 (dreamshell sizes are multiples of 8 from 64 to 8192)",
        NOT_CARRIED + "<lora:ignored:1> in the prompt (ComfyUI reads it as plain text; its LoraLoader nodes are the "
        "LoRAs)")


# ----- the session's LoRA, embedding and VAE folders (fetch_recipe's library)

def _safetensors(path, payload: bytes, metadata=None):
    header = {"w": {"dtype": "U8", "shape": [len(payload)], "data_offsets": [0, len(payload)]}}
    if metadata:
        header["__metadata__"] = metadata
    raw = json.dumps(header).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(struct.pack("<Q", len(raw)) + raw + payload)
    return path


def test_fetch_checks_the_hashes_against_the_session_folders(tmp_path):
    folders = Folders.under(tmp_path / "extras")
    _safetensors(folders.loras / "add_detail.safetensors", b"another file")       # not 7c6bad76eb54
    _safetensors(folders.loras / "sub" / "more_details.safetensors", b"x",
                 {"sshs_model_hash": "3b8aa1d351ef" + "0" * 52})                  # as the image records
    folders.embeddings.mkdir(parents=True)
    (folders.embeddings / "badhandv4.pt").write_bytes(b"not the same embedding")  # EasyNegative is missing
    folders.vaes.mkdir(parents=True)
    (folders.vaes / "kl-f8-anime2.ckpt").write_bytes(b"another VAE")
    library = Library(folders)
    path = png(tmp_path, {"parameters": CIVITAI})
    plain = fetch_recipe(path)
    recipe = fetch_recipe(path, library)
    assert recipe.request == plain.request
    assert recipe.notes[:len(plain.notes)] == plain.notes
    from dreamshell.weights.library import embedding_hash, lora_hash, vae_hash
    lora, emb, vae = (lora_hash(folders.loras / "add_detail.safetensors"),
                      embedding_hash(folders.embeddings / "badhandv4.pt"), vae_hash(folders.vaes / "kl-f8-anime2.ckpt"))
    assert recipe.notes[len(plain.notes):] == (
        f"LoRA add_detail: the file here (add_detail.safetensors, hash {lora}) is not the one the image was made "
        "with (hash 7c6bad76eb54); the image may come out different",
        f"embedding EasyNegative is not in the embeddings folder {folders.embeddings}: the word is read as plain text",
        f"embedding badhandv4: the file here (badhandv4.pt, hash {emb}) is not the one the image was made with "
        "(hash 5e40d722fc3d); the image may come out different",
        f"VAE kl-f8-anime2.ckpt: the file here (kl-f8-anime2.ckpt, hash {vae}) is not the one the image was made "
        "with (hash df3c506e51); the image may come out different")


def test_fetch_with_the_same_files_adds_no_note_and_names_a_missing_lora(tmp_path):
    from dreamshell.weights.library import vae_hash
    from dreamshell.line.parser import parse_request
    from dreamshell.store.pngmeta import ImageMeta, png_bytes
    folders = Folders.under(tmp_path / "extras")
    _safetensors(folders.loras / "detail.safetensors", b"weights")
    folders.embeddings.mkdir(parents=True)
    (folders.embeddings / "EasyNegative.safetensors").write_bytes(b"embedding")
    _safetensors(folders.vaes / "vae-ft-mse.safetensors", b"vae")
    library = Library(folders)
    req = parse_request('"a cat <lora:detail:0.7> [EasyNegative]" -s 20 -S 1 -W 512 -H 512 -C 7 -A k_euler '
                        '--model m --vae vae-ft-mse.safetensors')
    data = png_bytes(Image.new("RGB", (8, 8)), ImageMeta(req, extras=library.recipe_extras(req.prompt, req.vae)))
    path = tmp_path / "ours.png"
    path.write_bytes(data)
    assert fetch_recipe(path, library).notes == ()
    digest = hashlib.sha256(b"weights").hexdigest()[:12]
    assert fetch_recipe(path).recorded == RecipeExtras((("detail", 0.7, digest),), (("EasyNegative",
                                                        hashlib.sha256(b"embedding").hexdigest()[:12]),),
                                                       ("vae-ft-mse.safetensors", vae_hash(folders.vaes /
                                                                                           "vae-ft-mse.safetensors")))
    (folders.loras / "detail.safetensors").unlink()
    assert fetch_recipe(path, library).notes == (
        f"LoRA detail is not in the LoRA folder {folders.loras} (the image records its hash {digest})",)


def test_comfyui_other_graphs_are_one_clear_line(tmp_path):
    with pytest.raises(MetadataError) as e:
        read_recipe(png(tmp_path, {"prompt": json.dumps(comfy_graph(sampler="KSamplerAdvanced"))}))
    message = str(e.value)
    assert "\n" not in message and "it has 0 KSampler nodes" in message
    assert "dreamshell reads only the plain checkpoint -> CLIP text encode -> KSampler -> VAE decode graph" in message


# ----- limits: nothing huge reaches the input line

def _png_with_chunk(ctype: bytes, data: bytes) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buf, "PNG")
    raw = buf.getvalue()
    chunk = struct.pack(">I", len(data)) + ctype + data + struct.pack(">I", zlib.crc32(ctype + data))
    return raw[:33] + chunk + raw[33:]


@pytest.mark.parametrize("ctype, body, why", [
    (b"tEXt", b"parameters\0" + b"x" * 50_000_000, "the 'parameters' text chunk (47.7 MB, over the 1.0 MB limit)"),
    (b"zTXt", b"parameters\0\0" + zlib.compress(b"a" * 200_000_000, 9),
     "the 'parameters' text chunk inflates to more than 1.0 MB; not read (a compression bomb?)"),
    (b"iTXt", b"Dream\0\1\0\0\0" + zlib.compress(b"a" * 20_000_000, 9),
     "the 'Dream' text chunk inflates to more than 1.0 MB; not read (a compression bomb?)"),
])
def test_huge_and_bomb_text_chunks_are_one_line(tmp_path, ctype, body, why):
    path = tmp_path / "big.png"
    path.write_bytes(_png_with_chunk(ctype, body))
    with pytest.raises(MetadataError) as e:
        read_recipe(path)
    assert str(e.value) == f"{path}: its recipe cannot be read ({why})"


def test_pixels_are_never_decoded_so_a_huge_image_still_gives_its_recipe(tmp_path):
    def chunk(t, d):
        return struct.pack(">I", len(d)) + t + d + struct.pack(">I", zlib.crc32(t + d))
    ihdr = struct.pack(">IIBBBBB", 100_000, 100_000, 8, 2, 0, 0, 0)      # 10 gigapixels: PIL's bomb limit
    path = tmp_path / "huge.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"tEXt", b"Dream\0a cat -S 1")
                     + chunk(b"IDAT", zlib.compress(b"\0" * 1000)) + chunk(b"IEND", b""))
    assert read_recipe(path) == DreamRequest("a cat", seed=1)


def test_a_recovered_command_over_the_line_limit_is_refused(tmp_path):
    text = "word " * 4000 + "\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512"
    with pytest.raises(MetadataError, match=r"the recovered command is 20,\d{3} characters, over the 16,384"):
        read_recipe(png(tmp_path, {"parameters": text}))


def test_newlines_and_control_characters_never_reach_the_line(tmp_path):
    recipe = fetch_recipe(png(tmp_path, {"Dream": '"a cat\non a\x1b\x07 mat\x9b" -S 3'}))
    assert recipe.request.prompt == "a cat on a mat"
    assert "\n" not in format_request(recipe.request)
    assert recipe.notes == ("line breaks in the prompt became spaces (a command is one line)",
                            "line breaks and control characters in the prompt became spaces (a command is one line)")
    with pytest.raises(MetadataError) as e:   # a terminal-retitling OSC sequence: one plain line
        read_recipe(png(tmp_path, {"Dream": '"a\x1b]0;pwned\x07" -S 3'}, "osc.png"))
    assert not any(ord(c) < 32 for c in str(e.value))


def test_dry_run_fetch_prints_the_notes_and_one_line_for_a_huge_chunk(tmp_path, capsys):
    from dreamshell.cli import main
    good = png(tmp_path, {"parameters": A1111_V1_6.replace("Size: 512x768", "Size: 510x768")}, "good.png")
    big = tmp_path / "big.png"
    big.write_bytes(_png_with_chunk(b"tEXt", b"parameters\0" + b"x" * 5_000_000))
    commands = tmp_path / "cmds.txt"
    commands.write_text(f"!fetch {good}\n!fetch {big}\n")
    assert main(["--dry_run", "--from_file", str(commands)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out == [
        f'line 1: !fetch {good} -> "portrait of a knight, style\\\\: oil painting" -s 30 -S 1234 -W 512 -H 768 -C 6.5 '
        '-A k_dpmpp_2 --schedule karras --model v1-5-pruned-emaonly --rng nv',
        "line 1:   note: size 510x768 rounded to 512x768 (dreamshell sizes are multiples of 8 from 64 to 8192)",
        f"line 1:   note: {GPU_NOTE}",
        f"line 2: error: {big}: its recipe cannot be read (the 'parameters' text chunk (4.8 MB, over the 1.0 MB "
        "limit))",
        "1 bad line(s)"]


# ----- noise source, CivitAI's resources, a file cut short (issue 19)

def test_a1111_rng_cpu_is_dreamshells_own_noise_and_read_without_a_note(tmp_path):
    text = "a cat\nSteps: 20, Sampler: Euler, Schedule type: Uniform, CFG scale: 7, Seed: 5, Size: 512x512, RNG: CPU"
    recipe = fetch_recipe(png(tmp_path, {"parameters": text}))
    assert recipe.request == DreamRequest("a cat", steps=20, seed=5, width=512, height=512, cfg_scale=7.0,
                                          sampler="k_euler", schedule="uniform")
    assert recipe.notes == ()


@pytest.mark.parametrize("keys, rng, note", [
    (", RNG: NV", "nv", None), (", RNG: GPU", "nv", GPU_NOTE.replace("no RNG key (A1111's default: GPU)", "RNG: GPU")),
    ("", "nv", GPU_NOTE), (", RNG: CPU, ENSD: 31337", None, None), (", ENSD: 31337, RNG: nv", "nv", None),
    (", RNG: TPU", None, NOT_CARRIED + "RNG: TPU (a noise source dreamshell does not make: cpu, gpu, nv)")])
def test_a1111_noise_sources_and_ensd_are_read(tmp_path, keys, rng, note):
    # A1111 writes no RNG key for its default, GPU: read as nv, the same noise made without CUDA
    text = f"a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512{keys}, Version: v1.10.1"
    recipe = fetch_recipe(png(tmp_path, {"parameters": text}))
    assert (recipe.request.rng, recipe.request.ensd) == (rng, 31337 if "ENSD" in keys else 0)
    assert recipe.notes == ((note,) if note else ())


CIVITAI_RESOURCES = ('masterpiece, double exposure, negativeXL_D\nNegative prompt: negativeXL_D, greyscale\n'
           'Steps: 22, Sampler: DPM++ 2M Karras, CFG scale: 3.8, Seed: 894409639, Size: 832x1216, Clip skip: 2, '
           'Created Date: 2024-09-23T06:17:42.9952795Z, Civitai resources: [{"type":"checkpoint","modelVersionId":'
           '128078,"modelName":"SD XL","modelVersionName":"v1.0 VAE fix"},{"type":"lora","weight":0.85,'
           '"modelVersionId":210432,"modelName":"Double Exposure","modelVersionName":"Double Exposure"},'
           '{"type":"embed","weight":1,"modelVersionId":134583,"modelName":"negativeXL","modelVersionName":"D"},'
           '{"air":"urn:air:sdxl:lora:civitai:12@34","weight":0.8}], Civitai metadata: {"remixOfId":11}')


def test_civitai_resources_are_read_whole_and_each_named(tmp_path):
    # the shape of CivitAI's own files (2024: type/modelVersionId/modelName/modelVersionName/weight; later: air)
    recipe = fetch_recipe(png(tmp_path, {"parameters": CIVITAI_RESOURCES}))
    assert recipe.request == DreamRequest("masterpiece, double exposure, negativeXL_D [negativeXL_D, greyscale]",
                                          steps=22, seed=894409639, width=832, height=1216, cfg_scale=3.8,
                                          sampler="k_dpmpp_2", schedule="karras", clip_skip=2, rng="nv")
    assert recipe.notes == (
        GPU_NOTE,
        NOT_CARRIED + "Civitai resources: checkpoint 'SD XL' (version 'v1.0 VAE fix', version id 128078); "
        "LoRA 'Double Exposure' (version 'Double Exposure', weight 0.85, version id 210432); embedding 'negativeXL' "
        "(version 'D', weight 1, version id 134583); LoRA (no name) (weight 0.8, version id 34) (CivitAI names model "
        "pages, not files: dreamshell uses the prompt's own <lora:...> tags and words, --model and --vae); "
        "Created Date: 2024-09-23T06:17:42.9952795Z; Civitai metadata: {\"remixOfId\":11}",)


def test_a_json_value_that_does_not_close_is_read_as_before(tmp_path):
    text = 'a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 512x512, Civitai resources: [{"type"'
    recipe = fetch_recipe(png(tmp_path, {"parameters": text}))
    assert recipe.request.seed == 5 and recipe.notes[-1].endswith('Civitai resources: [{"type"')


def _cut(tmp_path, chunks, where):
    data = png(tmp_path, chunks, "whole.png").read_bytes()
    cut = tmp_path / "cut.png"
    cut.write_bytes(data[:where(data)])
    return cut


def test_a_file_cut_inside_a_text_chunk_gives_what_is_whole_and_says_the_rest_is_lost(tmp_path):
    line = '"a red circle" -s 20 -S 1 -W 64 -H 64 -C 5 -A k_euler'
    params = "a blue square\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 9, Size: 64x64"
    path = _cut(tmp_path, {"Dream": line, "parameters": params}, lambda d: d.index(b"a blue square") + 5)
    recipe = fetch_recipe(path)
    assert recipe.request.prompt == "a red circle" and recipe.request.seed == 1   # from the whole Dream chunk
    assert recipe.notes[0] == ("skipped: the file ends early (inside its 'parameters' text chunk, which is not read; "
                               "the text chunks before the cut are whole)")


def test_a_file_cut_in_its_pixels_keeps_its_recipe_with_one_note(tmp_path):
    path = _cut(tmp_path, {"parameters": "a blue square\nSteps: 20, Sampler: Euler, Schedule type: Uniform, CFG "
                                         "scale: 7, Seed: 9, Size: 64x64"}, lambda d: d.index(b"IDAT") + 6)
    recipe = fetch_recipe(path)
    assert recipe.request.seed == 9
    assert recipe.notes == ("skipped: the file ends early (inside its 'IDAT' chunk; the text chunks before the cut "
                            "are whole)", GPU_NOTE)
    whole = fetch_recipe(tmp_path / "whole.png")
    assert whole.notes == (GPU_NOTE,)   # the cut file names only what the whole one does, and the cut


# ----- few-step recipes: LCM, TCD, Forge's Turbo schedule, explicit timesteps, eta (issue 17)

def _ours(tmp_path, line):
    from dreamshell.line.parser import parse_request
    from dreamshell.store.formats import a1111_parameters
    from dreamshell.store.pngmeta import ImageMeta
    req = parse_request(line)
    text = a1111_parameters(ImageMeta(req))
    foreign = "\n".join(text.splitlines()[:-1] + [text.splitlines()[-1].rsplit(", Dreamshell: ", 1)[0]])
    return req, text, fetch_recipe(png(tmp_path, {"parameters": foreign}))


@pytest.mark.parametrize("line, keys, back", [
    ('"a cat" -s 4 -S 1 -W 512 -H 512 -C 1 -A LCM',
     "Steps: 4, Sampler: LCM, Schedule type: SGM Uniform, CFG scale: 1", '-A LCM --schedule sgm_uniform'),
    ('"a cat" -s 4 -S 1 -W 512 -H 512 -C 1 -A LCM --timesteps 999,749,499,249',
     "Steps: 4, Sampler: LCM, Schedule type: Turbo, CFG scale: 1", '-A LCM --timesteps 999,749,499,249'),
    ('"a cat" -s 4 -S 1 -W 512 -H 512 -C 1 -A k_euler --timesteps 999,749,499,249',
     "Steps: 4, Sampler: Euler, Schedule type: Turbo, CFG scale: 1", '-A k_euler --timesteps 999,749,499,249'),
    ('"a cat" -s 3 -S 1 -W 512 -H 512 -C 1 -A k_euler --timesteps 999,899,799',
     "Steps: 3, Sampler: Euler, CFG scale: 1", '-A k_euler --timesteps 999,899,799'),
    ('"a cat" -s 4 -S 1 -W 512 -H 512 -C 1 -A TCD --eta 0.3',
     "Steps: 4, Sampler: TCD, Schedule type: DDIM, CFG scale: 1", '-A TCD --schedule ddim --eta 0.3'),
    ('"a cat" -s 8 -S 1 -W 512 -H 512 -C 1 -A ddim --schedule sgm_uniform --eta 0.5',
     "Steps: 8, Sampler: DDIM, Schedule type: SGM Uniform, CFG scale: 1", '-A ddim --schedule ddim --eta 0.5'),
])
def test_few_step_recipes_written_as_a1111_and_forge_read_them(tmp_path, line, keys, back):
    req, text, recipe = _ours(tmp_path, line)
    assert keys in text
    if req.timesteps:
        assert 'Timesteps: "' + ",".join(map(str, req.timesteps)) + '"' in text
    if req.eta is not None:
        assert ("Eta DDIM: " if req.sampler == "ddim" else "Eta: ") + format(req.eta, "g") in text
    assert format_request(recipe.request).endswith(back), format_request(recipe.request)
    assert "Timesteps" not in " ".join(recipe.notes) and "Eta" not in " ".join(recipe.notes)


def test_our_few_step_lines_replay_exactly_from_the_dreamshell_key(tmp_path):
    req, text, _ = _ours(tmp_path, '"a cat" -s 4 -S 1 -W 512 -H 512 -C 1 -A TCD --timesteps 999,749,499,249 --eta 0.3')
    assert fetch_recipe(png(tmp_path, {"parameters": text}, "ours.png")).request == req


def test_forge_turbo_schedule_and_a1111_lcm_infotexts(tmp_path):
    text = ("a cat\nSteps: 4, Sampler: Euler, Schedule type: Turbo, CFG scale: 1, Seed: 5, Size: 1024x1024, "
            "Version: f2.0.1v1.10.1-previous-669-gdfdcbab6")
    assert format_request(fetch_recipe(png(tmp_path, {"parameters": text})).request) == \
        '"a cat" -s 4 -S 5 -W 1024 -H 1024 -C 1 -A k_euler --schedule turbo --rng nv'
    text = "a cat <lora:lcm-lora-sdv1-5:1>\nSteps: 6, Sampler: LCM, Schedule type: SGM Uniform, CFG scale: 1.5, " \
           "Seed: 5, Size: 512x512, Version: v1.10.1"
    recipe = fetch_recipe(png(tmp_path, {"parameters": text}, "lcm.png"))
    assert format_request(recipe.request) == \
        '"a cat <lora:lcm-lora-sdv1-5:1>" -s 6 -S 5 -W 512 -H 512 -C 1.5 -A LCM --schedule sgm_uniform --rng nv'
    assert recipe.notes == (GPU_NOTE,)


def test_a1111_eta_for_a_sampler_without_one_is_named(tmp_path):
    text = "a cat\nSteps: 20, Sampler: Euler a, CFG scale: 7, Seed: 5, Size: 512x512, Eta: 0.67"
    recipe = fetch_recipe(png(tmp_path, {"parameters": text}))
    assert recipe.request.eta is None
    assert recipe.notes == (GPU_NOTE, NOT_CARRIED + "Eta: 0.67")


def test_a1111_bad_timesteps_are_named(tmp_path):
    text = 'a cat\nSteps: 2, Sampler: Euler, CFG scale: 1, Seed: 5, Size: 512x512, Timesteps: "499,999"'
    recipe = fetch_recipe(png(tmp_path, {"parameters": text}))
    assert recipe.request.timesteps == () and recipe.request.steps == 2
    assert recipe.notes[-1].startswith(NOT_CARRIED + "Timesteps 499,999 (999 after 499 does not decrease")


def comfy_custom(sigmas: dict, sampler_name="euler_ancestral", cfg=1.0):
    graph = comfy_graph()
    del graph["3"]
    graph["3"] = {"class_type": "SamplerCustom", "inputs": {
        "model": ["4", 0], "add_noise": True, "noise_seed": 42, "cfg": cfg, "positive": ["6", 0],
        "negative": ["7", 0], "sampler": ["20", 0], "sigmas": ["21", 0], "latent_image": ["5", 0]}}
    graph["20"] = {"class_type": "KSamplerSelect", "inputs": {"sampler_name": sampler_name}}
    graph["21"] = {"class_type": sigmas.pop("class_type"), "inputs": {"model": ["4", 0], **sigmas}}
    graph["8"]["inputs"]["samples"] = ["3", 0]
    return graph


@pytest.mark.parametrize("sigmas, sampler_name, tail, cannot", [
    ({"class_type": "SDTurboScheduler", "steps": 1, "denoise": 1.0}, "euler_ancestral",
     "-s 1 -S 42 -W 512 -H 512 -C 1 -A k_euler_a --schedule sgm_uniform", False),
    ({"class_type": "SDTurboScheduler", "steps": 4, "denoise": 1.0}, "euler",
     "-s 4 -S 42 -W 512 -H 512 -C 1 -A k_euler --timesteps 999,899,799,699", False),
    ({"class_type": "SDTurboScheduler", "steps": 2, "denoise": 1.0}, "euler_ancestral",
     "-s 2 -S 42 -W 512 -H 512 -C 1 -A k_euler_a --timesteps 999,899", True),
    ({"class_type": "BasicScheduler", "scheduler": "sgm_uniform", "steps": 4, "denoise": 1.0}, "lcm",
     "-s 4 -S 42 -W 512 -H 512 -C 1 -A LCM --schedule sgm_uniform", False),
    ({"class_type": "BasicScheduler", "scheduler": "simple", "steps": 4, "denoise": 1.0}, "tcd",
     "-s 4 -S 42 -W 512 -H 512 -C 1 -A TCD --schedule simple", False),
])
def test_comfyui_sampler_custom_with_turbo_and_basic_schedulers(tmp_path, sigmas, sampler_name, tail, cannot):
    recipe = fetch_recipe(png(tmp_path, {"prompt": json.dumps(comfy_custom(sigmas, sampler_name))}))
    assert format_request(recipe.request.with_(model=None)).endswith(tail), format_request(recipe.request)
    assert any("cannot run explicit --timesteps" in n for n in recipe.notes) == cannot


def test_comfyui_sampler_custom_with_other_sigmas_is_one_line(tmp_path):
    graph = comfy_custom({"class_type": "KarrasScheduler", "steps": 4})
    with pytest.raises(MetadataError) as e:
        read_recipe(png(tmp_path, {"prompt": json.dumps(graph)}))
    assert "the sigmas come from KarrasScheduler, not a BasicScheduler or SDTurboScheduler" in str(e.value)


def test_comfyui_ksampler_lcm_and_tcd_names(tmp_path):
    for name, ours in (("lcm", "LCM"), ("tcd", "TCD")):
        graph = comfy_graph()
        graph["3"]["inputs"].update(sampler_name=name, scheduler="sgm_uniform", steps=4, cfg=1.0)
        recipe = fetch_recipe(png(tmp_path, {"prompt": json.dumps(graph)}, f"{name}.png"))
        assert (recipe.request.sampler, recipe.request.schedule) == (ours, "sgm_uniform")


def test_civitai_hashes_are_matched_against_the_session_folders(tmp_path):
    # CivitAI's A1111 extension writes `Hashes: {"model": H, "vae": H, "lora:NAME": H, "embed:NAME": H}`, each H the
    # start of the file's sha256: a LoRA kept under another name, an embedding that is another file, a VAE found by it
    folders = Folders.under(tmp_path / "extras")
    lora = _safetensors(folders.loras / "DoubleExposure_v1.safetensors", b"the double exposure lora")
    folders.embeddings.mkdir(parents=True)
    (folders.embeddings / "negativeXL_D.safetensors").write_bytes(b"another embedding")
    vae = _safetensors(folders.vaes / "sdxl_vae.safetensors", b"the sdxl vae")
    missing = _safetensors(tmp_path / "elsewhere" / "badhand.pt", b"not in any folder")
    sha = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in (lora, vae, missing)}
    other = hashlib.sha256(b"the embedding CivitAI used").hexdigest()[:10]
    text = ('<lora:double_exposure:0.8> a fox, negativeXL_D\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, '
            'Size: 512x512, RNG: CPU, Hashes: {"model": "31e35c80fc", "vae": "' + sha[vae][:10] + '", '
            '"lora:double_exposure": "' + sha[lora][:10] + '", "embed:negativeXL_D": "' + other + '", '
            '"embed:badhand": "' + sha[missing][:10] + '"}')
    path = png(tmp_path, {"parameters": text})
    plain = fetch_recipe(path)
    assert plain.notes == ()   # the Hashes key is read (not "not carried over"), and used only with the folders
    assert plain.recorded.sha256 == (("checkpoint", "", "31e35c80fc"), ("vae", "", sha[vae][:10]),
                                     ("lora", "double_exposure", sha[lora][:10]),
                                     ("embedding", "negativeXL_D", other), ("embedding", "badhand", sha[missing][:10]))
    emb = folders.embeddings / "negativeXL_D.safetensors"
    assert fetch_recipe(path, Library(folders)).notes == (
        f"LoRA double_exposure is not in the LoRA folder {folders.loras}",
        f"the VAE: CivitAI records sha256 {sha[vae][:10]}, which is sdxl_vae.safetensors in {folders.vaes} "
        "(add --vae sdxl_vae.safetensors)",
        f"LoRA double_exposure: CivitAI records sha256 {sha[lora][:10]}, which is DoubleExposure_v1.safetensors in "
        f"{folders.loras} (tag it <lora:DoubleExposure_v1>)",
        f"embedding negativeXL_D: the file here (negativeXL_D.safetensors, hash "
        f"{hashlib.sha256(emb.read_bytes()).hexdigest()[:10]}) is not the one the image was made with (hash {other}); "
        "the image may come out different",
        f"embedding badhand is not in the embeddings folder {folders.embeddings} (CivitAI records sha256 "
        f"{sha[missing][:10]}): the word is read as plain text")
