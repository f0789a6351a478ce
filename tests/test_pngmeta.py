"""Our three PNG chunks: what each holds, and that each gives the recipe back (REFERENCE.md 3)."""

import io
import json

import pytest
from PIL import Image, PngImagePlugin

from dreamshell.formatter import format_request
from dreamshell.parser import parse_request
from dreamshell.pngmeta import (ImageMeta, MetadataError, a1111_parameters, fetch_recipe, parse_a1111, png_bytes,
                                read_chunks, read_recipe)

RESOLVED = parse_request('"a fantastic alien landscape, 8k [blurry, dark]" -s 60 -S 3355519391 -W 576 -H 512 '
                         '-C 7.5 -A k_lms --model demo')
FULL = parse_request('"a (red)1.3 circle+ on style\\: flat:0.7 a square:0.3 [blurry]" -s 20 -S 7 -W 64 -H 64 -C 5 '
                     '-A k_dpmpp_2 --schedule karras --model demo -I in.png -f 0.6 --fit -U 2 0.5 '
                     '-V 3:0.2 --seamless')


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
    # InvokeAI 2.x's invoke> parser rejects --model: the model is in sd-metadata and Model: instead
    assert chunks["Dream"] == format_request(RESOLVED.with_(model=None))
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
                                "Size: 576x512, Model hash: ababababab, Model: demo, Dreamshell: ")


def test_a1111_parameters_carry_schedule_variations_tiling_upscaler_and_weights(tmp_path):
    prompt, negative, params = parse_a1111(_chunks(tmp_path, FULL)["parameters"])
    assert prompt == "a (red:1.3) (circle:1.1) on style: flat :0.7 AND a square :0.3"
    assert negative == "blurry"
    assert params == {"Steps": "20", "Sampler": "DPM++ 2M", "Schedule type": "Karras", "CFG scale": "5", "Seed": "7",
                      "Size": "64x64", "Model": "demo", "Denoising strength": "0.6", "Variation seed": "3",
                      "Variation seed strength": "0.2", "Tiling": "True", "Postprocess upscale by": "2",
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
    alone = fetch_recipe(_write(tmp_path, png_with({"Dream": full["Dream"]}), "dream.png"))
    assert alone.request == FULL.with_(model=None) and alone.notes == ()
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
