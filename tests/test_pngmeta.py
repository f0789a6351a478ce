"""Our three PNG chunks: what each holds, and that each gives the recipe back (REFERENCE.md 3)."""

import io
import json

import pytest
from PIL import Image, PngImagePlugin

from dreamshell.weights.library import RecipeExtras
from dreamshell.line.formatter import format_request
from dreamshell.line.parser import ParseError, parse_request
from dreamshell.store.pngmeta import (ImageMeta, MetadataError, a1111_parameters, fetch_recipe, parse_a1111, png_bytes,
                                read_chunks, read_recipe)

RESOLVED = parse_request('"a fantastic alien landscape, 8k [blurry, dark]" -s 60 -S 3355519391 -W 576 -H 512 '
                         '-C 7.5 -A k_lms --model demo')
FULL = parse_request('"a (red)1.3 circle+ on style\\: flat:0.7 a square:0.3 [blurry]" -s 20 -S 7 -W 64 -H 64 -C 5 '
                     '-A k_dpmpp_2 --schedule karras --model demo -I in.png -f 0.6 --fit -U 2 0.5 '
                     '-V 3:0.2 --seamless')
# a resolved hires line (all its values set) with two LoRAs, a negative embedding, clip skip 2 and a VAE
EXTRAS_LINE = parse_request('"a cat <lora:add_detail:0.8>, (red)1.3 fur <lora:film_grain:0.5> [lowres, EasyNegative]" '
                            '-s 28 -S 42 -W 512 -H 768 -C 7 -A k_dpmpp_2 --schedule karras --model dreamshaper_8 '
                            '--clip_skip 2 --vae vae-ft-mse-840000-ema-pruned.safetensors --hires_fix --hires_scale 2 '
                            '--hires_steps 15 --hires_strength 0.45 --hires_upscaler esrgan')
EXTRAS = RecipeExtras((("add_detail", 0.8, "7c6bad76eb54"), ("film_grain", 0.5, "0123456789ab")),
                      (("EasyNegative", "c74b4e810b03"),), ("vae-ft-mse-840000-ema-pruned.safetensors", "735e4c3a44"))
MODEL_HASH = "879db523c30d3b9017143d56705015e15a2cb5628762c11d086fed9538abd7fd"


def png_with(chunks: dict[str, str]) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in chunks.items():
        info.add_text(k, v)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


def _write(tmp_path, data: bytes, name="img.png"):
    p = tmp_path / name
    p.write_bytes(data)
    return p


def _chunks(tmp_path, request, **meta):
    return read_chunks(_write(tmp_path, png_bytes(Image.new("RGB", (8, 8)), ImageMeta(request, **meta)), "c.png"))


def test_all_three_chunks_are_written_as_text(tmp_path):
    data = png_bytes(Image.new("RGB", (8, 8)), ImageMeta(RESOLVED, model_hash="ab" * 32, app_version="0.1.0"))
    assert b"tEXtDream" in data and b"tEXtsd-metadata" in data and b"tEXtparameters" in data
    chunks = read_chunks(_write(tmp_path, data))
    # InvokeAI 2.x's invoke> parser rejects --model: the model is in sd-metadata and Model: instead; its k_ samplers
    # take --karras_max (0: the model's own sigmas, the nearest to ours)
    assert chunks["Dream"] == format_request(RESOLVED.with_(model=None)) + " --karras_max 0"
    meta = json.loads(chunks["sd-metadata"])
    assert meta["model_id"] == "demo" and meta["model_hash"] == "ab" * 32 and meta["app_id"] == "dreamshell"
    image = meta["image"]
    assert (image["seed"], image["steps"], image["cfg_scale"], image["sampler"], image["width"],
            image["height"], image["type"]) == (3355519391, 60, 7.5, "k_lms", 576, 512, "txt2img")
    assert image["prompt"] == [{"prompt": "a fantastic alien landscape, 8k [blurry, dark]", "weight": 1.0}]
    params = chunks["parameters"].splitlines()
    assert params[0] == "a fantastic alien landscape, 8k"
    assert params[1] == "Negative prompt: blurry, dark"
    assert params[2].startswith("Steps: 60, Sampler: LMS, Schedule type: DDIM, CFG scale: 7.5, Seed: 3355519391, "
                                "Size: 576x512, Model hash: ababababab, Model: demo, RNG: CPU, Dreamshell: ")


