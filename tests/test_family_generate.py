"""The newer families through dreamshell itself, on tiny files of the layouts people download: a dream> line
on a models-file entry makes, saves, logs and replays the image. FLUX.1 schnell (GGUF transformer with
ComfyUI's clip_l / t5xxl / ae files) and dev (guidance, true CFG), SD 3.5 Medium (CLIPs + T5, blends, clip
skip), Playground v2.5 (EDM) and a zero-SNR v-prediction model; LoRAs in diffusers' and kohya's layouts;
img2img and inpainting; --lowvram on a CPU; --cfg_rescale; previews."""

from pathlib import Path

import pytest
from conftest import PRECISIONS, run_line
from PIL import Image

from dreamshell.line.errors import UserError  # noqa: E402
from dreamshell.line.parser import parse_request  # noqa: E402

R = 4


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from dreamshell.engines.family_files import tiny_files
    root = tmp_path_factory.mktemp("families")
    files = tiny_files(root / "tiny")
    _loras(root / "loras")
    models = root / "models.yaml"
    common = "    width: 64\n    height: 64\n    steps: 2\n"
    parts = (f"    clip_l: {files['clip_l']}\n    t5xxl: {files['t5xxl']}\n")
    models.write_text(
        f"loras: {root / 'loras'}\n"
        f"schnell:\n    weights: {files['flux-schnell-gguf']}\n    config: {files['flux-schnell-config']}\n{parts}"
        f"    vae: {files['ae']}\n{common}"
        f"dev:\n    weights: {files['flux-dev']}\n    config: {files['flux-dev-config']}\n{parts}"
        f"    vae: {files['ae']}\n{common}"
        f"medium:\n    weights: {files['sd35-medium']}\n    kind: sd35-medium\n    config: {files['sd35-medium-config']}\n"
        f"{parts}    clip_g: {files['clip_g']}\n{common}"
        f"playground:\n    weights: {files['sdxl-playground']}\n    config: {files['sdxl-playground-config']}\n{common}")
    return models


def _loras(folder: Path):
    """A FLUX.1 LoRA in diffusers' layout and one in kohya's (for the tiny 32-wide transformer), an SDXL one."""
    import torch
    from safetensors.torch import save_file
    folder.mkdir(parents=True)
    g = torch.Generator().manual_seed(0)
    st = {}
    for name, width in (("transformer.transformer_blocks.0.attn.to_q", 32),
                        ("transformer.single_transformer_blocks.0.proj_out", 160)):
        st[name + ".lora_A.weight"] = torch.randn(R, width, generator=g) * 0.5
        st[name + ".lora_B.weight"] = torch.randn(32, R, generator=g) * 0.5
    save_file(st, str(folder / "flux_diffusers.safetensors"))
    save_file({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": torch.randn(R, 32, generator=g) * 0.5,
               "lora_unet_double_blocks_0_img_attn_qkv.lora_up.weight": torch.randn(96, R, generator=g) * 0.5,
               "lora_unet_double_blocks_0_img_attn_qkv.alpha": torch.tensor(4.0)},
              str(folder / "flux_kohya.safetensors"))
    save_file({"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": torch.zeros(R, 2048),
               "lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_up.weight": torch.zeros(640, R)},
              str(folder / "xl_style.safetensors"))


_generators: dict = {}


def _generator(precision, lowvram=False):
    key = (precision, lowvram)
    if key not in _generators:
        from dreamshell.engines.generator import DiffusersGenerator
        _generators[key] = DiffusersGenerator(device="cpu", precision=precision, lowvram=lowvram)
    return _generators[key]


def session(tiny, out, precision="float32", lowvram=False):
    from dreamshell.run.model_host import ModelHost
    from dreamshell.run.session import Session
    from dreamshell.weights.models import load_registry
    gen = _generator(precision, lowvram)
    s = Session(load_registry(tiny), ModelHost(lambda: gen), out)
    s.echoed = []
    return s


def run(s, line):
    return run_line(s, line)


