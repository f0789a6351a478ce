"""ControlNets and T2I-Adapters through the session on a tiny random model: every layout loads what was written,
weight 0 is the plain image and weight 1 is not, several at once, with -I/-M, the hires fix, -1, the recipe
replays, a model of another width and a pickled .pth are one line each."""

import json
from dataclasses import replace

import numpy as np
import pytest
from PIL import Image, ImageDraw

from dreamshell.line.parser import parse_request
from dreamshell.run.model_host import ModelHost
from dreamshell.run.report import TextListener
from dreamshell.run.session import Session
from dreamshell.store.dreamlog import read_commands
from dreamshell.weights.library import Folders


@pytest.fixture(scope="module")
def controls(tmp_path_factory, tiny_models):
    """A controlnets folder for the tiny model: the same random ControlNet as one file with diffusers keys (its
    config in the metadata, as the demo ControlNet) and as a diffusers folder, a second ControlNet, one of another
    width, a T2I-Adapter."""
    import torch
    from diffusers import ControlNetModel, UNet2DConditionModel
    from safetensors.torch import save_file

    from dreamshell.engines import control_layouts as layouts
    root = tmp_path_factory.mktemp("controlnets")
    spec = tiny_models().models["tiny"]
    unet = UNet2DConditionModel.from_pretrained(spec.weights / "unet")
    made = {}
    for name, seed in (("tiny_canny", 1), ("tiny_other", 2)):
        torch.manual_seed(seed)
        model = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8))
        with torch.no_grad():
            for key, p in model.named_parameters():
                p.copy_(torch.randn_like(p) * 0.3)
        config = {k: v for k, v in dict(model.config).items() if not k.startswith("_")}
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(root / f"{name}.safetensors"),
                  metadata={"config": json.dumps(config)})
        made[name] = model
    layouts.write_folder(made["tiny_canny"], root / "tiny_folder")
    wide = ControlNetModel.from_config(dict(made["tiny_other"].config, cross_attention_dim=32))
    layouts.write_folder(wide, root / "wide_cn")
    # T2I-Adapters join an SD-shaped UNet (cross-attention first, four levels, latents at 1/8): see sd_shaped
    layouts.random_adapter(seed=3, in_channels=1, channels=(8, 8, 16, 16)).save_pretrained(root / "tiny_t2i")
    return root, made


@pytest.fixture
def session(controls, tiny_models, shared_generator, tmp_path):
    registry = tiny_models()
    registry = replace(registry, folders=Folders(tmp_path / "l", tmp_path / "e", tmp_path / "v", controls[0]))
    s = Session(registry, ModelHost(lambda: shared_generator), tmp_path / "out")
    s.echoed = []
    return s


@pytest.fixture
def pictures(tmp_path):
    img = Image.new("RGB", (64, 64), (20, 60, 200))
    ImageDraw.Draw(img).ellipse((10, 10, 40, 40), fill=(220, 40, 40))
    img.save(tmp_path / "shape.png")
    mask = Image.new("L", (64, 64), 0)
    ImageDraw.Draw(mask).rectangle((32, 32, 63, 63), fill=255)
    mask.save(tmp_path / "mask.png")
    return tmp_path


def run(session, line):
    result = session.run(parse_request(line), TextListener(session.echoed.append))
    return [np.asarray(Image.open(r.path)) for r in result.records], result


@pytest.fixture(scope="module")
def original_layout(tmp_path_factory):
    """A small ControlNet of lllyasviel's structure (its conditioning embedding's four stages: diffusers reads
    the original layout only so) as an original-layout file with its config in the metadata, and the model."""
    from safetensors.torch import save_file

    from dreamshell.engines import control_layouts as layouts
    config = {"block_out_channels": [8, 16, 16, 16], "norm_num_groups": 4, "cross_attention_dim": 768,
              "attention_head_dim": 2, "conditioning_embedding_out_channels": [4, 4, 8, 8], "layers_per_block": 2}
    model = layouts.random_controlnet(config, seed=4)
    folder = tmp_path_factory.mktemp("original")
    state = layouts.to_original(model.state_dict(), dict(model.config))
    save_file({k: v.contiguous() for k, v in state.items()}, str(folder / "small_canny.safetensors"),
              metadata={"config": json.dumps({k: v for k, v in dict(model.config).items() if not k.startswith("_")})})
    return folder / "small_canny.safetensors", model


