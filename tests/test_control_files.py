"""What a file in the controlnets folder is (from its keys, no torch), how a line names one, the family check,
A1111's short hash, and the folder's place in the models file, the launcher and completion."""

import json
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import save_file

from dreamshell.line.errors import UserError
from dreamshell.line.parser import parse_request
from dreamshell.run.plan import Planner, PlanState
from dreamshell.weights.checkpoint import NotAModel, detect_control
from dreamshell.weights.library import ExtraError, Folders, Library, control_hash
from dreamshell.weights.models import ModelSpec, Registry, load_registry, with_folders

CN = "control_model."


def write(path, shapes, metadata=None):
    save_file({k: np.zeros(s, np.float16) for k, s in shapes.items()}, str(path), metadata=metadata)
    return path


def original(width=768, prefix=CN, level=1):
    block = "input_blocks.1.1" if level == 1 else "input_blocks.4.1"
    return {prefix + "input_hint_block.0.weight": (16, 3, 3, 3), prefix + "zero_convs.0.0.weight": (320, 320, 1, 1),
            prefix + f"{block}.transformer_blocks.0.attn2.to_k.weight": (320, width),
            prefix + "input_blocks.0.0.weight": (320, 4, 3, 3)}


def diffusers_keys(width=768, xl=False):
    keys = {"controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3),
            "controlnet_down_blocks.0.weight": (320, 320, 1, 1),
            "time_embedding.linear_1.weight": (1280, 320)}
    if xl:
        keys["down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.weight"] = (640, width)
        keys["add_embedding.linear_1.weight"] = (1280, 2816)
    else:
        keys["down_blocks.0.attentions.0.transformer_blocks.0.attn2.to_k.weight"] = (320, width)
    return keys


@pytest.mark.parametrize("shapes,kind,family,layout", [
    (original(768), "controlnet", "sd1", "original"),
    (original(1024), "controlnet", "sd2", "original"),
    (original(768, prefix=""), "controlnet", "sd1", "original"),      # thibaud's files: no control_model prefix
    (diffusers_keys(768), "controlnet", "sd1", "diffusers"),
    (diffusers_keys(2048, xl=True), "controlnet", "sdxl", "diffusers"),
    (original(96), "controlnet", "", "original"),                     # the demo's width: the engine compares it
])
def test_a_controlnet_file_is_told_from_its_keys(tmp_path, shapes, kind, family, layout):
    found = detect_control(write(tmp_path / "c.safetensors", shapes))
    assert (found.kind, found.family, found.layout) == (kind, family, layout)