def data(record):
    return Path(record.path).read_bytes()


def pixels(record):
    return Image.open(record.path).convert("RGB").tobytes()


@pytest.mark.parametrize("precision", PRECISIONS)
def test_flux_schnell_gguf_makes_logs_and_replays_its_images(tiny, tmp_path, precision):
    from dreamshell.store.dreamlog import read_commands
    s = session(tiny, tmp_path / "out", precision)
    made = run(s, "a red circle -S 1 -n 2 --model schnell").records
    assert [Path(r.path).name for r in made] == ["000000.1.png", "000001.2.png"]
    assert made[0].command == ('"a red circle" -s 2 -S 1 -W 64 -H 64 -C 1 -A k_euler --schedule simple '
                               f"--model schnell --vae {s.registry.models['schnell'].vae}")
    assert Image.open(made[0].path).size == (64, 64) and pixels(made[0]) != pixels(made[1])
    alone = run(s, "a red circle -S 2 --model schnell").records[0]
    assert pixels(alone) == pixels(made[1])     # image i of -n is the image its seed makes alone
    log = read_commands(tmp_path / "out" / "dream_log.txt")
    replay = run(s, log[0][1]).records[0]
    assert data(replay) == data(made[0])


def test_flux_dev_guidance_true_cfg_and_what_it_refuses(tiny, tmp_path):
    s = session(tiny, tmp_path / "out")
    plain = run(s, "a red circle -S 3 --model dev").records[0]
    assert plain.command.endswith("--guidance 3.5")
    other = run(s, "a red circle -S 3 --model dev --guidance 8").records[0]
    cfg = run(s, "a red circle [a blue square] -S 3 --model dev -C 3").records[0]
    empty = run(s, "a red circle -S 3 --model dev -C 3").records[0]   # true CFG on an empty negative
    assert len({pixels(plain), pixels(other), pixels(cfg), pixels(empty)}) == 4
    for line, says in (("a cat [ugly] --model dev", "FLUX.1 dev ignores a negative prompt unless -C is above 1"),
                       ("a cat --model dev --clip_skip 2", "FLUX.1 dev takes no clip skip"),
                       ("a cat --model schnell --guidance 2", "FLUX.1 schnell has no distilled guidance"),
                       ("a cat --model dev -A ddim", "sampler 'ddim' does not run FLUX.1 dev"),
                       ("a cat --model dev --seamless", "--seamless tiles a UNet's convolutions"),
                       ("a cat --model dev -W 72", "FLUX.1 dev makes sizes in multiples of 16")):
        with pytest.raises(UserError, match=says):
            s.check(parse_request(line))


def test_sd35_medium_with_t5_blends_clip_skip_and_schedules(tiny, tmp_path):
    import torch

    from dreamshell.engines import families
    s = session(tiny, tmp_path / "out")
    base = run(s, "a red circle [dark] -S 4 -s 3 --model medium").records[0]
    assert "-C 4.5 -A k_euler --schedule uniform --model medium" in base.command
    gen = s.host.generator
    pipe = gen._pipes["txt2img"]
    assert type(pipe.text_encoder_3).__name__ == "T5EncoderModel"
    made = [run(s, line).records[0] for line in (
        "a red circle [dark] -S 4 -s 3 --model medium --clip_skip 2",
        "a red circle [dark] -S 4 -s 3 --model medium --schedule simple",
        "a red circle [dark] -S 4 -s 3 --model medium -A k_heun",
        "a red circle [dark] -S 4 -s 3 --model medium --schedule karras")]
    assert len({pixels(r) for r in [base, *made]}) == 5

    def encoded(prompt):
        return families.encode(gen, pipe, parse_request(prompt + " -C 4.5"), True)
    blend, red, blue = (encoded(p) for p in ("a red circle:0.7 a blue square:0.3 [dark]", "a red circle [dark]",
                                            "a blue square [dark]"))
    for key in ("prompt_embeds", "pooled_prompt_embeds"):   # dreamshell's blend: the weighted embeddings
        assert torch.allclose(blend[key], 0.7 * red[key] + 0.3 * blue[key], atol=1e-5)
    assert torch.equal(blend["negative_prompt_embeds"], red["negative_prompt_embeds"])


