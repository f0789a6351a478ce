"""Control in the recipes: A1111's `ControlNet N` units and Only masked written and read (round trip through A1111's
own parser: the expected values below are what A1111 1.10's parse_generation_parameters and the ControlNet
extension's parse_unit gave for this text), InvokeAI 3+'s `controlnets` and ComfyUI's ControlNet nodes read by
!fetch, with a note for each image that is not at hand and each ControlNet missing or different here."""

import json

import numpy as np
from PIL import Image, PngImagePlugin
from safetensors.numpy import save_file

from dreamshell.line.formatter import format_request
from dreamshell.line.parser import parse_request
from dreamshell.store.formats import ImageMeta, a1111_parameters, fetch_recipe
from dreamshell.store.formats.a1111 import parse_a1111, parse_unit, read_a1111
from dreamshell.store.formats.comfyui import read_comfyui
from dreamshell.store.formats.invokeai import read_invokeai_metadata
from dreamshell.weights.library import Folders, Library, RecipeExtras

LINE = ('"a red circle on a blue background" -s 20 -S 5 -W 512 -H 512 -C 7.5 -A k_euler --model sd15 -I in.png '
        '-f 0.75 -M mask.png --control control_v11p_sd15_canny:edges.png:0.8:0:0.9 '
        '--control control_v11f1p_sd15_depth:depth.png:1:0.1 --inpaint_area masked --inpaint_padding 16')
HASHES = (("control_v11p_sd15_canny", "d14c016b"), ("control_v11f1p_sd15_depth", "cfd03158"))

# A1111 1.10 parse_generation_parameters on the text a1111_parameters writes for LINE, then the ControlNet
# extension's infotext parse_unit (Forge lib_controlnet/infotext.py) on each unit: run once with their code
A1111_READS = {
    "Inpaint area": "Only masked", "Masked area padding": "16",
    "ControlNet 0": "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 0.8, Resize Mode: Crop and "
                    "Resize, Processor Res: 512, Threshold A: 100, Threshold B: 200, Guidance Start: 0.0, Guidance "
                    "End: 0.9, Pixel Perfect: True, Control Mode: Balanced",
    "ControlNet 1": "Module: none, Model: control_v11f1p_sd15_depth [cfd03158], Weight: 1.0, Resize Mode: Crop and "
                    "Resize, Processor Res: 512, Guidance Start: 0.1, Guidance End: 1.0, Pixel Perfect: True, Control "
                    "Mode: Balanced",
}
EXTENSION_READS_UNIT_0 = {"module": "canny", "model": "control_v11p_sd15_canny [d14c016b]", "weight": 0.8,
                          "resize_mode": "Crop and Resize", "processor_res": 512, "threshold_a": 100,
                          "threshold_b": 200, "guidance_start": 0.0, "guidance_end": 0.9, "pixel_perfect": True,
                          "control_mode": "Balanced"}


def written():
    return a1111_parameters(ImageMeta(parse_request(LINE), "a" * 64, "0", (), "inpaint", RecipeExtras(controls=HASHES)))


def test_a1111_units_and_only_masked_are_written_as_a1111_reads_them():
    _, _, params = parse_a1111(written())
    for key, value in A1111_READS.items():
        assert params[key] == value
    fields = {k.lower().replace(" ", "_"): v for k, v in parse_unit(params["ControlNet 0"]).items()}
    assert {k: str(v) for k, v in EXTENSION_READS_UNIT_0.items()} == fields


def test_our_own_recipe_comes_back_exactly():
    recipe = read_a1111(written())
    assert format_request(recipe.request) == format_request(parse_request(LINE))
    assert recipe.recorded.controls == HASHES


def test_a_foreign_a1111_recipe_names_each_unit_and_the_switch_to_add():
    text = written().rsplit(", Dreamshell:", 1)[0]
    recipe = read_a1111(text)
    assert not recipe.request.control
    note = recipe.notes[-1]
    assert "ControlNet 0: canny with control_v11p_sd15_canny (A1111 does not record the control image: add " \
           "--control control_v11p_sd15_canny:IMAGE:0.8:0:0.9)" in note
    assert "--control control_v11f1p_sd15_depth:IMAGE:1:0.1" in note
    assert "Inpaint area: Only masked (A1111 records neither the image nor the mask: add -I IMAGE -M MASK " \
           "--inpaint_area masked --inpaint_padding 16)" in note


def test_an_older_a1111_padding_key_and_a_module_dreamshell_cannot_run():
    text = ('a cat\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 512x512, Inpaint area: Only masked, '
            'Only masked padding, pixels: 32, ControlNet 0: "Module: openpose_full, Model: control_v11p_sd15_openpose '
            '[cab727d4], Weight: 1, Guidance Start: 0, Guidance End: 1"')
    note = read_a1111(text).notes[-1]
    assert "--inpaint_area masked --inpaint_padding 32" in note
    assert "dreamshell cannot run its module openpose_full: give the map itself as IMAGE" in note


def png_with(path, key, text):
    info = PngImagePlugin.PngInfo()
    info.add_text(key, text)
    Image.new("RGB", (8, 8)).save(path, pnginfo=info)
    return path


