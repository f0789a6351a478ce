"""Recipes read from the peers' files: A1111 infotexts (several versions; PNG, JPEG and WebP EXIF),
InvokeAI 1.x-2.x Dream/sd-metadata, InvokeAI 3+ invokeai_metadata, ComfyUI prompt graphs. Each
fixture follows the documented format; each test asserts every field and every note."""

import io
import json
import struct
import zlib

import pytest
from PIL import Image, PngImagePlugin

from dreamshell.formatter import format_request
from dreamshell.pngmeta import MetadataError, fetch_recipe, read_recipe
from dreamshell.request import DreamRequest, UpscaleSpec

NOT_CARRIED = "not carried over: "


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
        seed=965400086, width=512, height=512, cfg_scale=7.0, sampler="k_euler_a", schedule="uniform")
    assert recipe.source == "A1111 parameters"
    assert recipe.notes == (NOT_CARRIED + "Model hash: 45dee52b (no model name; dreamshell's model is used)",)


def test_a1111_1_6_combined_sampler_name_and_literal_colon(tmp_path):
    recipe = fetch_recipe(png(tmp_path, {"parameters": A1111_V1_6}))
    assert recipe.request == DreamRequest("portrait of a knight, style\\: oil painting", steps=30, seed=1234,
                                          width=512, height=768, cfg_scale=6.5, sampler="k_dpmpp_2",
                                          schedule="karras", model="v1-5-pruned-emaonly")
    assert recipe.source == "A1111 parameters (v1.6.0)" and recipe.notes == ()


@pytest.mark.parametrize("version, schedule", [("v1.6.0", "uniform"), ("v1.10.1", "karras"), (None, "karras"),
                                               ("f2.0.1v1.10.1-previous-313-g8a042934", "karras")])
def test_a1111_automatic_schedule_means_what_that_version_ran(tmp_path, version, schedule):
    text = "a cat\nSteps: 20, Sampler: DPM++ 2M, CFG scale: 7, Seed: 5, Size: 512x512"
    text += f", Version: {version}" if version else ""
    req = read_recipe(png(tmp_path, {"parameters": text}))
    assert (req.sampler, req.schedule) == ("k_dpmpp_2", schedule)


def test_a1111_1_10_everything_dropped_is_named(tmp_path):
    recipe = fetch_recipe(png(tmp_path, {"parameters": A1111_V1_10}))
    assert recipe.request == DreamRequest(
        "masterpiece, (best quality)1.2, cat, a castle [lowres, (bad anatomy)0.9091]", steps=28, width=984,
        height=1264, cfg_scale=7.0, sampler="k_dpmpp_2", schedule="karras", model="v1-5-pruned-emaonly",
        with_variations=((77, 0.3),), seamless=True)
    assert recipe.request.seed is None      # Seed: -1 is a new random seed, not -S -1 (the last image's)
    assert recipe.source == "A1111 parameters (v1.10.1)"
    assert recipe.notes == (
        "BREAK in the prompt (A1111: start a new 75-token chunk) became ', '; dreamshell has no chunk break",
        "[dog:cat:0.5] (A1111 prompt editing: 'dog' then 'cat' from 0.5) kept as 'cat', the part A1111 uses for "
        "50% of the steps",
        "seed -1 (random) read as a new random seed; no -S on the line",
        "size 985x1266 rounded to 984x1264 (dreamshell sizes are multiples of 8 from 64 to 8192)",
        NOT_CARRIED + "LoRA add_detail (weight 0.8; lora tags are not applied by dreamshell yet); "
        "hires fix (Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent, Denoising strength: 0.7; it comes "
        "with a later dreamshell); VAE hash: 735e4c3a44; VAE: vae-ft-mse.safetensors; Clip skip: 2; "
        "Lora hashes: add_detail: 7c6bad76eb54")