def test_playground_v25_runs_its_edm_schedule_end_to_end(tiny, tmp_path):
    s = session(tiny, tmp_path / "out")
    first = run(s, "a red circle -S 5 --model playground").records[0]
    assert "-C 3 -A k_dpmpp_2 --schedule karras --model playground" in first.command
    gen = s.host.generator
    assert type(gen._pipes["txt2img"].scheduler).__name__ == "EDMDPMSolverMultistepScheduler"
    euler = run(s, "a red circle -S 5 --model playground -A k_euler").records[0]
    assert type(gen._pipes["txt2img"].scheduler).__name__ == "EDMEulerScheduler"
    rescaled = run(s, "a red circle -S 5 --model playground --cfg_rescale 0.7").records[0]
    assert len({pixels(first), pixels(euler), pixels(rescaled)}) == 3
    with pytest.raises(UserError, match="sampler 'k_lms' does not run Playground v2.5"):
        s.check(parse_request("a cat --model playground -A k_lms"))


def test_img2img_and_inpainting_on_flux_and_sd3(tiny, tmp_path):
    s = session(tiny, tmp_path / "out")
    source = run(s, "a red circle -S 6 --model schnell").records[0]
    mask = tmp_path / "mask.png"
    m = Image.new("L", (64, 64), 0)
    m.paste(255, (16, 16, 48, 48))
    m.save(mask)
    for model in ("schnell", "medium"):
        redo = run(s, f"a blue square -S 6 --model {model} -I {source.path} -f 0.6").records[0]
        assert Image.open(redo.path).size == (64, 64) and pixels(redo) != pixels(source)
        inpainted = run(s, f"a blue square -S 6 --model {model} -I {source.path} -M {mask}").records[0]
        before, after = Image.open(source.path).convert("RGB"), Image.open(inpainted.path).convert("RGB")
        assert before.getpixel((2, 2)) == after.getpixel((2, 2))      # outside the mask: kept exactly


@pytest.mark.parametrize("precision", PRECISIONS)
def test_flux_loras_in_both_layouts_on_a_gguf_transformer_leave_no_trace(tiny, tmp_path, precision):
    s = session(tiny, tmp_path / "out", precision)
    plain = run(s, "a red circle -S 7 --model schnell").records[0]
    diffusers = run(s, "a red circle <lora:flux_diffusers:1> -S 7 --model schnell").records[0]
    kohya = run(s, "a red circle <lora:flux_kohya:1> -S 7 --model schnell").records[0]
    again = run(s, "a red circle -S 7 --model schnell").records[0]
    assert len({pixels(plain), pixels(diffusers), pixels(kohya)}) == 3
    assert pixels(again) == pixels(plain)
    with pytest.raises(UserError, match="LoRA 'xl_style' is for SDXL models"):
        s.check(parse_request("a red circle <lora:xl_style:1> --model schnell"))


def test_a_prompt_is_encoded_once_for_all_images_of_a_line(tiny, tmp_path, monkeypatch):
    s = session(tiny, tmp_path / "out")
    run(s, "warm up -S 1 --model schnell")
    pipe = s.host.generator._pipes["txt2img"]
    calls = []
    original = type(pipe).encode_prompt
    def counted(self, *args, **kwargs):
        if kwargs.get("prompt_embeds") is None:   # the pipeline's own call only passes the embeddings through
            calls.append(kwargs.get("prompt"))
        return original(self, *args, **kwargs)
    monkeypatch.setattr(type(pipe), "encode_prompt", counted)
    run(s, "a green triangle -S 1 -n 3 --model schnell")
    assert calls == [["a green triangle"]]