def test_a1111_parameters_carry_schedule_variations_tiling_upscaler_and_weights(tmp_path):
    prompt, negative, params = parse_a1111(_chunks(tmp_path, FULL)["parameters"])
    assert prompt == "a (red:1.3) (circle:1.1) on style: flat :0.7 AND a square :0.3"
    assert negative == "blurry"
    assert params == {"Steps": "20", "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": "5", "Seed": "7",
                      "Size": "64x64", "Model": "demo", "Denoising strength": "0.6", "Variation seed": "3",
                      "Variation seed strength": "0.2", "RNG": "CPU", "Tiling": "True", "Postprocess upscale by": "2",
                      "Postprocess upscaler": "R-ESRGAN 2x+", "Postprocess upscaler 2": "Lanczos",
                      "Postprocess upscaler 2 visibility": "0.5", "Dreamshell": format_request(FULL)}


@pytest.mark.parametrize("line, sampler, schedule", [
    ("-A k_euler", "Euler", "DDIM"),                 # our default: the model's `leading` spacing
    ("-A k_dpmpp_2", "DPM++ 2M", "DDIM"),            # not A1111's Automatic (which is Karras for DPM++ 2M)
    ("-A k_dpmpp_2 --schedule automatic", "DPM++ 2M", "Karras"),
    ("-A k_euler_a --schedule automatic", "Euler a", "Uniform"),
    ('-A "DPM++ 2M SDE" --schedule automatic', "DPM++ 2M SDE", "Exponential"),
    ('-A "DPM++ 2M Karras"', "DPM++ 2M", "Karras"),
    ("-A ddim", "DDIM", None),                       # A1111 ignores schedules for DDIM
    ("-A UniPC --schedule sgm_uniform", "UniPC", "SGM Uniform"),
])
def test_a1111_sampler_and_schedule_are_written_as_a1111_runs_them(tmp_path, line, sampler, schedule):
    req = parse_request(f'"a cat" -s 20 -S 1 -W 64 -H 64 -C 5 {line}')
    params = parse_a1111(a1111_parameters(ImageMeta(req)))[2]
    assert (params["Sampler"], params.get("Schedule type")) == (sampler, schedule)


def test_sd_metadata_is_what_invokeai_2_reads(tmp_path):
    meta = json.loads(_chunks(tmp_path, FULL, postprocessing=({"type": "esrgan", "scale": 2, "strength": 0.5},))
                      ["sd-metadata"])
    image = meta["image"]
    assert image["prompt"] == [{"prompt": "a (red)1.3 circle+ on style\\: flat [blurry]", "weight": 0.7},
                               {"prompt": "a square", "weight": 0.3}]
    assert image["upscale"] == [2.0, 0.5] and image["variations"] == [{"seed": 3, "weight": 0.2}]
    assert (image["init_img"], image["strength"], image["fit"], image["seamless"], image["schedule"]) == \
        ("in.png", 0.6, True, True, "karras")
    assert image["postprocessing"] == [{"type": "esrgan", "scale": 2, "strength": 0.5}]


def test_grid_sd_metadata_lists_every_image(tmp_path):
    req = RESOLVED.with_(iterations=3, grid=True)
    meta = json.loads(_chunks(tmp_path, req, image_type="grid")["sd-metadata"])
    assert "image" not in meta and [i["seed"] for i in meta["images"]] == [3355519391, 3355519392, 3355519393]
    only = _write(tmp_path, png_with({"sd-metadata": json.dumps(meta)}), "grid.png")
    assert read_recipe(only) == req


@pytest.mark.parametrize("keep", ["sd-metadata", "parameters"])
@pytest.mark.parametrize("request_", [RESOLVED, FULL])
def test_each_chunk_alone_gives_back_the_request(tmp_path, keep, request_):
    full = _chunks(tmp_path, request_, model_hash="cd" * 32)
    recipe = fetch_recipe(_write(tmp_path, png_with({keep: full[keep]}), "one.png"))
    assert recipe.request == request_ and recipe.notes == ()


