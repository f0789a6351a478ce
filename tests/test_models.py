"""Models: the models file, single-file checkpoints offline, the shipped SD configs, .ckpt safety."""

import os
import socket
from pathlib import Path

import pytest

from dreamshell.weights.models import ModelSpec, ModelsFileError, Registry, load_registry
from dreamshell.line.parser import parse_request
from dreamshell.run.resolve import resolve_request


def test_models_file_entries_and_defaults(tmp_path):
    f = tmp_path / "models.yaml"
    f.write_text("sd15:\n  weights: weights/v1-5.safetensors\n  kind: sd1\n  description: SD 1.5\n"
                 "  steps: 25\n  cfg: 7\n  sampler: k_euler_a\n  default: true\n"
                 "xl:\n  weights: /abs/sdxl\n  kind: sdxl\n"
                 "upscalers:\n  '4': RealESRGAN_x4plus.pth\n")
    reg = load_registry(f)
    assert reg.default.name == "sd15"
    sd15 = reg.models["sd15"]
    assert sd15.weights == tmp_path / "weights" / "v1-5.safetensors" and sd15.is_single_file
    assert (sd15.steps, sd15.cfg_scale, sd15.sampler, sd15.width) == (25, 7.0, "k_euler_a", 512)
    assert reg.models["xl"].width == 1024
    assert reg.upscalers["4"] == tmp_path / "RealESRGAN_x4plus.pth"