@pytest.mark.parametrize("prompt, ours, note", [
    ("style: oil painting", "style\\: oil painting", None),
    ("\\(literal\\) parens", "\\(literal\\) parens", None),
    ("a (cat:1.3) and [dog]", "a (cat)1.3 and (dog)0.9091", None),
    ("a [cat|dog]", "a cat", "[cat|dog] (A1111: alternate each step) kept as its first option 'cat'"),
    ("[fire::0.3] ice", "ice", "[fire::0.3] (A1111 prompt editing: 'fire' then '' from 0.3) kept as '', the part "
                               "A1111 uses for 70% of the steps"),
    ("[fire:ice:0.8] storm", "fire storm", "[fire:ice:0.8] (A1111 prompt editing: 'fire' then 'ice' from 0.8) "
                                           "kept as 'fire', the part A1111 uses for 80% of the steps"),
    ("a cat :1.2 AND a dog :0.8", "a cat:1.2 a dog:0.8",
     "AND (A1111 composable diffusion: the prompts' guidance is added) read as a dreamshell blend "
     "'a cat:1.2 a dog:0.8' (the prompts' embeddings are mixed)"),
    ("unmatched ] and ( open", "unmatched \\) and (open)1.1", None),
])
def test_a1111_prompt_syntax_is_translated(tmp_path, prompt, ours, note):
    text = f"{prompt}\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 5, Size: 512x512, Version: v1.10.1"
    recipe = fetch_recipe(png(tmp_path, {"parameters": text}))
    assert recipe.request.prompt == ours
    assert recipe.notes == ((note,) if note else ())


def test_a1111_sampler_diffusers_cannot_run_is_kept_and_named(tmp_path):
    text = "a cat\nSteps: 20, Sampler: Euler a, Schedule type: Karras, CFG scale: 7, Seed: 5, Size: 512x512"
    recipe = fetch_recipe(png(tmp_path, {"parameters": text}))
    assert (recipe.request.sampler, recipe.request.schedule) == ("k_euler_a", "karras")
    assert recipe.notes == ("cannot run here as it is: sampler 'k_euler_a' cannot run with the 'Karras' schedule: "
                            "diffusers' EulerAncestralDiscreteScheduler has no use_karras_sigmas",)


@pytest.mark.parametrize("fmt", ["JPEG", "WEBP"])
def test_a1111_infotext_in_jpeg_and_webp_exif(tmp_path, fmt):
    text = "a cat, 東京\nNegative prompt: dog\nSteps: 20, Sampler: DPM++ SDE, CFG scale: 7, Seed: 1, Size: 512x512, " \
           "Model: sd15, Version: v1.10.1"
    path = tmp_path / f"a.{fmt.lower()}"
    Image.new("RGB", (64, 64)).save(path, fmt, exif=user_comment_exif(text))
    recipe = fetch_recipe(path)
    assert recipe.request == DreamRequest("a cat, 東京 [dog]", steps=20, seed=1, width=512, height=512,
                                          cfg_scale=7.0, sampler="DPM++ SDE", schedule="karras", model="sd15")
    assert recipe.source == f"A1111 parameters ({'JPEG' if fmt == 'JPEG' else 'WebP'} EXIF UserComment) (v1.10.1)"
    assert recipe.notes == ()


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
        "(embiggen); --hires_fix (the high-resolution fix); --karras_max 10 (karras_max); -b 2 (batch size (each "
        "image is made on its own; -b1 is accepted))",
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
        NOT_CARRIED + 'postprocessing gfpgan {"strength": 0.8} (not supported by dreamshell)',
        "cannot run here as it is: sampler 'k_euler_a' cannot run with the 'Karras' schedule: diffusers' "
        "EulerAncestralDiscreteScheduler has no use_karras_sigmas")


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
    assert recipe.request == DreamRequest("a cat\\: sitting (fluffy)1.2 (sic) [blurry]", steps=30, seed=42,
                                          width=768, height=1024, cfg_scale=6.5, sampler="k_euler",
                                          schedule="karras", model="Juggernaut XL")
    assert recipe.source == "InvokeAI 3.4.0 invokeai_metadata"
    assert recipe.notes == (
        "square brackets in the prompt became parentheses (in dreamshell [ ] is the negative prompt)",
        "size 768x1020 rounded to 768x1024 (dreamshell sizes are multiples of 8 from 64 to 8192)",
        NOT_CARRIED + "seamless on the x axis only (dreamshell tiles both); LoRA detail (weight 0.7; LoRAs come "
        "with a later dreamshell); clip_skip: 2 (comes with a later dreamshell); vae: sdxl-vae (comes with a "
        "later dreamshell)")


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
    assert recipe.notes[-1] == NOT_CARRIED + "LoRA detail.safetensors (weight 0.8; LoRAs come with a later dreamshell)"


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
        '-A k_dpmpp_2 --schedule karras --model v1-5-pruned-emaonly',
        "line 1:   note: size 510x768 rounded to 512x768 (dreamshell sizes are multiples of 8 from 64 to 8192)",
        f"line 2: error: {big}: its recipe cannot be read (the 'parameters' text chunk (4.8 MB, over the 1.0 MB "
        "limit))",
        "1 bad line(s)"]