def test_every_layout_loads_what_was_written(controls, original_layout):
    import torch

    from dreamshell.engines.control import load_control
    from dreamshell.engines.control_layouts import compare
    from dreamshell.weights.checkpoint import detect_control
    from dreamshell.weights.library import UsedControl
    root, made = controls
    cases = [(root / "tiny_canny.safetensors", made["tiny_canny"], "diffusers"),
             (root / "tiny_folder", made["tiny_canny"], "diffusers"),
             (original_layout[0], original_layout[1], "original")]
    for path, written, layout in cases:
        found = detect_control(path)
        assert found.layout == layout
        model = load_control(UsedControl(path.stem, path, found.kind, found.family, found.layout), torch.float32, "cpu")
        assert compare(model, written.state_dict()) == (len(model.state_dict()),) * 2, path


def test_weight_zero_is_the_plain_image_and_weight_one_is_not(session, pictures):
    line = "a red circle on a blue background -S 5 -s 3"
    plain, _ = run(session, line)
    zero, _ = run(session, f"{line} --control tiny_canny:{pictures / 'shape.png'}:0")
    one, _ = run(session, f"{line} --control tiny_canny:{pictures / 'shape.png'}:1")
    assert np.array_equal(plain[0], zero[0])
    assert not np.array_equal(plain[0], one[0])


def test_the_single_file_and_the_folder_make_the_same_image(session, pictures):
    a, _ = run(session, f"a red circle -S 6 -s 3 --control tiny_canny:{pictures / 'shape.png'}")
    b, _ = run(session, f"a red circle -S 6 -s 3 --control tiny_folder/canny:{pictures / 'shape.png'}")
    assert np.array_equal(a[0], b[0])


def test_two_controls_img2img_inpaint_and_the_hires_fix_run(session, pictures):
    shape, mask = pictures / "shape.png", pictures / "mask.png"
    lines = [f"a cat -S 1 -s 3 --control tiny_canny:{shape}:0.6 --control tiny_other/none:{shape}:0.5:0.2:0.8",
             f"a cat -S 2 -s 4 -I {shape} -f 0.6 --control tiny_canny:{shape}",
             f"a cat -S 3 -s 4 -I {shape} -M {mask} --control tiny_canny:{shape}",
             f"a cat -S 4 -s 3 --hires_fix --hires_scale 1.5 --control tiny_canny:{shape}"]
    sizes = []
    for line in lines:
        images, result = run(session, line)
        assert result.records, session.echoed
        sizes.append(images[0].shape[:2])
    assert sizes == [(64, 64), (64, 64), (64, 64), (96, 96)]
    inpainted = np.asarray(Image.open(next(p for p in sorted((session.outdir).glob("*.3.png")))))
    keep = np.asarray(Image.open(mask)) < 128
    assert np.array_equal(inpainted[keep], np.asarray(Image.open(shape))[keep])   # outside -M kept exactly


def test_minus_one_is_the_last_image_and_the_log_line_replays_the_same_bytes(session, pictures, tmp_path):
    run(session, "a red circle -S 7 -s 3")
    images, result = run(session, "a blue square -S 8 -s 3 --control tiny_canny/none:-1:0.9")
    command = result.records[0].command
    assert "--control tiny_canny/none:" in command and "000000.7.png:0.9" in command
    (line,) = [c for _, c in read_commands(session.outdir / "dream_log.txt")][1:]
    again, _ = run(session, line)
    assert np.array_equal(images[0], again[0])


def test_a_controlnet_of_another_width_is_one_line(session, pictures):
    from dreamshell.engines.protocols import GenerationError
    with pytest.raises(GenerationError) as e:
        run(session, f"a cat -S 1 -s 2 --control wide_cn/none:{pictures / 'shape.png'}")
    assert "is made for another model (width 32); model 'tiny' has width 16" in str(e.value)
    with pytest.raises(GenerationError, match="T2I-Adapter tiny_t2i is made for a UNet like SD's"):
        run(session, f"a cat -S 1 -s 2 --control tiny_t2i/none:{pictures / 'shape.png'}")


@pytest.fixture(scope="module")
def sd_shaped(tmp_path_factory):
    """A tiny model shaped like SD 1.x (tests/tiny_pipeline.make_tiny_sd1_single_file's diffusers folder)."""
    from tiny_pipeline import make_tiny_sd1_single_file

    from dreamshell.weights.models import ModelSpec
    folder = tmp_path_factory.mktemp("sdshaped")
    make_tiny_sd1_single_file(folder, seed=5)
    return ModelSpec("tinysd", folder / "diffusers", "sd1", width=64, height=64, steps=3, cfg_scale=5.0,
                     sampler="k_euler")