def test_dream_alone_has_no_model_and_the_file_puts_it_back(tmp_path):
    full = _chunks(tmp_path, FULL)
    assert full["Dream"] == format_request(FULL.with_(model=None, schedule=None)) + " --karras_max 1000"
    alone = fetch_recipe(_write(tmp_path, png_with({"Dream": full["Dream"]}), "dream.png"))
    assert alone.request == FULL.with_(model=None) and alone.notes == (
        "--schedule karras: InvokeAI 2.x ran k_dpmpp_2 on Karras sigmas at 20 steps (Karras below 1000)",)
    both = _write(tmp_path, png_with({"Dream": full["Dream"], "sd-metadata": full["sd-metadata"]}), "two.png")
    assert read_recipe(both) == FULL


def test_non_latin1_prompt_survives(tmp_path):
    req = RESOLVED.with_(prompt="東京の夜景 \"quoted\" cat's \\ slash")
    path = _write(tmp_path, png_bytes(Image.new("RGB", (8, 8)), ImageMeta(req)))
    assert read_recipe(path) == req


def test_a1111_text_quotes_values_with_commas():
    req = RESOLVED.with_(model="my, model")
    last = a1111_parameters(ImageMeta(req)).splitlines()[-1]
    assert 'Model: "my, model"' in last
    assert parse_a1111(a1111_parameters(ImageMeta(req)))[2]["Model"] == "my, model"


def test_missing_broken_and_empty_metadata_are_clear_messages(tmp_path):
    with pytest.raises(MetadataError, match="no such file"):
        read_recipe(tmp_path / "nope.png")
    with pytest.raises(MetadataError, match="not a readable image"):
        read_recipe(_write(tmp_path, b"this is not a png", "fake.png"))
    with pytest.raises(MetadataError, match="no recipe in this image"):
        read_recipe(_write(tmp_path, png_with({}), "bare.png"))
    with pytest.raises(MetadataError, match="sd-metadata is not JSON"):
        read_recipe(_write(tmp_path, png_with({"sd-metadata": "{not json"}), "broken.png"))


def test_metadata_is_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"  # an absolute path: found wherever the code would run
    payload = f'__import__("os").system("touch {marker}")'
    evil = {"Dream": f"{payload} -S 1",
            "sd-metadata": json.dumps({"image": {"prompt": payload, "seed": 1}}),
            "parameters": f"{payload}\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64"}
    for key, text in evil.items():
        req = read_recipe(_write(tmp_path, png_with({key: text}), f"{key}.png"))
        if key == "parameters":   # A1111's (x) is emphasis: read as compel's (x)1.1, still only text
            assert req.prompt == payload.replace(')', ')1.1'), key
        else:
            assert req.prompt == payload, key
        assert not marker.exists(), key


# ----- LoRAs, embeddings, clip skip, VAE and the hires fix (REFERENCE.md 8)

def test_a1111_parameters_write_extras_and_the_hires_fix_as_a1111_does():
    # key names, order and quoting of A1111 1.10's processing.create_infotext (checked against it, with its
    # txt2img init and Lora extension filling the same values); Size is the first pass
    text = a1111_parameters(ImageMeta(EXTRAS_LINE, model_hash=MODEL_HASH, extras=EXTRAS))
    assert text.splitlines() == [
        "a cat <lora:add_detail:0.8>, (red:1.3) fur <lora:film_grain:0.5>",
        "Negative prompt: lowres, EasyNegative",
        "Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 42, Size: 512x768, "
        "Model hash: 879db523c3, Model: dreamshaper_8, VAE hash: 735e4c3a44, "
        "VAE: vae-ft-mse-840000-ema-pruned.safetensors, Denoising strength: 0.45, Clip skip: 2, RNG: CPU, Hires upscale: 2, "
        "Hires steps: 15, Hires upscaler: R-ESRGAN 4x+, Lora hashes: \"add_detail: 7c6bad76eb54, film_grain: "
        "0123456789ab\", TI hashes: \"EasyNegative: c74b4e810b03\", Dreamshell: "
        + json.dumps(format_request(EXTRAS_LINE))]


