"""What each model family takes from a line, answered when the line is typed (no torch): the switches a
family refuses in one line, the schedule and guidance it runs by default written into the line, the samplers
and schedules each schedule family runs, and which family a LoRA file is for from its keys."""

import pytest

from dreamshell.line.parser import parse_request
from dreamshell.line.errors import UserError
from dreamshell.weights import families
from dreamshell.weights.models import ModelSpec, Registry


def spec(kind, **kw):
    from pathlib import Path
    defaults = dict(width=1024, height=1024, steps=20, cfg_scale=1.0, sampler="k_euler")
    return ModelSpec(kind, Path("."), kind, **{**defaults, **kw})


FLUX_DEV, SCHNELL = spec("flux-dev"), spec("flux-schnell", steps=4)
SD35, TURBO = spec("sd35-medium", cfg_scale=4.5), spec("sd35-large-turbo", steps=4)
XL, PLAYGROUND = spec("sdxl", cfg_scale=7.0), spec("sdxl-playground", cfg_scale=3.0, sampler="k_dpmpp_2")
VPRED = spec("sdxl", cfg_scale=5.0, prediction="v", zero_snr=True)
SD15 = spec("sd1", width=512, height=512, cfg_scale=7.5, sampler="k_lms")


def why(line, model, files=None):
    return families.check_line(parse_request(line), model, files)


@pytest.mark.parametrize("line, model, says", [
    ("a cat --clip_skip 2", FLUX_DEV, "FLUX.1 dev takes no clip skip"),
    ("a cat [blurry]", FLUX_DEV, "FLUX.1 dev ignores a negative prompt unless -C is above 1"),
    ("a cat --guidance 3", SCHNELL, "FLUX.1 schnell has no distilled guidance (only FLUX.1 dev has): drop --guidance"),
    ("a cat --guidance 3", SD35, "--guidance (Forge's Distilled CFG Scale) is for FLUX.1 dev; SD 3.5 Medium uses -C"),
    ("a cat --guidance 3", XL, "is for FLUX.1 dev; SDXL base uses -C"),
    ("a cat [blurry]", TURBO, "SD 3.5 Large Turbo runs without CFG at -C 1 and ignores a negative prompt"),
    ("a cat -A k_lms", FLUX_DEV, "sampler 'k_lms' does not run FLUX.1 dev (flow-matching schedule); use k_euler"),
    ("a cat -A ddim", SD35, "sampler 'ddim' does not run SD 3.5 Medium (flow-matching schedule); use k_euler or k_heun"),
    ("a cat -A k_heun", SCHNELL, "sampler 'k_heun' does not run FLUX.1 schnell"),
    ("a cat -A k_heun --schedule karras", SD35, "sampler 'k_heun' runs SD 3.5 Medium on its own schedule only"),
    ("a cat --schedule ddim", FLUX_DEV, "the 'DDIM' schedule does not run FLUX.1 dev (flow-matching); schedules: "),
    ("a cat -A k_lms", PLAYGROUND, "sampler 'k_lms' does not run Playground v2.5 (SDXL with an EDM schedule) (EDM "
                                   "schedule); use k_euler or k_dpmpp_2"),
    ("a cat --schedule beta", PLAYGROUND, "the 'Beta' schedule does not run Playground v2.5"),
    ("a cat -A k_lms", VPRED, "sampler 'k_lms' cannot run a zero-terminal-SNR schedule in diffusers"),
    ("a cat --cfg_rescale 0.7", SD35, "--cfg_rescale is for SD 1.x/2.x/XL (v-prediction) models"),
    ("a cat --seamless", FLUX_DEV, "--seamless tiles a UNet's convolutions; FLUX.1 dev is a transformer"),
    # before the control and families merge: both were dropped without a word on SD 3 / FLUX.1
    ("a cat --control canny:edges.png", FLUX_DEV, "--control guides a UNet (SD 1.x/2.x/XL ControlNets"),
    ("a cat --timesteps 999,499", SD35, "--timesteps lists a UNet schedule's timesteps; SD 3.5 Medium is a flow"),
    ("a cat -W 1000 -H 1024", FLUX_DEV, "FLUX.1 dev makes sizes in multiples of 16 (2x2 patches of 8x latents): "
                                        "1000x1024 is not; use 992 or 1008 by 1024"),
    ("a cat -W 512 -H 512 --hires_fix", SD35, "the hires fix's latent upscaler does not run SD 3.5 Medium"),
    ("a cat -W 520 -H 512 --hires_fix --hires_upscaler lanczos --hires_scale 1.5", SD35,
     "SD 3.5 Medium makes sizes in multiples of 16"),
    ("a cat --cfg_rescale 0.7 -I x.png", SD15, "--cfg_rescale with -I or --hires_fix on an SD 1.x/2.x model"),
])
def test_a_switch_the_family_does_not_take_is_one_line(line, model, says):
    answer = why(line, model)
    assert answer is not None and says in answer and "\n" not in answer