def test_a_t2i_adapter_runs_and_weight_zero_is_the_plain_image(controls, sd_shaped, shared_generator, pictures,
                                                                tmp_path):
    from dreamshell.weights.models import Registry
    registry = Registry({"tinysd": sd_shaped}, folders=Folders(tmp_path / "l", tmp_path / "e", tmp_path / "v",
                                                                 controls[0]))
    session = Session(registry, ModelHost(lambda: shared_generator), tmp_path / "out")
    session.echoed = []
    plain, _ = run(session, "a cat -S 9 -s 3")
    zero, _ = run(session, f"a cat -S 9 -s 3 --control tiny_t2i/canny:{pictures / 'shape.png'}:0")
    one, _ = run(session, f"a cat -S 9 -s 3 --control tiny_t2i/canny:{pictures / 'shape.png'}")
    assert np.array_equal(plain[0], zero[0]) and not np.array_equal(plain[0], one[0])


def test_a_pth_loads_only_through_weights_only(original_layout, tmp_path, monkeypatch):
    import torch
    from safetensors.torch import load_file

    from dreamshell.engines import control as engine
    from dreamshell.engines.protocols import GenerationError
    from dreamshell.weights.library import UsedControl
    path, written = original_layout
    torch.save(load_file(str(path)), tmp_path / "small.pth")
    folder = tmp_path / "config"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({**dict(written.config), "_class_name": "ControlNetModel"}))
    monkeypatch.setattr(engine, "config_for", lambda path, family: folder)     # a .pth carries no config
    model = engine.load_control(UsedControl("small", tmp_path / "small.pth", "controlnet", "sd1", "original"),
                                torch.float32, "cpu")
    assert torch.equal(model.controlnet_mid_block.weight, written.controlnet_mid_block.weight)

    class Evil:
        def __reduce__(self):
            return (print, ("ran",))
    torch.save({"control_model.x": Evil()}, tmp_path / "evil.pth")
    with pytest.raises(GenerationError, match="does not load with torch.load.weights_only=True."):
        engine.load_control(UsedControl("evil", tmp_path / "evil.pth", "controlnet", "sd1", "original"),
                            torch.float32, "cpu")


def test_the_image_step_hands_control_maps_on_as_the_ray_driver_does(session, pictures):
    """load_inputs makes the maps on the driver; the worker's make_images gets them with the init image."""
    from dreamshell.run.image import Inputs, load_inputs, make_images
    request = parse_request(f"a cat -S 3 -s 3 -W 64 -H 64 --control tiny_canny:{pictures / 'shape.png'}")
    checked = session.check(request)
    plan = session.planner.resolve(checked, session.state)
    session.host.ensure(plan.spec)
    init, mask, first = load_inputs(plan.images[0], plan.explicit_size)
    assert isinstance(init, Inputs) and init.init is None and list(init.controls) == [(64, 64)]
    made, = make_images(session.host.generator, [first], plan.files, init, mask)
    local, _ = run(session, f"a cat -S 3 -s 3 -W 64 -H 64 --control tiny_canny:{pictures / 'shape.png'}")
    assert np.array_equal(np.asarray(made.image), local[0])


@pytest.fixture(scope="module")
def sdxl_shaped(tmp_path_factory):
    """A tiny SDXL pipeline (two text encoders, text_time embedding) and a ControlNet made from its UNet."""
    import torch
    from diffusers import (AutoencoderKL, ControlNetModel, EulerDiscreteScheduler, StableDiffusionXLPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection, CLIPTokenizer

    from dreamshell.demo.shapes import vocabulary_words
    from dreamshell.demo.tokenizer import write_tokenizer
    from dreamshell.weights.models import ModelSpec
    folder = tmp_path_factory.mktemp("sdxl")
    torch.manual_seed(0)
    vocab = write_tokenizer(folder / "_tok", vocabulary_words())
    tok = CLIPTokenizer.from_pretrained(folder / "_tok", local_files_only=True)
    unet = UNet2DConditionModel(block_out_channels=(16, 32), layers_per_block=1, sample_size=8,
                                down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), attention_head_dim=(2, 4),
                                use_linear_projection=True, addition_embed_type="text_time", addition_time_embed_dim=8,
                                projection_class_embeddings_input_dim=80, cross_attention_dim=64, norm_num_groups=4)
    vae = AutoencoderKL(block_out_channels=(8, 8), norm_num_groups=4, latent_channels=4,
                        down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2)
    text = dict(vocab_size=vocab, hidden_size=32, intermediate_size=37, num_hidden_layers=2, num_attention_heads=4,
                max_position_embeddings=77, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id, projection_dim=32)
    pipe = StableDiffusionXLPipeline(vae=vae, text_encoder=CLIPTextModel(CLIPTextConfig(**text)),
                                     text_encoder_2=CLIPTextModelWithProjection(CLIPTextConfig(**text)), tokenizer=tok,
                                     tokenizer_2=tok, unet=unet,
                                     scheduler=EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                                                      beta_end=0.012, steps_offset=1))
    pipe.save_pretrained(folder / "tiny-sdxl", safe_serialization=True)
    controlnet = ControlNetModel.from_unet(unet, conditioning_embedding_out_channels=(4, 8))
    with torch.no_grad():
        for _, p in controlnet.named_parameters():
            p.copy_(torch.randn_like(p) * 0.3)
    controlnet.save_pretrained(folder / "controlnets" / "tiny_xl_canny")
    return ModelSpec("xl", folder / "tiny-sdxl", "sdxl", width=64, height=64, steps=3, cfg_scale=5.0,
                     sampler="k_euler"), folder / "controlnets"