def test_a1111_parameters_leave_out_what_a1111_leaves_out():
    req = parse_request('"a cat <lora:x:1>" -s 20 -S 1 -W 512 -H 512 -C 7 -A ddim --model m --clip_skip 1 '
                        '--vae my_vaes/kl-f8.safetensors')
    params = parse_a1111(a1111_parameters(ImageMeta(req, extras=RecipeExtras((), (), ("kl-f8.safetensors", "")))))[2]
    assert "Clip skip" not in params            # A1111 writes it only when above 1
    assert "VAE hash" not in params and params["VAE"] == "kl-f8.safetensors"   # a diffusers folder has no hash
    assert "Lora hashes" not in params and "Denoising strength" not in params and "Hires upscale" not in params
    loose = parse_request('"a cat < lora : x y : 0.50 > [dog] <lora:z:-1>" -s 20 -S 1 -W 512 -H 512 -C 7 -A ddim')
    prompt, negative, _ = parse_a1111(a1111_parameters(ImageMeta(loose)))
    assert (prompt, negative) == ("a cat <lora:x y:0.5> <lora:z:-1>", "dog")
    with pytest.raises(ParseError):   # A1111 applies no tag in the negative; dreamshell refuses one there
        parse_request('"a cat [dog <lora:z:-1>]" -s 20')


ROUND_TRIP = [
    (EXTRAS_LINE, EXTRAS),
    (parse_request('"<lora:style:1> portrait, (soft light)1.2 [blurry]" -s 20 -S 7 -W 512 -H 640 -C 7.5 -A ddim --schedule ddim '
                   '--model v1-5 --hires_fix --hires_scale 1.5 --hires_steps 20 --hires_strength 0.7 '
                   '--hires_upscaler latent -V 99:0.25 --seamless'),
     RecipeExtras((("style", 1.0, "aaaaaaaaaaaa"),))),
    (parse_request('"a castle" -s 30 -S 1 -W 768 -H 512 -C 6 -A k_lms --schedule karras --model anything-v3 '
                   '--clip_skip 3 --vae orangemix.vae.pt --hires_fix --hires_scale 2.5 --hires_steps 12 '
                   '--hires_strength 0.6 --hires_upscaler lanczos'),
     RecipeExtras((), (), ("orangemix.vae.pt", "b4b04361c3"))),
    (parse_request('"a fox <lora:x:-0.25> [EasyNegative, badhandv4]" -s 25 -S 9 -W 640 -H 384 -C 5 -A ddim --schedule ddim --model m '
                   '--vae vae-ft-mse.safetensors'),
     RecipeExtras((("x", -0.25, "0123456789ab"),), (("EasyNegative", "c74b4e810b03"), ("badhandv4", "5e40d722fc3d")),
                  ("vae-ft-mse.safetensors", "735e4c3a44"))),
    (parse_request('"a fox" -s 25 -S 9 -W 640 -H 384 -C 5 -A k_euler_a --schedule uniform --model m --rng nv --ensd 31337'),
     RecipeExtras()),
]


@pytest.mark.parametrize("request_, extras", ROUND_TRIP)
def test_a1111_keys_alone_give_back_the_request(tmp_path, request_, extras):
    text = a1111_parameters(ImageMeta(request_, model_hash=MODEL_HASH, extras=extras))
    without = text[:text.index(", Dreamshell: ")]            # as A1111 alone would have written it
    assert "Dreamshell" not in without
    recipe = fetch_recipe(_write(tmp_path, png_with({"parameters": without}), "a1111.png"))
    assert recipe.request == request_ and recipe.notes == () and recipe.source == "A1111 parameters"
    assert recipe.recorded == extras


@pytest.mark.parametrize("keep", ["sd-metadata", "parameters"])
def test_each_chunk_alone_gives_back_extras_and_the_hires_fix(tmp_path, keep):
    full = _chunks(tmp_path, EXTRAS_LINE, model_hash=MODEL_HASH, extras=EXTRAS)
    recipe = fetch_recipe(_write(tmp_path, png_with({keep: full[keep]}), "one.png"))
    assert recipe.request == EXTRAS_LINE and recipe.notes == ()
    assert recipe.recorded == (EXTRAS if keep == "parameters" else RecipeExtras(
        tuple((n, 1.0, h) for n, _, h in EXTRAS.loras), EXTRAS.embeddings, EXTRAS.vae))