INVOKE = {"app_version": "4.2.9", "positive_prompt": "a red circle", "negative_prompt": "", "seed": 3, "steps": 20,
          "cfg_scale": 7, "width": 512, "height": 512, "scheduler": "euler", "model": {"name": "sd15", "base": "sd-1"},
          "controlnets": [{"image": {"image_name": "photo.png"}, "processed_image": {"image_name": "edges.png"},
                           "control_model": {"key": "k", "hash": "blake3:x", "name": "control_v11p_sd15_canny",
                                             "base": "sd-1", "type": "controlnet"},
                           "control_weight": 0.75, "begin_step_percent": 0.1, "end_step_percent": 0.8,
                           "control_mode": "balanced", "resize_mode": "just_resize"}],
          "t2iAdapters": [{"image": {"image_name": "sketch.png"},
                           "t2i_adapter_model": {"name": "t2iadapter_sketch_sd15v2"},
                           "weight": [0.5, 0.6], "begin_step_percent": 0, "end_step_percent": 1}]}


def test_invokeai_controlnets_become_control_switches():
    recipe = read_invokeai_metadata(json.dumps(INVOKE))
    specs = recipe.request.control
    assert [(c.model, c.image, c.weight, c.start, c.end, c.pre()) for c in specs] == [
        ("control_v11p_sd15_canny", "edges.png", 0.75, 0.1, 0.8, "none"),
        ("t2iadapter_sketch_sd15v2", "sketch.png", 0.5, 0.0, 1.0, "none")]
    text = " ".join(recipe.notes)
    assert "per-step weights [0.5, 0.6] read as the first, 0.5" in text
    assert "resize_mode just_resize read as crop and resize" in text


def test_a_control_image_beside_the_fetched_image_is_used_and_one_that_is_not_is_named(tmp_path):
    path = png_with(tmp_path / "out.png", "invokeai_metadata", json.dumps(INVOKE))
    Image.new("RGB", (8, 8)).save(tmp_path / "edges.png")
    recipe = fetch_recipe(path)
    assert recipe.request.control[0].image == str(tmp_path / "edges.png")
    assert any("t2iadapter_sketch_sd15v2: its image sketch.png is not at hand; put its path on the line" in n
               for n in recipe.notes)


COMFY = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "v1-5.safetensors"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red circle", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "blurry", "clip": ["4", 1]}},
    "5": {"class_type": "EmptyLatentImage", "inputs": {"width": 512, "height": 512, "batch_size": 1}},
    "10": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "sd15/control_v11p_sd15_canny.pth"}},
    "11": {"class_type": "LoadImage", "inputs": {"image": "photo.png"}},
    "12": {"class_type": "Canny", "inputs": {"image": ["11", 0], "low_threshold": 0.4, "high_threshold": 0.8}},
    "13": {"class_type": "ControlNetApplyAdvanced", "inputs": {"positive": ["6", 0], "negative": ["7", 0],
                                                               "control_net": ["10", 0], "image": ["12", 0],
                                                               "strength": 0.9, "start_percent": 0.0,
                                                               "end_percent": 0.7}},
    "20": {"class_type": "ControlNetLoader", "inputs": {"control_net_name": "control_v11f1p_sd15_depth.safetensors"}},
    "21": {"class_type": "LoadImage", "inputs": {"image": "depth.png"}},
    "22": {"class_type": "ControlNetApply", "inputs": {"conditioning": ["13", 0], "control_net": ["20", 0],
                                                       "image": ["21", 0], "strength": 0.5}},
    "3": {"class_type": "KSampler", "inputs": {"seed": 8, "steps": 20, "cfg": 7, "sampler_name": "euler",
                                               "scheduler": "normal", "denoise": 1, "model": ["4", 0],
                                               "positive": ["22", 0], "negative": ["13", 1],
                                               "latent_image": ["5", 0]}},
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
}


def test_comfyui_controlnet_nodes_become_control_switches():
    recipe = read_comfyui(json.dumps(COMFY))
    assert [(c.model, c.image, c.weight, c.start, c.end, c.pre()) for c in recipe.request.control] == [
        ("control_v11p_sd15_canny", "photo.png", 0.9, 0.0, 0.7, "canny"),
        ("control_v11f1p_sd15_depth", "depth.png", 0.5, 0.0, 1.0, "none")]
    assert recipe.request.prompt == "a red circle [blurry]"


def test_a_controlnet_missing_here_or_of_another_hash_is_named(tmp_path):
    folder = tmp_path / "controlnets"
    folder.mkdir()
    shapes = {"control_model.input_hint_block.0.weight": (16, 3, 3, 3),
              "control_model.zero_convs.0.0.weight": (4, 4, 1, 1),
              "control_model.input_blocks.1.1.transformer_blocks.0.attn2.to_k.weight": (320, 768)}
    save_file({k: np.zeros(s, np.float16) for k, s in shapes.items()},
              str(folder / "control_v11p_sd15_canny.safetensors"))
    library = Library(Folders(tmp_path / "l", tmp_path / "e", tmp_path / "v", folder))
    path = png_with(tmp_path / "a.png", "parameters", written().rsplit(", Dreamshell:", 1)[0])
    notes = " ".join(fetch_recipe(path, library).notes)
    assert "ControlNet control_v11p_sd15_canny: the file here (control_v11p_sd15_canny.safetensors, hash" in notes
    assert "(hash d14c016b); the image may come out different" in notes
    assert "no ControlNet 'control_v11f1p_sd15_depth' in" in notes