def test_an_sdxl_controlnet_guides_an_sdxl_model(sdxl_shaped, shared_generator, pictures, tmp_path):
    from dreamshell.weights.checkpoint import detect_control
    from dreamshell.weights.models import Registry
    spec, folder = sdxl_shaped
    assert detect_control(folder / "tiny_xl_canny").family == "sdxl"
    registry = Registry({"xl": spec}, folders=Folders(tmp_path / "l", tmp_path / "e", tmp_path / "v", folder))
    session = Session(registry, ModelHost(lambda: shared_generator), tmp_path / "out")
    session.echoed = []
    shape = pictures / "shape.png"
    plain, _ = run(session, "a red circle -S 1 -s 3")
    zero, _ = run(session, f"a red circle -S 1 -s 3 --control tiny_xl_canny:{shape}:0")
    one, _ = run(session, f"a red circle -S 1 -s 3 --control tiny_xl_canny:{shape}")
    mask = pictures / "mask.png"
    inpainted, _ = run(session, f"a red circle -S 1 -s 3 -I {shape} -M {mask} --control tiny_xl_canny:{shape}")
    assert np.array_equal(plain[0], zero[0]) and not np.array_equal(plain[0], one[0])
    assert inpainted[0].shape == (64, 64, 3)


@pytest.mark.parametrize("vae_precision, vae_dtype", [("float32", "float32"), ("auto", "bfloat16")])
def test_sdxl_inpainting_at_bfloat16_keeps_the_vae_in_its_precision(sdxl_shaped, pictures, tmp_path, monkeypatch,
                                                                    vae_precision, vae_dtype):
    """Found by the bf16 suite: diffusers' SDXL inpaint pipelines (plain and ControlNet) encode -I with a
    force_upcast VAE and then cast the VAE to the image's dtype: the ControlNet inpaint line failed ("Input type
    (float) and bias type (c10::BFloat16)") and later images decoded in bfloat16. Forced bfloat16, on any CPU.
    With the bfloat16 VAE (issue 17: a CPU with native bf16) it stays bfloat16 the same way."""
    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.weights.models import Registry
    monkeypatch.setenv("DREAMSHELL_CPU_BF16", "1")
    spec, folder = sdxl_shaped
    gen = DiffusersGenerator(device="cpu", precision="bfloat16", vae_precision=vae_precision)
    registry = Registry({"xl": spec}, folders=Folders(tmp_path / "l", tmp_path / "e", tmp_path / "v", folder))
    session = Session(registry, ModelHost(lambda: gen), tmp_path / "out")
    session.echoed = []
    shape, mask = pictures / "shape.png", pictures / "mask.png"
    before, _ = run(session, "a red circle -S 1 -s 3")
    assert gen.dtype == gen.torch.bfloat16 and gen.vae_float32 is (vae_dtype == "float32")
    want = getattr(gen.torch, vae_dtype)
    for line in (f"a red circle -S 1 -s 3 -I {shape} -M {mask}",
                 f"a red circle -S 1 -s 3 -I {shape} -M {mask} --control tiny_xl_canny:{shape}",
                 f"a red circle -S 1 -s 3 -I {shape} -f 0.6"):
        images, _ = run(session, line)
        assert images[0].shape == (64, 64, 3), session.echoed
        assert all(p.dtype == want for p in gen._pipes["txt2img"].vae.parameters()), line
    after, _ = run(session, "a red circle -S 1 -s 3")
    assert np.array_equal(before[0], after[0])      # decoded by the same VAE