def test_dream_and_sd_metadata_carry_extras_and_the_hires_fix(tmp_path):
    full = _chunks(tmp_path, EXTRAS_LINE, model_hash=MODEL_HASH, extras=EXTRAS)
    # what InvokeAI 2.2's parser takes: no LoRA tags, no clip skip or VAE, its --hires_fix with the final size
    assert full["Dream"] == ('"a cat, (red)1.3 fur [lowres, EasyNegative]" -s 28 -S 42 -W 1024 -H 1536 -C 7 '
                             '-A k_dpmpp_2 --hires_fix --karras_max 1000')
    alone = fetch_recipe(_write(tmp_path, png_with({"Dream": full["Dream"]}), "dream.png"))
    assert alone.request == parse_request('"a cat, (red)1.3 fur [lowres, EasyNegative]" -s 28 -S 42 -W 1024 -H 1536 '
                                          '-C 7 -A k_dpmpp_2 --schedule karras')
    sd_only = fetch_recipe(_write(tmp_path, png_with({"sd-metadata": full["sd-metadata"]}), "sd.png"))
    assert sd_only.request == EXTRAS_LINE and sd_only.notes == ()
    image = json.loads(full["sd-metadata"])["image"]
    # InvokeAI 2.x's own hires_fix: its width/height are then the final size, so ours are too
    assert (image["hires_fix"], image["width"], image["height"], image["first_pass_width"],
            image["first_pass_height"]) == (True, 1024, 1536, 512, 768)
    assert {k: image[k] for k in ("hires_scale", "hires_steps", "hires_strength", "hires_upscaler", "clip_skip", "vae",
                                  "vae_hash", "lora_hashes", "ti_hashes")} == {
        "hires_scale": 2.0, "hires_steps": 15, "hires_strength": 0.45, "hires_upscaler": "esrgan", "clip_skip": 2,
        "vae": "vae-ft-mse-840000-ema-pruned.safetensors", "vae_hash": "735e4c3a44",
        "lora_hashes": {"add_detail": "7c6bad76eb54", "film_grain": "0123456789ab"},
        "ti_hashes": {"EasyNegative": "c74b4e810b03"}}
    assert image["prompt"] == [{"prompt": "a cat, (red)1.3 fur [lowres, EasyNegative]", "weight": 1.0}]
    assert image["loras"] == [{"name": "add_detail", "weight": 0.8}, {"name": "film_grain", "weight": 0.5}]


@pytest.mark.parametrize("rng, key", [(None, "RNG: CPU"), ("cpu", "RNG: CPU"), ("nv", "RNG: NV"), ("gpu", None)])
def test_the_noise_source_and_ensd_are_in_every_chunk(tmp_path, rng, key):
    req = parse_request('"a cat" -s 20 -S 1 -W 64 -H 64 -C 5 -A k_euler_a --model demo --ensd 7'
                        + (f" --rng {rng}" if rng else ""))
    chunks = _chunks(tmp_path, req)
    last = chunks["parameters"].splitlines()[-1]
    assert ("ENSD: 7, RNG: " + key.split(": ")[1] if key else "ENSD: 7, Dreamshell") in last  # A1111's key order
    assert "--rng" not in chunks["Dream"] and "--ensd" not in chunks["Dream"]      # InvokeAI 2.2 has neither
    image = json.loads(chunks["sd-metadata"])["image"]
    assert (image.get("rng"), image["ensd"]) == (rng, 7)
    for keep in ("parameters", "sd-metadata"):
        assert read_recipe(_write(tmp_path, png_with({keep: chunks[keep]}), "one.png")) == req
    # A1111 alone: no RNG key is its GPU, read as nv (the same noise without CUDA), with a note
    a1111 = chunks["parameters"][:chunks["parameters"].index(", Dreamshell: ")]
    recipe = fetch_recipe(_write(tmp_path, png_with({"parameters": a1111}), "a1111.png"))
    assert (recipe.request.rng, recipe.request.ensd) == ("nv" if rng in ("nv", "gpu") else None, 7)
    assert len(recipe.notes) == (1 if rng == "gpu" else 0)