@pytest.mark.parametrize("text,message", [
    ("m:\n  kind: sd1\n", "has no 'weights'"),
    ("m:\n  weights: x\n  kind: sd9\n", "kinds are sd1, sd1-inpaint, sd2"),
    ("m:\n  weights: x\n  colour: red\n", "unknown keys ['colour']"),
    ("m: [1, 2\n", "not valid YAML"),
])
def test_bad_models_files_are_one_clear_line(tmp_path, text, message):
    f = tmp_path / "models.yaml"
    f.write_text(text)
    with pytest.raises(ModelsFileError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_registry(f)


def test_without_a_models_file_the_demo_model_is_the_default():
    reg = load_registry(None)
    assert reg.default.name == "demo" and reg.default.width == 64


def test_unknown_model_names_what_there_is():
    reg = Registry({"a": ModelSpec("a", Path("x"))})
    with pytest.raises(ModelsFileError, match=r"no model 'b': use a name \(a\)"):
        reg.get("b")


@pytest.fixture
def no_network(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in this test")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_single_file_checkpoint_loads_offline_and_matches_its_diffusers_twin(tmp_path, no_network):
    import numpy as np
    from tiny_pipeline import make_tiny_sd1_single_file

    from dreamshell.engines.generator import DiffusersGenerator
    path, config = make_tiny_sd1_single_file(tmp_path)
    single = ModelSpec("single", path, "sd1", width=64, height=64, steps=3, sampler="ddim", config=config)
    folder = ModelSpec("folder", tmp_path / "diffusers", "sd1", width=64, height=64, steps=3, sampler="ddim")
    g = DiffusersGenerator(device="cpu")
    images, weights = [], []
    for spec in (single, folder):
        g.load(spec)
        pipe = g._pipes["txt2img"]
        weights.append({f"{name}.{k}": v.clone() for name in ("unet", "vae", "text_encoder")
                        for k, v in getattr(pipe, name).state_dict().items()})
        images.append(np.asarray(g.generate(resolve_request(parse_request("a red circle -S 3"), spec, [])), int))
    assert weights[0].keys() == weights[1].keys()
    assert all(weights[0][k].equal(weights[1][k]) for k in weights[0]), "every weight lands where it belongs"
    assert np.abs(images[0] - images[1]).max() <= 2  # the two loaders differ only in float rounding


def test_pickled_code_in_a_ckpt_is_refused(tmp_path):
    import pickle

    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.engines.protocols import GenerationError

    class Payload:
        def __reduce__(self):
            return (print, ("this ran on load",))
    bad = tmp_path / "evil.ckpt"
    with open(bad, "wb") as f:
        pickle.dump({"state_dict": Payload()}, f)
    g = DiffusersGenerator(device="cpu")
    with pytest.raises(GenerationError, match="refusing .*evil.ckpt.*weights_only=True"):
        g.load(ModelSpec("evil", bad, "sd1"))


# parameter counts of the public models, which the shipped configs must rebuild exactly
EXPECTED = {
    ("sd1", "unet"): 859_520_964, ("sd1", "vae"): 83_653_863, ("sd1", "text_encoder"): 123_060_480,
    ("sd2", "unet"): 865_910_724, ("sd2", "text_encoder"): 340_387_840,
    ("sdxl", "unet"): 2_567_463_684, ("sdxl", "text_encoder_2"): 694_659_840,
    ("sd1-inpaint", "unet"): 859_535_364, ("sd2-inpaint", "unet"): 865_925_124, ("sd2-base", "unet"): 865_910_724,
    ("sdxl-inpaint", "unet"): 2_567_478_084, ("sdxl-refiner", "unet"): 2_259_526_660,
    ("sdxl-refiner", "text_encoder_2"): 694_659_840,
}


@pytest.mark.parametrize("kind,part", sorted(EXPECTED))
def test_shipped_configs_rebuild_the_real_architectures(kind, part):
    import torch
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    from dreamshell.engines.loading import single_file_config
    folder = single_file_config(kind) / part
    with torch.device("meta"):
        if part == "unet":
            model = UNet2DConditionModel.from_config(UNet2DConditionModel.load_config(folder))
        elif part == "vae":
            model = AutoencoderKL.from_config(AutoencoderKL.load_config(folder))
        else:
            cfg = CLIPTextConfig.from_pretrained(folder)
            cls = CLIPTextModelWithProjection if part == "text_encoder_2" else CLIPTextModel
            model = cls(cfg)
    assert sum(p.numel() for p in model.parameters()) == EXPECTED[(kind, part)]


def test_shipped_tokenizer_is_clips(tmp_path):
    from transformers import CLIPTokenizer

    from dreamshell.engines.loading import single_file_config
    tok = CLIPTokenizer.from_pretrained(single_file_config("sd1") / "tokenizer", local_files_only=True)
    assert len(tok) == 49408
    assert tok("a photograph of an astronaut riding a horse").input_ids == \
        [49406, 320, 8853, 539, 550, 18376, 6765, 320, 4558, 49407]
    tok2 = CLIPTokenizer.from_pretrained(single_file_config("sdxl") / "tokenizer_2", local_files_only=True)
    assert tok2.pad_token == "!"


# ----- a model's defaults come from its own files, wherever it is loaded from (issue 22, item 2)

def test_the_demo_by_path_draws_at_its_own_defaults():
    from dreamshell.weights.models import builtin_models_dir, demo_spec
    builtin = demo_spec()
    for name in (str(builtin_models_dir() / "demo"), os.path.relpath(builtin_models_dir() / "demo")):
        spec = Registry({}).get(name)          # !switch models/demo, --model models/demo
        assert (spec.width, spec.height, spec.steps, spec.cfg_scale, spec.sampler) == (64, 64, 20, 5.0, "k_euler")
        assert (spec.width, spec.steps, spec.cfg_scale, spec.sampler) == \
            (builtin.width, builtin.steps, builtin.cfg_scale, builtin.sampler)


def _demo_copy(root: Path, defaults: str | None) -> Path:
    """The demo model's folder with other defaults (its files linked, not copied)."""
    from dreamshell.weights.models import builtin_models_dir
    folder = root / "models" / "demo"
    folder.mkdir(parents=True)
    for entry in (builtin_models_dir() / "demo").iterdir():
        if entry.name != "dreamshell.json":
            (folder / entry.name).symlink_to(entry)
    if defaults is not None:
        (folder / "dreamshell.json").write_text(defaults)
    return folder


def test_the_demo_spec_and_a_path_read_one_file_of_defaults(tmp_path, monkeypatch):
    from dreamshell.weights.models import demo_spec
    folder = _demo_copy(tmp_path, '{"steps": 12, "cfg": 3.5, "sampler": "ddim", "description": "mine"}')
    monkeypatch.setenv("DREAMSHELL_BUILTIN_MODELS", str(tmp_path / "models"))
    for spec in (demo_spec(), Registry({}).get(str(folder)), load_registry(None).default):
        assert (spec.width, spec.steps, spec.cfg_scale, spec.sampler, spec.description) == (64, 12, 3.5, "ddim", "mine")
    (tmp_path / "models.yaml").write_text(f"d:\n  weights: {folder}\n  steps: 8\n")
    spec = load_registry(tmp_path / "models.yaml").models["d"]
    assert (spec.width, spec.steps, spec.sampler) == (64, 8, "ddim")    # the models file's own keys win


@pytest.mark.parametrize("defaults,message", [
    ('{"steps": 0}', r"dreamshell\.json: steps: '0' is too small"),
    ('{"cfg": NaN}', r"dreamshell\.json: cfg: 'nan' is not a finite number"),
    ('{"colour": "red"}', r"dreamshell\.json has unknown keys \['colour'\]"),
    ('[1, 2]', r"dreamshell\.json is not a JSON object of defaults"),
    ('{"steps": ' + "[" * 100 + "]" * 100 + "}", r"dreamshell\.json cannot be read \(JSON nested deeper than 64"),
])
def test_a_folders_defaults_file_is_checked_like_a_models_file(tmp_path, defaults, message):
    folder = _demo_copy(tmp_path, defaults)
    with pytest.raises(ModelsFileError, match=message):
        Registry({}).get(str(folder))


@pytest.mark.parametrize("sample_size,blocks,size", [(96, 4, 768), (64, 4, 512), (128, 4, 1024), (16, 3, 64)])
def test_a_diffusers_folder_is_drawn_at_its_native_size(tmp_path, sample_size, blocks, size):
    """As diffusers pipelines compute the default height and width: unet sample_size x 2 ** (VAE blocks - 1)."""
    import json
    folder = tmp_path / "m"
    (folder / "unet").mkdir(parents=True)
    (folder / "vae").mkdir()
    (folder / "model_index.json").write_text(json.dumps({"_class_name": "StableDiffusionPipeline",
                                                          "text_encoder": ["transformers", "CLIPTextModel"]}))
    (folder / "unet" / "config.json").write_text(json.dumps({"sample_size": sample_size, "cross_attention_dim": 1024,
                                                              "in_channels": 4}))
    (folder / "vae" / "config.json").write_text(json.dumps({"block_out_channels": [8] * blocks}))
    spec = Registry({}).get(str(folder))
    assert (spec.kind, spec.width, spec.height) == ("sd2", size, size)
    (tmp_path / "models.yaml").write_text("m:\n  weights: m\n")
    assert load_registry(tmp_path / "models.yaml").models["m"].width == size


# ----- the LoRA, embedding and VAE folders by default (issue 22, item 15)

def test_default_extra_folders_are_the_working_folders_models_else_the_installed_copy(tmp_path, monkeypatch):
    from dreamshell.cli import build_argparser
    from dreamshell.app import launch_folders
    from dreamshell.weights.models import with_folders
    installed = tmp_path / "venv" / "share" / "dreamshell" / "models"
    (installed / "demo").mkdir(parents=True)
    (installed / "demo" / "model_index.json").write_text("{}")
    monkeypatch.setenv("DREAMSHELL_BUILTIN_MODELS", str(installed))
    work = Path.cwd()
    registry = load_registry(None)
    assert (registry.folders.loras, registry.folders.embeddings, registry.folders.vaes) == \
        (installed / "loras", installed / "embeddings", installed / "vae")
    (work / "models" / "loras").mkdir(parents=True)
    (work / "models" / "vae").mkdir()
    for registry in (load_registry(None), Registry({})):
        assert registry.folders.loras == work / "models" / "loras"            # the checkout's, as the README says
        assert registry.folders.embeddings == installed / "embeddings"        # none here: the installed one
        assert registry.folders.vaes == work / "models" / "vae"
    (work / "models" / "models.yaml").write_text("embeddings: mine\n")
    registry = load_registry(Path("models/models.yaml"))
    assert registry.folders.embeddings == Path("models/mine") and registry.folders.loras == work / "models" / "loras"
    args = build_argparser().parse_args(["--lora_dir", "elsewhere"])
    assert with_folders(registry, **launch_folders(args)).folders.loras == Path("elsewhere")