@pytest.mark.parametrize("shapes,says", [
    ({"lora_controlnet": (1,), "input_blocks.0.0.weight": (4, 4)}, "Control-LoRA"),
    ({"adapter.body.0.resnets.0.block1.weight": (320, 320, 3, 3)}, "T2I-Adapter single file"),
    ({"task_embedding": (8, 320), "controlnet_cond_embedding.conv_in.weight": (16, 3, 3, 3)}, "Union"),
    ({"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3)}, "a Stable Diffusion model, not a ControlNet"),
    ({"lora_unet_down.lora_down.weight": (4, 320)}, "a LoRA"),
])
def test_other_files_are_named(tmp_path, shapes, says):
    with pytest.raises(NotAModel) as e:
        detect_control(write(tmp_path / "c.safetensors", shapes))
    assert says in str(e.value)


def test_a_pth_that_is_not_a_controlnet_is_named_from_its_pickled_keys(tmp_path):
    import zipfile
    # a zip torch.save made by hand: data.pkl holds an OrderedDict the keys unpickler reads, nothing runs
    import pickle
    import collections
    path = tmp_path / "c.pth"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps(collections.OrderedDict({"x": 1})))
    with pytest.raises(NotAModel):
        detect_control(path)


@pytest.mark.parametrize("config,kind,family", [
    ({"_class_name": "ControlNetModel", "cross_attention_dim": 768}, "controlnet", "sd1"),
    ({"_class_name": "ControlNetModel", "cross_attention_dim": 2048, "addition_embed_type": "text_time"}, "controlnet",
     "sdxl"),
    ({"_class_name": "T2IAdapter", "adapter_type": "full_adapter"}, "t2i-adapter", "sd1"),
    ({"_class_name": "T2IAdapter", "adapter_type": "full_adapter_xl"}, "t2i-adapter", "sdxl"),
])
def test_a_diffusers_folder_is_told_from_its_config(tmp_path, config, kind, family):
    (tmp_path / "config.json").write_text(json.dumps(config))
    found = detect_control(tmp_path)
    assert (found.kind, found.family) == (kind, family)


def test_a_folder_of_something_else_is_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DConditionModel"}))
    with pytest.raises(NotAModel, match="not a ControlNet or T2I-Adapter"):
        detect_control(tmp_path)


@pytest.fixture
def library(tmp_path):
    folder = tmp_path / "controlnets"
    folder.mkdir()
    write(folder / "control_v11p_sd15_canny.safetensors", original(768))
    write(folder / "control_v11f1p_sd15_depth.safetensors", original(768))
    write(folder / "controlnet-canny-sdxl.safetensors", diffusers_keys(2048, xl=True))
    (folder / "t2i_sketch").mkdir()
    (folder / "t2i_sketch" / "config.json").write_text(json.dumps({"_class_name": "T2IAdapter",
                                                                    "adapter_type": "full_adapter"}))
    return Library(Folders(tmp_path / "l", tmp_path / "e", tmp_path / "v", folder))


def test_models_are_found_by_name_case_or_the_one_name_holding_it(library):
    assert library.find_control("control_v11p_sd15_canny").name == "control_v11p_sd15_canny"
    assert library.find_control("CONTROL_V11F1P_SD15_DEPTH").name == "control_v11f1p_sd15_depth"
    assert library.find_control("depth").name == "control_v11f1p_sd15_depth"
    assert library.find_control("sketch").kind == "t2i-adapter"


def test_a_missing_or_ambiguous_name_is_one_line(library):
    with pytest.raises(ExtraError, match="did you mean 'control_v11p_sd15_canny'"):
        library.find_control("control_v11p_sd15_cany")
    with pytest.raises(ExtraError, match="names 2 models .*give the whole name"):
        library.find_control("canny")


def test_a_model_for_another_family_is_refused_when_planned(library, tmp_path):
    spec = ModelSpec("sd15", tmp_path, "sd1", width=512, height=512)
    planner = Planner(Registry({"sd15": spec}, folders=library.folders), library=library)
    (tmp_path / "e.png").write_bytes(b"")
    with pytest.raises(UserError) as e:
        planner.plan(parse_request(f"a cat --control controlnet-canny-sdxl:{tmp_path / 'e.png'}"), PlanState(spec),
                     files=False)
    assert str(e.value) == ("--control controlnet-canny-sdxl is a ControlNet for SDXL; model 'sd15' is SD 1.x: use "
                            "one made for it")


def test_a_t2i_adapter_makes_images_from_noise_only(library, tmp_path):
    spec = ModelSpec("sd15", tmp_path, "sd1", width=512, height=512)
    planner = Planner(Registry({"sd15": spec}, folders=library.folders), library=library)
    with pytest.raises(UserError, match="adapter pipelines make images from noise only"):
        planner.plan(parse_request("a cat -I x.png --control sketch:e.png"), PlanState(spec), files=False)
    with pytest.raises(UserError, match="a T2I-Adapter acts from the first step to the last"):
        planner.plan(parse_request("a cat --control sketch:e.png:1:0.2:1"), PlanState(spec), files=False)


def test_the_planned_line_names_the_file_and_the_last_image(library, tmp_path):
    spec = ModelSpec("sd15", tmp_path, "sd1", width=512, height=512)
    planner = Planner(Registry({"sd15": spec}, folders=library.folders), library=library)
    state = PlanState(spec)
    state.image_made(7, "outputs/000000.7.png")
    plan = planner.plan(parse_request("a cat --control depth:-1:0.5 -S 1"), state, files=False)
    assert plan.line.control[0].model == "control_v11f1p_sd15_depth"
    assert plan.line.control[0].image == "outputs/000000.7.png"
    assert plan.files.controls[0].path.name == "control_v11f1p_sd15_depth.safetensors"
    assert any("used as a depth map as it is" in n for n in plan.notes)


def test_a1111_short_hash_is_sha256_of_64k_at_1mib(tmp_path):
    import hashlib
    data = bytes(range(256)) * 8192          # 2 MiB
    (tmp_path / "c.safetensors").write_bytes(data)
    assert control_hash(tmp_path / "c.safetensors") == hashlib.sha256(data[0x100000:0x110000]).hexdigest()[:8]
    (tmp_path / "small.pth").write_bytes(b"x" * 100)     # shorter than 1 MiB: A1111 hashes nothing
    assert control_hash(tmp_path / "small.pth") == hashlib.sha256(b"").hexdigest()[:8]


def test_the_folder_comes_from_the_models_file_the_launcher_or_the_shipped_default(tmp_path):
    yaml = tmp_path / "models.yaml"
    yaml.write_text("controlnets: my/cn\nm:\n  weights: builtin:demo\n")
    registry = load_registry(yaml)
    assert registry.folders.controlnets == tmp_path / "my" / "cn"
    assert with_folders(registry, controlnets="/x/cn").folders.controlnets == Path("/x/cn")
    assert load_registry(None).folders.controlnets.name == "controlnets"


def test_the_launcher_takes_controlnet_dir():
    from dreamshell.app import launch_folders
    from dreamshell.cli import build_argparser
    args = build_argparser().parse_args(["--controlnet_dir", "/x/cn"])
    assert launch_folders(args)["controlnets"] == "/x/cn"


def test_completion_offers_the_folders_models_then_preprocessors(library):
    from prompt_toolkit.document import Document

    from dreamshell.shell.completer import DreamCompleter
    c = DreamCompleter(lambda: [], lambda: {}, library)

    def complete(text):
        return [x.text for x in c.get_completions(Document(text, len(text)), None)]
    assert "control_v11p_sd15_canny:" in complete("a cat --control con")
    assert complete("a cat --control control_v11p_sd15_canny/c") == ["canny:"]


def test_the_dry_run_plans_a_control_line_without_a_model(library, tmp_path):
    from dreamshell.run.dryrun import DryRun
    (tmp_path / "e.png").write_bytes(b"")
    registry = Registry({"sd15": ModelSpec("sd15", tmp_path, "sd1", width=512, height=512, default=True)},
                        folders=library.folders)
    ok, text = DryRun(registry).describe(f"a cat -S 1 --control depth:{tmp_path / 'e.png'}:0.5")
    assert ok, text
    assert f"--control control_v11f1p_sd15_depth:{tmp_path / 'e.png'}:0.5" in text
    ok, text = DryRun(registry).describe("a cat -S 1 --control nothing:e.png")
    assert not ok and "no ControlNet 'nothing'" in text


@pytest.fixture
def dispatcher(fake_session):
    from dreamshell.run.control import register_control
    from dreamshell.run.dispatch import Dispatcher
    session = fake_session()
    said = []
    d = Dispatcher(session, said.append)
    register_control(d)
    d.said = said
    return d


def test_control_command_saves_the_map_beside_the_outputs(dispatcher, tmp_path):
    from PIL import Image, ImageDraw

    from dreamshell.run.preprocess import make_map
    img = Image.new("RGB", (70, 64), (20, 60, 200))
    ImageDraw.Draw(img).ellipse((10, 10, 40, 40), fill=(220, 40, 40))
    img.save(tmp_path / "shape.png")
    assert not dispatcher.execute(f"!control {tmp_path / 'shape.png'} canny").failed, dispatcher.said
    saved = dispatcher.session.outdir / "shape.control-canny.png"
    assert any(f"{saved}: canny map of" in s for s in dispatcher.said)
    assert np.array_equal(np.asarray(Image.open(saved)), np.asarray(make_map(img, "canny", (64, 64))))
    dispatcher.execute(f"!control {tmp_path / 'shape.png'} canny")
    assert (dispatcher.session.outdir / "shape.control-canny-01.png").exists()     # never overwrites


@pytest.mark.parametrize("args,error", [
    ("", "needs an image and a preprocessor"),
    ("{img} depth", "preprocessor depth needs annotator weights"),
    ("{img} inpaint", "marks a mask: add -M MASK"),
    ("{img} canny -S 3", "!control takes -M, -W and -H"),
    ("-1 canny", "none was made yet"),
    ("{dir}/nope.png canny", "no such file"),
])
def test_control_command_errors_are_one_line(dispatcher, tmp_path, args, error):
    from PIL import Image
    Image.new("RGB", (64, 64)).save(tmp_path / "i.png")
    outcome = dispatcher.execute(f"!control {args.format(img=tmp_path / 'i.png', dir=tmp_path)}".strip())
    assert outcome.failed and any(error in s for s in dispatcher.said), dispatcher.said


@pytest.mark.parametrize("control,model", [("controlnet-sd1", "sd1"), ("controlnet-sd2", "sd2"), ("controlnet-sdxl", "sdxl")])
def test_the_shipped_controlnet_configs_match_the_models_they_guide(control, model):
    """The offline configs single ControlNet files load with: the encoder of the family's UNet (its shipped config)
    and the conditioning embedding of the published files (16, 32, 96, 256)."""
    from dreamshell.engines.loading import CONFIGS_DIR
    cn = json.loads((CONFIGS_DIR / control / "config.json").read_text())
    unet = json.loads((CONFIGS_DIR / model / "unet" / "config.json").read_text())
    assert cn["_class_name"] == "ControlNetModel"
    for key in ("block_out_channels", "cross_attention_dim", "attention_head_dim", "down_block_types",
                "layers_per_block", "use_linear_projection", "in_channels"):
        assert cn[key] == unet.get(key, False if key == "use_linear_projection" else None), key   # its default: False
    assert cn["conditioning_embedding_out_channels"] == [16, 32, 96, 256]
    assert cn.get("transformer_layers_per_block", 1) == unet.get("transformer_layers_per_block", 1)


def test_a_ray_file_refuses_minus_one_for_a_control_image_before_anything_runs(library, tmp_path):
    from dreamshell.run.plan import plan_file_line
    spec = ModelSpec("sd15", tmp_path, "sd1", width=512, height=512)
    planner = Planner(Registry({"sd15": spec}, folders=library.folders), library=library)
    state = PlanState(spec)
    plan_file_line(planner, state, "a cat -S 1", ray=True)
    with pytest.raises(UserError, match="a --ray batch does not have when it plans; give the image's path"):
        plan_file_line(planner, state, "a dog -S 2 --control depth:-1", ray=True)
    assert plan_file_line(planner, state, "a dog -S 2 --control depth:-1").line.control[0].image == "-1"