@pytest.mark.parametrize("line, model", [
    ("a cat [blurry] -C 3.5", FLUX_DEV),          # true CFG
    ("a cat --guidance 2.5", FLUX_DEV),
    ("a cat [blurry] --clip_skip 2", SD35),        # SD 3's CLIPs take clip skip
    ("a cat -A k_heun", SD35),
    ("a cat --schedule beta", FLUX_DEV),
    ("a cat --schedule karras -A k_dpmpp_2", PLAYGROUND),
    ("a cat --cfg_rescale 0.7", VPRED),
    ("a cat --cfg_rescale 0.7 --hires_fix -W 512 -H 512", VPRED),   # SDXL's img2img takes it
    ("a cat -W 1024 -H 576 --hires_fix --hires_upscaler esrgan --hires_scale 1.5", FLUX_DEV),
    ("a cat [ugly] --clip_skip 2", SD15),
])
def test_what_a_family_takes_passes(line, model):
    assert why(line, model) is None


def test_the_models_defaults_are_what_is_checked():
    # the model's own CFG 1 with a negative: refused; the line's -C 3 is true CFG
    assert "unless -C is above 1" in why("a cat [ugly]", FLUX_DEV)
    assert why("a cat [ugly]", spec("flux-dev", cfg_scale=3.5)) is None
    assert "multiples of 16" in why("a cat", spec("flux-dev", width=1000))
    assert "takes no clip skip" in why("a cat", spec("flux-schnell", clip_skip=2))
    assert why("a cat --clip_skip 2", spec("", cfg_scale=1)) is None     # a kind not known yet: checked at load


def test_each_family_writes_its_schedule_and_guidance_into_the_line():
    def resolved(line, model):
        request = parse_request(line)
        return families.family_defaults(request.with_(sampler=request.sampler or model.sampler), model)
    assert resolved("a cat", FLUX_DEV).schedule == "simple" and resolved("a cat", FLUX_DEV).guidance == 3.5
    assert resolved("a cat --guidance 2", FLUX_DEV).guidance == 2
    assert (resolved("a cat", SCHNELL).schedule, resolved("a cat", SCHNELL).guidance) == ("simple", None)
    assert resolved("a cat", SD35).schedule == "uniform"
    assert resolved("a cat", PLAYGROUND).schedule == "karras"
    assert resolved("a cat", VPRED).schedule == "sgm_uniform"       # zero SNR: trailing timesteps
    assert resolved("a cat --schedule beta", FLUX_DEV).schedule == "beta"
    assert resolved("a cat", XL).schedule is None and resolved("a cat", SD15).schedule is None
    assert resolved("a cat -A 'Euler Karras'", VPRED).schedule is None   # the combined name says it


# ----- LoRAs: which family from the keys

R = 4