def test_lowvram_on_a_cpu_releases_t5_after_each_new_prompt_and_reads_it_again(tiny, tmp_path):
    low = session(tiny, tmp_path / "a", lowvram=True)
    run(low, "a red circle -S 8 --model schnell")
    pipe = low.host.generator._pipes["txt2img"]
    assert pipe.text_encoder_2 is None                     # released once the prompt was encoded
    second = run(low, "a blue square -S 8 --model schnell").records[0]   # T5 read again from its file
    assert low.host.generator._pipes["txt2img"].text_encoder_2 is None
    _generators.pop(("float32", True))
    fresh = session(tiny, tmp_path / "b", lowvram=True)
    assert pixels(run(fresh, "a blue square -S 8 --model schnell").records[0]) == pixels(second)


def test_previews_come_from_the_flow_prediction_through_16_channels(tiny, tmp_path):
    from dreamshell.engines import preview
    s = session(tiny, tmp_path / "out")
    run(s, "warm up -S 1 --model schnell")
    gen = s.host.generator
    assert gen.latent_rgb is preview.FLUX
    seen = []
    request = s.planner.plan(parse_request("a red circle -S 9 --model schnell"), s.state).images[0]
    gen.generate(request, on_preview=lambda step, total, image: seen.append((step, total, image.size)))
    assert seen == [(1, 2, (32, 32)), (2, 2, (32, 32))]     # tiny VAE: 2x, so the latent is 32x32


def test_zero_snr_v_prediction_runs_rescaled_trailing_and_refuses_what_cannot(tmp_path):
    from dataclasses import replace

    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.run.model_host import ModelHost
    from dreamshell.run.session import Session
    from dreamshell.weights.models import Registry, demo_spec
    vpred = replace(demo_spec(), prediction="v", zero_snr=True, sampler="k_euler")
    gen = DiffusersGenerator(device="cpu", precision="float32")
    s = Session(Registry({"demo": vpred}), ModelHost(lambda: gen), tmp_path / "out")
    s.echoed = []
    first = run(s, "a red circle -S 1").records[0]
    config = gen._pipes["txt2img"].scheduler.config
    assert (config.prediction_type, config.rescale_betas_zero_snr, config.timestep_spacing) == \
        ("v_prediction", True, "trailing")
    assert "-A k_euler --schedule sgm_uniform" in first.command
    rescaled = run(s, "a red circle -S 1 --cfg_rescale 0.7").records[0]
    assert pixels(rescaled) != pixels(first) and rescaled.command.endswith("--cfg_rescale 0.7")
    with pytest.raises(UserError, match="sampler 'k_lms' cannot run a zero-terminal-SNR schedule"):
        s.check(parse_request("a red circle -A k_lms"))
    with pytest.raises(UserError, match="--cfg_rescale with -I or --hires_fix on an SD 1.x/2.x model"):
        s.check(parse_request(f"a red circle --cfg_rescale 0.5 -I {first.path}"))


def test_sequential_offload_when_the_largest_part_would_not_fit():
    from dreamshell.engines.families import offload_mode
    gb = 1 << 30
    assert offload_mode(24 * gb, 16 * gb) == "sequential"     # FLUX.1 at 16 bits on a 16 GB card
    assert offload_mode(int(6.7 * gb), 16 * gb) == "model"     # its GGUF Q4_0 transformer
    assert offload_mode(24 * gb, 80 * gb) == "model"
    assert offload_mode(24 * gb, 0) == "model"                 # MPS: size unknown


def test_flux_hires_fix_with_an_image_upscaler_and_variations(tiny, tmp_path):
    s = session(tiny, tmp_path / "out")
    hires = run(s, "a red circle -S 1 --model schnell --hires_fix --hires_upscaler lanczos --hires_scale 1.5").records[0]
    assert Image.open(hires.path).size == (96, 96)
    first, second = run(s, "a red circle -S 1 -v 0.3 -n 2 --model schnell").records
    assert "-V " in first.command and pixels(first) != pixels(second)
    assert pixels(run(s, first.command).records[0]) == pixels(first)   # a variation replays from its line
