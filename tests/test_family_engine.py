"""SD 3 / 3.5 and FLUX.1 loaded offline from the files people keep (tiny widths, the same layouts): a
single file with or without its CLIPs, a GGUF or safetensors FLUX.1 transformer with ComfyUI's clip_l,
t5xxl and ae files; every written tensor where it belongs; one small image each. And each family's
schedule against the published values."""

import json
import socket
from dataclasses import replace
from pathlib import Path

import pytest

from dreamshell.engines import families, loading  # noqa: E402
from dreamshell.engines.protocols import GenerationError  # noqa: E402
from dreamshell.weights.checkpoint import Detected  # noqa: E402
from dreamshell.weights.models import ModelSpec  # noqa: E402

CONFIGS = Path(__file__).resolve().parent.parent / "dreamshell" / "configs"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    from dreamshell.engines.family_files import tiny_files
    return tiny_files(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(autouse=True)
def offline(monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError("network access is disabled in this test")
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")


def _image(pipe, kind, cfg=1.0, negative=""):
    import torch
    pipe.set_progress_bar_config(disable=True)
    args = families.call_args(kind, prompt="a red circle", negative=negative, steps=2, cfg=cfg, width=32, height=32)
    return pipe(**args, generator=torch.Generator().manual_seed(0)).images[0]


def _written(path):
    from safetensors import safe_open
    with safe_open(str(path), framework="pt") as f:
        return {k: f.get_tensor(k) for k in f.keys()}


def test_sd35_medium_runs_on_clip_alone_and_with_t5(tiny, tmp_path):
    import torch
    spec = ModelSpec("sd35m", tiny["sd35-medium"], "sd35-medium", config=tiny["sd35-medium-config"],
                     clip_l=tiny["clip_l"], clip_g=tiny["clip_g"])
    found = Detected("sd35-medium", bundled=("vae",))
    pipe = families.load_pipeline(spec, "sd35-medium", found, torch.float32, tmp_path)
    assert type(pipe).__name__ == "StableDiffusion3Pipeline" and pipe.text_encoder_3 is None
    assert _image(pipe, "sd35-medium", cfg=4.5).size == (32, 32)
    written = _written(tiny["clip_g"])  # the separate CLIP-G file's tensors are the ones in use
    loaded = pipe.text_encoder_2.state_dict()
    names = [k for k in written if k in loaded or k.removeprefix("text_model.") in loaded]
    assert len(names) == len(loaded)
    assert all(torch.equal(written[k], loaded.get(k, loaded.get(k.removeprefix("text_model.")))) for k in names)
    written = _written(tiny["sd35-medium"])   # and the transformer's, through diffusers' converter
    assert torch.equal(pipe.transformer.pos_embed.pos_embed, written["model.diffusion_model.pos_embed"])
    pipe = families.load_pipeline(replace(spec, t5xxl=tiny["t5xxl"]), "sd35-medium", found, torch.float32, tmp_path)
    assert type(pipe.text_encoder_3).__name__ == "T5EncoderModel" and pipe.tokenizer_3 is not None
    assert torch.equal(pipe.text_encoder_3.shared.weight, _written(tiny["t5xxl"])["shared.weight"])
    assert _image(pipe, "sd35-medium", cfg=4.5, negative="blurry").size == (32, 32)


def test_sd35_medium_with_its_clips_inside(tiny, tmp_path):
    import torch
    spec = ModelSpec("m", tiny["sd35-medium-clips"], "sd35-medium", config=tiny["sd35-medium-config"])
    found = Detected("sd35-medium", bundled=("clip_l", "clip_g", "vae"))
    pipe = families.load_pipeline(spec, "sd35-medium", found, torch.float32, tmp_path)
    written = _written(tiny["sd35-medium-clips"])
    key = "text_encoders.clip_l.transformer.text_model.embeddings.token_embedding.weight"
    assert torch.equal(pipe.text_encoder.get_input_embeddings().weight, written[key])
    assert _image(pipe, "sd35-medium").size == (32, 32)


@pytest.mark.parametrize("kind", ["flux-schnell", "flux-dev"])
@pytest.mark.parametrize("fmt", ["", "-gguf"])
def test_flux_from_a_transformer_file_and_comfyui_encoder_and_vae_files(tiny, tmp_path, kind, fmt):
    import torch
    spec = ModelSpec("f", tiny[kind + fmt], kind, config=tiny[f"{kind}-config"], clip_l=tiny["clip_l"],
                     t5xxl=tiny["t5xxl"], vae=str(tiny["ae"]))
    pipe = families.load_pipeline(spec, kind, Detected(kind), torch.float32, tmp_path)
    assert type(pipe).__name__ == "FluxPipeline"
    assert pipe.transformer.config.guidance_embeds == (kind == "flux-dev")
    if fmt:
        assert type(pipe.transformer.transformer_blocks[0].attn.to_q.weight).__name__ == "GGUFParameter"
    else:
        written = _written(tiny[kind])
        loaded = pipe.transformer.state_dict()
        assert set(written) == set(loaded) and all(torch.equal(written[k], loaded[k]) for k in written)
    assert _image(pipe, kind).size == (32, 32)


def test_playground_v25_loads_from_one_file_with_the_shipped_edm_config(tiny):
    import torch
    from diffusers import StableDiffusionXLPipeline

    from dreamshell.weights.checkpoint import detect
    path = tiny["sdxl-playground"]
    found = loading.detect_weights(ModelSpec("pg", path, ""))
    assert detect(path).kind == found.kind == "sdxl-playground"
    assert loading.pipeline_class(found.kind, "txt2img") is StableDiffusionXLPipeline
    config = families.assemble_config("sdxl-playground", tiny["sdxl-playground"].parent / "cache",
                                      source=tiny["sdxl-playground-config"])
    pipe = StableDiffusionXLPipeline.from_single_file(str(path), config=str(config), local_files_only=True)
    assert type(pipe.scheduler).__name__ == "EDMDPMSolverMultistepScheduler"
    assert (pipe.vae.config.scaling_factor, pipe.vae.config.latents_std[3]) == (0.5, 5.2299)
    pipe.scheduler = families.scheduler_for("sdxl-playground", "k_euler", pipe.scheduler.config)
    pipe.set_progress_bar_config(disable=True)
    image = pipe("a red circle", num_inference_steps=2, width=32, height=32, guidance_scale=3.0,
                 generator=torch.Generator().manual_seed(0)).images[0]
    assert image.size == (32, 32)


def test_a_missing_part_is_one_line_naming_the_models_file_key(tiny, tmp_path):
    import torch
    spec = ModelSpec("f", tiny["flux-schnell"], "flux-schnell", config=tiny["flux-schnell-config"],
                     clip_l=tiny["clip_l"])
    with pytest.raises(GenerationError, match=r"has no t5xxl or vae in flux-schnell-tiny.safetensors: name the "
                                              r"files in the models file: 't5xxl:' \(T5-XXL text encoder\), 'vae:'"):
        families.load_pipeline(spec, "flux-schnell", Detected("flux-schnell"), torch.float32, tmp_path)
    spec = replace(spec, t5xxl=tiny["clip_g"], vae=str(tiny["ae"]))
    with pytest.raises(GenerationError, match=r"t5xxl .*clip_g.safetensors is a CLIP text encoder .* not a T5-XXL"):
        families.load_pipeline(spec, "flux-schnell", Detected("flux-schnell"), torch.float32, tmp_path)


def test_the_assembled_config_carries_both_tokenizers(tmp_path):
    from transformers import CLIPTokenizer, T5TokenizerFast
    folder = families.assemble_config("sd35-large-turbo", tmp_path)
    assert json.loads((folder / "model_index.json").read_text())["_class_name"] == "StableDiffusion3Pipeline"
    t5 = T5TokenizerFast.from_pretrained(str(folder / "tokenizer_3"), local_files_only=True)
    assert t5("a photo of a cat").input_ids == [3, 9, 1202, 13, 3, 9, 1712, 1]   # google/t5-v1_1-xxl's pieces
    clip = CLIPTokenizer.from_pretrained(str(folder / "tokenizer_2"), local_files_only=True)
    assert clip("a photo of a cat").input_ids == [49406, 320, 1125, 539, 320, 2368, 49407]
    folder = families.assemble_config("flux-dev", tmp_path)
    assert (folder / "tokenizer_2" / "tokenizer.json").exists() and (folder / "tokenizer" / "vocab.json").exists()


# ----- schedules against the published values

def _scheduler(kind):
    import diffusers
    config = json.loads((CONFIGS / kind / "scheduler" / "scheduler_config.json").read_text())
    return getattr(diffusers, config["_class_name"]).from_config(config)


def _shifted(shift, s):
    return round(shift * s / (1 + (shift - 1) * s), 4)


def test_flow_shift_sd3_3_flux_dev_dynamic_and_schnell_1():
    for kind in ("sd3-medium", "sd35-medium", "sd35-large"):
        s = _scheduler(kind)
        assert (type(s).__name__, s.config.shift, s.config.use_dynamic_shifting) == \
            ("FlowMatchEulerDiscreteScheduler", 3.0, False)
        s.set_timesteps(4)   # sigma' = 3 s / (1 + 2 s) (SD 3's time shift) on s from 1 down to shift(1/1000)
        low = 3.0 * 0.001 / (1 + 2.0 * 0.001)
        assert [round(float(x), 4) for x in s.sigmas] == \
            [_shifted(3.0, 1 - i * (1 - low) / 3) for i in range(4)] + [0.0]
    dev = _scheduler("flux-dev")
    assert (dev.config.use_dynamic_shifting, dev.config.base_shift, dev.config.max_shift,
            dev.config.base_image_seq_len, dev.config.max_image_seq_len) == (True, 0.5, 1.15, 256, 4096)
    schnell = _scheduler("flux-schnell")
    assert (schnell.config.shift, schnell.config.use_dynamic_shifting) == (1.0, False)
    schnell.set_timesteps(4)
    assert [round(float(x), 4) for x in schnell.sigmas] == [1.0, 0.667, 0.334, 0.001, 0.0]


def test_playground_runs_on_edm_samplers_only():
    s = _scheduler("sdxl-playground")
    assert (type(s).__name__, s.config.sigma_min, s.config.sigma_max, s.config.sigma_data, s.config.rho) == \
        ("EDMDPMSolverMultistepScheduler", 0.002, 80.0, 0.5, 7.0)
    vae = json.loads((CONFIGS / "sdxl-playground" / "vae" / "config.json").read_text())
    assert (vae["scaling_factor"], vae["latents_mean"][0], vae["latents_std"][0]) == (0.5, -1.6574, 8.4927)
    euler = families.scheduler_for("sdxl-playground", "k_euler", s.config)
    assert type(euler).__name__ == "EDMEulerScheduler" and euler.config.sigma_data == 0.5
    with pytest.raises(GenerationError, match="sampler 'k_lms' does not run Playground v2.5 .*EDM.*use k_euler or k_dpmpp_2"):
        families.scheduler_for("sdxl-playground", "k_lms", s.config)


def test_zero_terminal_snr_rescales_the_betas_as_lin_et_al():
    import diffusers

    class Pipe:
        scheduler = _scheduler("sdxl")
    pipe = Pipe()
    families.apply_schedule(pipe, "v", True)
    s = pipe.scheduler
    assert (s.config.prediction_type, s.config.rescale_betas_zero_snr, s.config.timestep_spacing) == \
        ("v_prediction", True, "trailing")
    assert float(s.alphas_cumprod[-1]) < 1e-6       # zero SNR at the last step (Euler keeps 2**-24, not 0)
    plain = diffusers.EulerDiscreteScheduler.from_config(_scheduler("sdxl").config)
    assert float(plain.alphas_cumprod[-1]) > 1e-3   # SDXL's own schedule stops at SNR > 0
    s.set_timesteps(4)
    assert int(s.timesteps[0]) == 999                # trailing: the first step is the last timestep
    with pytest.raises(GenerationError, match="cannot run a zero-terminal-SNR schedule"):
        families.scheduler_for("sdxl", "k_lms", s.config, zero_snr=True, plan_scheduler="LMSDiscreteScheduler")


def test_flow_samplers_and_refusals():
    cfg = _scheduler("flux-dev").config
    assert type(families.scheduler_for("flux-dev", "k_euler", cfg)).__name__ == "FlowMatchEulerDiscreteScheduler"
    with pytest.raises(GenerationError, match="k_heun' does not run FLUX.1 dev"):
        families.scheduler_for("flux-dev", "k_heun", cfg)
    sd3 = _scheduler("sd35-large").config
    assert type(families.scheduler_for("sd35-large", "k_heun", sd3)).__name__ == "FlowMatchHeunDiscreteScheduler"
    with pytest.raises(GenerationError, match="sampler 'ddim' does not run SD 3.5 Large .*flow-matching.*k_euler"):
        families.scheduler_for("sd35-large", "ddim", sd3)
    assert families.scheduler_for("sdxl", "k_lms", _scheduler("sdxl").config) is None


@pytest.mark.parametrize("kind,kw,says", [
    ("flux-dev", dict(negative="blur", cfg=1.0, clip_skip=None), "ignores a negative prompt unless -C is above 1"),
    ("flux-schnell", dict(negative="", cfg=1.0, clip_skip=2), "takes no clip skip"),
    ("flux-schnell", dict(negative="", cfg=1.0, clip_skip=None, guidance=3.5), "no distilled guidance"),
    ("sd35-medium", dict(negative="", cfg=4.5, clip_skip=None, guidance=3.5), "is for FLUX.1 dev"),
    ("sd35-large-turbo", dict(negative="blur", cfg=1.0, clip_skip=None), "ignores a negative prompt"),
])
def test_switches_a_family_does_not_take_are_one_line(kind, kw, says):
    assert says in families.refusal(kind, **kw)
    assert families.refusal("flux-dev", negative="blur", cfg=3.0, clip_skip=None) is None


def test_call_arguments_per_family():
    dev = families.call_args("flux-dev", prompt="p", negative="n", steps=20, cfg=1.0, width=1024, height=768)
    assert (dev["guidance_scale"], dev["true_cfg_scale"], dev["max_sequence_length"], "negative_prompt" in dev) == \
        (3.5, 1.0, 512, False)
    schnell = families.call_args("flux-schnell", prompt="p", negative="", steps=4, cfg=1.0, width=1024, height=1024)
    assert (schnell["guidance_scale"], schnell["max_sequence_length"]) == (0.0, 256)
    sd3 = families.call_args("sd35-large", prompt="p", negative="n", steps=28, cfg=3.5, width=1024, height=1024,
                             clip_skip=2)
    assert (sd3["guidance_scale"], sd3["negative_prompt"], sd3["clip_skip"]) == (3.5, "n", 1)
    assert families.latent_shape("flux-dev", 256, 256) == (16, 32, 32)


def test_the_engine_reads_the_new_kinds_as_diffusers_does(tmp_path):
    from family_headers import header_only, layouts
    path = header_only(tmp_path / "sd3.5_large_turbo.safetensors", layouts.sd3_single_file("sd35-large", ()))
    found = loading.detect_weights(ModelSpec("t", path, ""))
    assert found.kind == "sd35-large-turbo"        # diffusers says sd35_large: the same weights
    assert loading.settle_kind(ModelSpec("t", path, "sd35-large"), found) == "sd35-large"
    assert loading.config_folder("sd35-large-turbo", None) == "sd35-large"
    path = header_only(tmp_path / "f.safetensors", layouts.flux_transformer(True))
    assert loading.detect_weights(ModelSpec("f", path, "")).kind == "flux-dev"
    assert loading.pipeline_class("flux-dev", "img2img").__name__ == "FluxImg2ImgPipeline"
    with pytest.raises(GenerationError, match="the models file says kind sd35-medium"):
        loading.settle_kind(ModelSpec("f", path, "sd35-medium"), loading.detect_weights(ModelSpec("f", path, "")))