@pytest.mark.parametrize("shapes, family", [
    ({"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": (R, 3072)}, "flux"),              # kohya FLUX
    ({"transformer.single_transformer_blocks.0.proj_out.lora_A.weight": (R, 15360)}, "flux"),      # diffusers FLUX
    ({"double_blocks.0.processor.qkv_lora1.down.weight": (R, 3072)}, "flux"),                       # XLabs
    ({"diffusion_model.double_blocks.0.img_attn.qkv.lora_down.weight": (R, 3072)}, "flux"),         # ComfyUI
    ({"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": (R, 3072)}, "flux"),              # double only
    ({"transformer.transformer_blocks.0.attn.to_q.lora_A.weight": (R, 1536)}, "sd3"),               # diffusers SD 3
    ({"lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight": (R, 1536)}, "sd3"),             # kohya SD 3
    ({"lora_te1_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (R, 768)}, "sdxl"),
    ({"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": (R, 2048)}, "sdxl"),
    ({"lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight": (R, 768)}, "sd1"),
    ({"unet.down_blocks.1.attentions.0.transformer_blocks.0.attn2.to_k.lora_A.weight": (R, 1024)}, "sd2"),
    ({"lora_te_text_model_encoder_layers_0_mlp_fc1.lora_down.weight": (R, 768)}, None),   # text encoder only
])
def test_a_loras_family_comes_from_its_keys(shapes, family):
    assert families.lora_family(shapes) == family


def test_a_wrong_family_lora_is_refused_when_the_line_is_typed(tmp_path):
    from family_headers import header_only
    from dreamshell.run.plan import Planner
    from dreamshell.weights.library import Folders
    loras = tmp_path / "loras"
    loras.mkdir()
    header_only(loras / "xl_style.safetensors",
                {"lora_unet_input_blocks_4_1_transformer_blocks_0_attn2_to_k.lora_down.weight": (R, 2048)})
    header_only(loras / "flux_style.safetensors",
                {"lora_unet_double_blocks_0_img_attn_qkv.lora_down.weight": (R, 3072)})
    header_only(loras / "sd3_kohya.safetensors",
                {"lora_unet_joint_blocks_0_x_block_attn_qkv.lora_down.weight": (R, 1536)})
    weights = tmp_path / "w.gguf"
    weights.write_bytes(b"")
    models = {n: ModelSpec(n, weights, k, width=1024, height=1024, steps=4, cfg_scale=1.0, sampler="k_euler")
              for n, k in (("schnell", "flux-schnell"), ("medium", "sd35-medium"))}
    planner = Planner(Registry(models, folders=Folders(loras, tmp_path / "e", tmp_path / "v")))
    with pytest.raises(UserError, match="LoRA 'xl_style' is for SDXL models \\(from its keys\\); the model is FLUX.1 "
                                        "schnell: drop the tag or switch models"):
        planner.check(parse_request("a cat <lora:xl_style:0.8>"), current=models["schnell"])
    planner.check(parse_request("a cat <lora:flux_style:0.8>"), current=models["schnell"])
    with pytest.raises(UserError, match="LoRA 'flux_style' is for FLUX.1 models"):
        planner.check(parse_request("a cat <lora:flux_style:0.8> --model medium"))
    with pytest.raises(UserError, match="kohya's layout .* which diffusers does not load for SD 3"):
        planner.check(parse_request("a cat <lora:sd3_kohya:1>"), current=models["medium"])


def test_embeddings_are_refused_on_sd3_and_flux(tmp_path):
    from dreamshell.weights.library import LineFiles, UsedEmbedding
    files = LineFiles(embeddings=(UsedEmbedding("EasyNegative", tmp_path / "EasyNegative.safetensors"),))
    assert "embedding 'EasyNegative' is for SD 1.x/2.x/XL: FLUX.1 dev takes no textual-inversion embeddings" in \
        why("a cat [EasyNegative] -C 3", FLUX_DEV, files)
    assert why("a cat [EasyNegative]", SD15, files) is None


# ----- through the planner and the session: the same words when typed, the defaults in the log line

def test_the_planner_answers_for_the_current_model_and_writes_the_family_defaults(tmp_path):
    from dreamshell.run.plan import Planner, PlanState
    weights = tmp_path / "flux.gguf"
    weights.write_bytes(b"")
    dev = ModelSpec("dev", weights, "flux-dev", width=1024, height=1024, steps=20, cfg_scale=1.0, sampler="k_euler")
    planner = Planner(Registry({"dev": dev}))
    with pytest.raises(UserError, match="takes no clip skip"):
        planner.check(parse_request("a cat --clip_skip 2"), current=dev)
    plan = planner.plan(parse_request("a cat -S 5"), PlanState(dev))
    from dreamshell.line.formatter import format_request
    assert format_request(plan.images[0]) == ('"a cat" -s 20 -S 5 -W 1024 -H 1024 -C 1 -A k_euler --schedule simple '
                                              '--model dev --guidance 3.5')
    with pytest.raises(UserError, match="ignores a negative prompt unless -C is above 1"):
        planner.plan(parse_request("a cat [ugly]"), PlanState(dev))


def test_a_typed_line_is_answered_at_once_for_the_loaded_models_family(fake_session):
    from dataclasses import replace
    session = fake_session()
    flux = replace(session.registry.models["fake"], kind="flux-schnell")
    session.registry.models["fake"] = flux
    session.model = flux
    with pytest.raises(UserError, match="FLUX.1 schnell has no distilled guidance"):
        session.check(parse_request("a cat --guidance 3"))


# ----- !models: the kinds by name, the ModelSpec title and architecture

XL_KEYS = {"model.diffusion_model.input_blocks.0.0.weight": (320, 4, 3, 3),
           "model.diffusion_model.input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (640, 2048),
           "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": (1280,),
           "v_pred": (0,), "ztsnr": (0,)}


def test_models_lists_each_kind_by_name_with_the_headers_title(tmp_path, fake_session):
    from family_headers import header_only
    from dreamshell.run.dispatch import Dispatcher
    from dreamshell.weights.models import listing, load_registry
    meta = {"modelspec.title": "NoobAI XL V-Pred 1.0", "modelspec.architecture": "stable-diffusion-xl-v1-base"}
    header_only(tmp_path / "noob.safetensors", XL_KEYS, meta)
    header_only(tmp_path / "flux.safetensors", {"img_in.weight": (3072, 64)})
    (tmp_path / "models.yaml").write_text("noob:\n  weights: noob.safetensors\n  kind: sdxl\n"
                                          "detected:\n  weights: noob.safetensors\n"
                                          "dev:\n  weights: flux.safetensors\n  kind: flux-dev\n")
    registry = load_registry(tmp_path / "models.yaml")
    noob = registry.models["noob"]
    assert (noob.zero_snr, noob.prediction, noob.sampler) == (True, "v", "k_euler")   # from the header, kind given
    assert listing(noob) == listing(registry.models["detected"]) == \
        "SDXL base, zero terminal SNR, v-prediction: NoobAI XL V-Pred 1.0 / stable-diffusion-xl-v1-base"
    assert listing(registry.models["dev"]) == "FLUX.1 dev"
    session = fake_session()
    session.registry.models.clear()
    session.registry.models.update(registry.models)
    out = []
    Dispatcher(session, echo=out.append).execute("!models")
    assert out[0].split()[:3] == ["noob", "not", "loaded"] and out[0].endswith("NoobAI XL V-Pred 1.0 / "
                                                                                   "stable-diffusion-xl-v1-base")
    assert out[2].endswith("not loaded  FLUX.1 dev")
