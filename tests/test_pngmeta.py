"""The three PNG chunks: written on every image, read back from ours, InvokeAI's and A1111's."""

import io
import json

import pytest
from PIL import Image, PngImagePlugin

from dreamshell.formatter import format_request
from dreamshell.parser import parse_request
from dreamshell.pngmeta import (ImageMeta, MetadataError, a1111_parameters, parse_a1111, png_bytes,
                                read_chunks, read_recipe)
from dreamshell.request import DreamRequest

RESOLVED = parse_request('"a fantastic alien landscape, 8k [blurry, dark]" -s 60 -S 3355519391 -W 576 -H 512 '
                         '-C 7.5 -A k_lms --model demo')


def _png(chunks: dict[str, str]) -> Image.Image:
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


def test_all_three_chunks_are_written_as_text(tmp_path):
    data = png_bytes(Image.new("RGB", (8, 8)), ImageMeta(RESOLVED, model_hash="ab" * 32, app_version="0.1.0"))
    assert b"tEXtDream" in data and b"tEXtsd-metadata" in data and b"tEXtparameters" in data
    chunks = read_chunks(_write(tmp_path, data))
    assert chunks["Dream"] == format_request(RESOLVED)
    meta = json.loads(chunks["sd-metadata"])
    assert meta["model_id"] == "demo" and meta["model_hash"] == "ab" * 32 and meta["app_id"] == "dreamshell"
    image = meta["image"]
    assert (image["seed"], image["steps"], image["cfg_scale"], image["sampler"], image["width"],
            image["height"], image["type"]) == (3355519391, 60, 7.5, "k_lms", 576, 512, "txt2img")
    assert image["prompt"] == [{"prompt": "a fantastic alien landscape, 8k [blurry, dark]", "weight": 1.0}]
    params = chunks["parameters"].splitlines()
    assert params[0] == "a fantastic alien landscape, 8k"
    assert params[1] == "Negative prompt: blurry, dark"
    assert params[2].startswith("Steps: 60, Sampler: LMS, CFG scale: 7.5, Seed: 3355519391, Size: 576x512, "
                                "Model hash: ababababab, Model: demo")


@pytest.mark.parametrize("keep", ["Dream", "sd-metadata", "parameters"])
def test_each_chunk_alone_gives_back_the_request(tmp_path, keep):
    full = read_chunks(_write(tmp_path, png_bytes(Image.new("RGB", (8, 8)), ImageMeta(RESOLVED, "cd" * 32))))
    path = _write(tmp_path, _png({keep: full[keep]}), "one.png")
    assert read_recipe(path) == RESOLVED


def test_non_latin1_prompt_survives(tmp_path):
    req = RESOLVED.with_(prompt="東京の夜景 \"quoted\" cat's \\ slash")
    path = _write(tmp_path, png_bytes(Image.new("RGB", (8, 8)), ImageMeta(req)))
    assert read_recipe(path) == req


A1111_SAMPLE = """masterpiece, (best quality:1.2), a castle on a hill, [cloudy]
Negative prompt: lowres, bad anatomy
Steps: 28, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 7, Seed: 965400086, Size: 512x768, \
Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Denoising strength: 0.7, Version: v1.10.1, \
Lora hashes: "add_detail: 7c6bad76eb54, other: 1234"
"""


def test_reads_a1111_parameters(tmp_path):
    req = read_recipe(_write(tmp_path, _png({"parameters": A1111_SAMPLE})))
    assert req.prompt == "masterpiece, (best quality)1.2, a castle on a hill, (cloudy)0.9 [lowres, bad anatomy]"
    assert (req.steps, req.seed, req.cfg_scale, req.width, req.height) == (28, 965400086, 7.0, 512, 768)
    assert req.sampler == "DPM++ 2M Karras"
    assert req.model == "v1-5-pruned-emaonly"


def test_a1111_quoted_values_are_unquoted():
    _, _, params = parse_a1111(A1111_SAMPLE)
    assert params["Lora hashes"] == "add_detail: 7c6bad76eb54, other: 1234"
    assert params["Sampler"] == "DPM++ 2M"


def test_a1111_text_quotes_values_with_commas():
    req = RESOLVED.with_(model="my, model")
    last = a1111_parameters(ImageMeta(req)).splitlines()[-1]
    assert 'Model: "my, model"' in last
    assert parse_a1111(a1111_parameters(ImageMeta(req)))[2]["Model"] == "my, model"


def test_reads_invokeai_dream_chunk(tmp_path):
    dream = '"a photo of an astronaut riding a horse" -s 50 -S 2891425233 -W 512 -H 512 -C 7.5 -A k_lms'
    req = read_recipe(_write(tmp_path, _png({"Dream": dream})))
    assert req == DreamRequest("a photo of an astronaut riding a horse", steps=50, seed=2891425233, width=512,
                               height=512, cfg_scale=7.5, sampler="k_lms")


def test_reads_invokeai_sd_metadata(tmp_path):
    meta = {"model": "stable diffusion", "model_id": "stable-diffusion-1.4", "model_hash": "fe4efff1e1",
            "app_id": "lstein/stable-diffusion", "app_version": "v1.15",
            "image": {"height": 512, "width": 512, "steps": 50, "cfg_scale": 7.5, "seed": 1287512637,
                      "sampler": "k_euler_a", "type": "txt2img", "postprocessing": None, "variations": [],
                      "prompt": [{"prompt": "a tabby cat", "weight": 0.5}, {"prompt": "a duck", "weight": 0.5}]}}
    req = read_recipe(_write(tmp_path, _png({"sd-metadata": json.dumps(meta)})))
    assert req == DreamRequest("a tabby cat:0.5 a duck:0.5", steps=50, seed=1287512637, width=512, height=512,
                               cfg_scale=7.5, sampler="k_euler_a", model="stable-diffusion-1.4")


def test_missing_broken_and_empty_metadata_are_clear_messages(tmp_path):
    with pytest.raises(MetadataError, match="no such file"):
        read_recipe(tmp_path / "nope.png")
    with pytest.raises(MetadataError, match="not a readable image"):
        read_recipe(_write(tmp_path, b"this is not a png", "fake.png"))
    with pytest.raises(MetadataError, match="no recipe in this image"):
        read_recipe(_write(tmp_path, _png({}), "bare.png"))
    with pytest.raises(MetadataError, match="sd-metadata"):
        read_recipe(_write(tmp_path, _png({"sd-metadata": "{not json"}), "broken.png"))


def test_metadata_is_never_evaluated(tmp_path):
    marker = tmp_path / "pwned"  # an absolute path: found wherever the code would run
    payload = f'__import__("os").system("touch {marker}")'
    evil = {"Dream": f"{payload} -S 1",
            "sd-metadata": json.dumps({"image": {"prompt": payload, "seed": 1}}),
            "parameters": f"{payload}\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64"}
    for key, text in evil.items():
        req = read_recipe(_write(tmp_path, _png({key: text}), f"{key}.png"))
        assert req.prompt == payload, key
        assert not marker.exists(), key
