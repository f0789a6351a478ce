"""The same image as A1111 from the same recipe (issue 19): step noise from the image's own stream (ENSD
honoured), A1111's sigma schedules (its DDIM schedule type among them), its hires step count, and recipes that
InvokeAI 2.2's parser takes.

Numbers marked A1111 were made once by running A1111 1.10's own functions (`modules/sd_schedulers.py` as mirrored
in lllyasviel/stable-diffusion-webui-forge, over k-diffusion's CompVisDenoiser with the SD 1.x schedule) in a
scratch folder outside this repository."""

import argparse
import json
import shlex
from pathlib import Path

import pytest
from PIL import Image

from conftest import generator_at
from dreamshell.line import hires
from dreamshell.line.parser import parse_request
from dreamshell.store.pngmeta import ImageMeta, png_bytes, read_chunks

# ----- the hires fix's step count (A1111's setup_img2img_steps)


@pytest.mark.parametrize("strength", [0.05, 0.1, 0.2, 0.25, 0.3, 0.33, 0.35, 0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7,
                                      0.75, 0.8, 0.85, 0.9, 0.95, 0.999, 1.0])
def test_the_second_pass_runs_the_hires_steps_for_every_count(strength):
    for steps in range(1, 200):
        schedule, entry = hires.second_pass_steps(steps, strength)
        assert schedule == int(steps / min(strength, 0.999))      # A1111's schedule length
        assert min(int(schedule * entry), schedule) == steps      # what diffusers' img2img then runs
        assert 0 < entry <= 1


def _count_unet_calls(gen, monkeypatch):
    unet = gen._pipes["txt2img"].unet
    calls = []
    original = unet.forward
    monkeypatch.setattr(unet, "forward", lambda *a, **k: calls.append(1) or original(*a, **k))
    return calls


@pytest.mark.parametrize("steps, strength", [(1, 0.55), (6, 0.7), (3, 0.3), (7, 0.75)])
def test_the_hires_fix_runs_a1111s_second_pass_steps(steps, strength, monkeypatch):
    # before: int(schedule x strength) steps (5 for 6 at 0.7, 2 for 3 at 0.3), and 1 at 0.55 failed in diffusers
    # ("stack expects a non-empty TensorList")
    from dreamshell.weights.models import demo_spec
    gen = generator_at("float32")
    gen.load(demo_spec()) if gen.spec is None else None
    calls = _count_unet_calls(gen, monkeypatch)
    progress = []
    req = parse_request(f'"a red circle" -s 4 -S 3 -W 64 -H 64 -C 5 -A k_euler --model demo --hires_fix --hires_scale 1.5 '
                        f"--hires_steps {steps} --hires_strength {strength} --hires_upscaler latent")
    image = gen.generate(req, on_step=lambda done, total: progress.append((done, total)))
    assert image.size == (96, 96)
    assert len(calls) == 4 + steps                  # k_euler: one UNet call (cond and uncond batched) a step
    assert progress[-1] == (4 + steps, 4 + steps)


# ----- A1111's schedules


A1111_DDIM = {  # steps -> (sigmas A1111's ddim_scheduler makes, the first three and the last two before 0)
    7: (8, (14.265109, 6.57065, 3.485455), (0.440309, 0.041314)),
    10: (10, (8.390685, 5.134431, 3.347764), (0.346187, 0.041314)),
    30: (31, (13.925848, 11.476847, 9.543582), (0.182166, 0.041314)),
    150: (167, (14.438569, 13.925848, 13.43547), (0.083423, 0.041314)),
}
A1111_UNIFORM_10 = (14.614643, 7.839883, 4.609174, 2.918307, 1.950161, 1.344928, 0.932358, 0.624977, 0.368658,
                    0.029168)
A1111_KARRAS_10 = (14.614643, 9.102934, 5.478399, 3.168609, 1.749423, 0.914077, 0.446921, 0.2014, 0.081911, 0.029168)


DEMO_CONFIG = Path(__file__).resolve().parent.parent / "models" / "demo" / "scheduler" / "scheduler_config.json"


def demo_scheduler(sampler: str, schedule: str | None):
    """The scheduler the generator builds for a sampler and schedule on the demo model's config."""
    from dreamshell.engines.generator import DiffusersGenerator
    gen = DiffusersGenerator.__new__(DiffusersGenerator)
    gen._scheduler_config = json.loads(DEMO_CONFIG.read_text())
    return gen._scheduler(sampler, schedule)


def _sd_sigmas():
    from diffusers import EulerDiscreteScheduler

    from dreamshell.engines.schedules import alphas_cumprod, model_sigmas
    return model_sigmas(alphas_cumprod(EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085,
                                                              beta_end=0.012)))


@pytest.mark.parametrize("steps", sorted(A1111_DDIM))
def test_the_ddim_schedule_is_a1111s(steps):
    from dreamshell.engines.schedules import a1111_sigmas
    got = a1111_sigmas("ddim", steps, _sd_sigmas())
    count, first, last = A1111_DDIM[steps]
    assert len(got) == count
    assert got[:3].tolist() == pytest.approx(first, abs=1e-6)
    assert got[-2:].tolist() == pytest.approx(last, abs=1e-6)


def test_a1111_makes_more_ddim_steps_than_asked_for_133_of_150_counts():
    from dreamshell.engines.schedules import a1111_sigmas
    sigmas = _sd_sigmas()
    assert sum(len(a1111_sigmas("ddim", n, sigmas)) != n for n in range(1, 151)) == 133


@pytest.mark.parametrize("sampler, schedule, want", [
    ("k_euler", "uniform", A1111_UNIFORM_10), ("k_euler", "karras", A1111_KARRAS_10),
    ("k_euler_a", "karras", A1111_KARRAS_10), ("k_lms", "uniform", A1111_UNIFORM_10),
    ("k_dpmpp_2", "karras", A1111_KARRAS_10), ("k_euler", "ddim", None), ("k_heun", "karras", A1111_KARRAS_10)])
def test_the_scheduler_runs_a1111s_sigmas(sampler, schedule, want):
    # before: diffusers' own (a Karras schedule between the sigmas of its spaced timesteps, linear interpolation)
    from dreamshell.engines.schedules import a1111_sigmas
    scheduler = demo_scheduler(sampler, schedule)
    scheduler.set_timesteps(10)
    want = want or tuple(float(x) for x in a1111_sigmas("ddim", 10, _sd_sigmas()))
    got = scheduler.sigmas
    if sampler == "k_heun":          # Heun's second-order steps: each sigma but the first twice, then 0
        got = got[::2]
    assert got[:len(want)].tolist() == pytest.approx(want, abs=1e-6)
    assert float(scheduler.sigmas[-1]) == 0.0


def test_dpm2_drops_the_next_to_last_sigma_as_a1111_does():
    from dreamshell.engines.schedules import a1111_sigmas
    scheduler = demo_scheduler("k_dpm_2", "karras")
    scheduler.set_timesteps(10)
    # A1111: get_sigmas(11) is 11 sigmas and 0; the next-to-last (the smallest) is dropped
    eleven = [float(x) for x in a1111_sigmas("karras", 11, _sd_sigmas())]
    assert [round(float(x), 4) for x in scheduler.sigmas[::2]] == [round(x, 4) for x in eleven[:-1]] + [0.0]


def test_the_ddim_sampler_on_the_ddim_schedule_walks_a1111s_timesteps():
    scheduler = demo_scheduler("ddim", "ddim")
    scheduler.set_timesteps(10)
    assert scheduler.timesteps.tolist() == [901, 801, 701, 601, 501, 401, 301, 201, 101]   # to t = 1, as A1111
    scheduler.set_timesteps(30)
    assert scheduler.timesteps.tolist()[:2] == [991, 958] and scheduler.timesteps.tolist()[-1] == 34


# A1111's UniPC (sd_samplers_timesteps_impl.unipc over uni_pc.NoiseScheduleVP('discrete'), 1.10's defaults bh1,
# time_uniform, order 3): the UNet's timesteps (t x 1000 - 1) and the k-diffusion sigmas (marginal_std /
# marginal_alpha) of its grid, computed once with A1111's uni_pc.py on the SD 1.x alphas_cumprod
A1111_UNIPC_10 = (
    (999.0, 899.1, 799.2, 699.3, 599.4, 499.5, 399.6, 299.7, 199.8, 99.9, 0.0),
    (14.614641, 8.307172, 5.092408, 3.32507, 2.279731, 1.615582, 1.162866, 0.831885, 0.57119, 0.343706, 0.029168))
A1111_UNIPC_30 = (31, (999.0, 966.7742, 934.5484), (32.2258, 0.0), (14.614641, 12.071775, 10.057762),
                  (0.176989, 0.029168))   # 31 steps for 30, as its DDIM


def test_unipc_runs_a1111s_options_without_a_schedule_or_on_automatic():
    # before: diffusers' defaults (bh2, order 2) on the model's own spacing
    from dreamshell.line.samplers import plan
    for schedule in (None, "automatic", "Automatic"):
        got = plan("UniPC", schedule)
        assert got.a1111_unipc and got.sigmas is None
        assert {k: got.options[k] for k in ("solver_type", "solver_order", "lower_order_final")} == {
            "solver_type": "bh1", "solver_order": 3, "lower_order_final": True}
    assert not plan("UniPC", "sgm_uniform").a1111_unipc    # a schedule of its own: its spacing, as before


def test_the_unipc_sampler_walks_a1111s_grid():
    scheduler = demo_scheduler("UniPC", None)
    assert (scheduler.config.solver_type, scheduler.config.solver_order) == ("bh1", 3)
    scheduler.set_timesteps(10)
    timesteps, sigmas = A1111_UNIPC_10
    assert scheduler.timesteps.tolist() == pytest.approx(timesteps[:-1], abs=1e-3)
    assert scheduler.sigmas.tolist() == pytest.approx(sigmas, rel=1e-4)     # ends at t = 1/1000, not sigma 0
    count, first, last, first_sigmas, last_sigmas = A1111_UNIPC_30
    scheduler.set_timesteps(30)
    assert len(scheduler.timesteps) == count and len(scheduler.sigmas) == count + 1
    assert scheduler.timesteps[:3].tolist() == pytest.approx(first, abs=1e-3)
    assert scheduler.timesteps[-1:].tolist() == pytest.approx(last[:1], abs=1e-3)
    assert scheduler.sigmas[:3].tolist() == pytest.approx(first_sigmas, rel=1e-4)
    assert scheduler.sigmas[-2:].tolist() == pytest.approx(last_sigmas, rel=1e-4)


def test_the_step_count_shown_is_the_steps_the_grid_runs(demo_generator):
    # before: UniPC -s 30 runs A1111's 31 steps and the progress said 31/30; -s 10 runs 10, img2img its share
    from dreamshell.line.request import DreamRequest
    from PIL import Image

    from dreamshell.weights.models import demo_spec
    gen, spec = demo_generator, demo_spec()
    for steps, expected in ((30, 31), (10, 10)):
        marks = []
        request = DreamRequest(prompt="a red circle on a blue background", seed=1, steps=steps, width=64, height=64,
                               cfg_scale=5.0, sampler="UniPC", model=spec.name)
        gen.generate(request, on_step=lambda done, total: marks.append((done, total)))
        assert marks == [(i + 1, expected) for i in range(expected)], (steps, marks[-2:])
    marks = []
    request = DreamRequest(prompt="a red circle on a blue background", seed=1, steps=20, width=64, height=64,
                           cfg_scale=5.0, sampler="k_euler", model=spec.name, strength=0.5)
    gen.generate(request, init_image=Image.new("RGB", (64, 64), (200, 30, 30)),
                 on_step=lambda done, total: marks.append((done, total)))
    assert marks[-1] == (10, 10) and len(marks) == 10


# ----- step noise from the image's own stream


def _euler_a_by_hand(gen, request, stream_seed):
    """Euler a as A1111's k-diffusion runs it, with its step noise from the CPU stream of `stream_seed` after
    the seed's first draw (A1111's ImageRNG): the pipeline's UNet and CFG, the scheduler's sigmas."""
    import torch
    pipe = gen._pipes["txt2img"]
    sigmas = pipe.scheduler.sigmas
    timesteps = pipe.scheduler.timesteps
    shape = (4, request.height // pipe.vae_scale_factor, request.width // pipe.vae_scale_factor)
    first = torch.randn(shape, generator=torch.Generator().manual_seed(request.seed))[None]
    stream = torch.Generator().manual_seed(stream_seed)
    if stream_seed == request.seed:
        torch.randn(shape, generator=stream)
    cond = gen.text.conditioning(request)
    embeds = torch.cat([cond["negative_prompt_embeds"], cond["prompt_embeds"]])
    x = first * sigmas[0]
    with torch.inference_mode():
        for i, t in enumerate(timesteps):
            s, s_next = float(sigmas[i]), float(sigmas[i + 1])
            eps_u, eps_c = pipe.unet(torch.cat([x, x]) / (s * s + 1) ** 0.5, t, encoder_hidden_states=embeds).sample.chunk(2)
            denoised = x - s * (eps_u + request.cfg_scale * (eps_c - eps_u))
            up = min(s_next, (s_next ** 2 * (s ** 2 - s_next ** 2) / s ** 2) ** 0.5)
            down = (s_next ** 2 - up ** 2) ** 0.5
            x = x + (x - denoised) / s * (down - s)
            x = x + torch.randn(shape, generator=stream)[None] * up
    return x


@pytest.mark.parametrize("ensd", [0, 31337])
def test_euler_a_takes_its_step_noise_from_the_images_stream(ensd):
    # before: a fresh generator of the seed, whose first step noise was the initial noise again
    from dreamshell.weights.models import demo_spec
    gen = generator_at("float32")
    gen.load(demo_spec()) if gen.spec is None else None
    req = parse_request(f'"a red circle [blurry]" -s 6 -S 11 -W 64 -H 64 -C 5 -A k_euler_a --schedule uniform '
                        f"--model demo --ensd {ensd}")
    gen.prepare(req)
    got = gen._generate_one(req, None, None, None, None, None, 1, output_type="latent")[None]
    want = _euler_a_by_hand(gen, req, 11 + ensd)
    assert float((got.float() - want.float()).abs().max()) < 1e-3


def test_rng_nv_starts_from_cudas_noise_and_gpu_off_cuda_is_one_line():
    import numpy as np

    from dreamshell.engines import noise
    from dreamshell.engines.protocols import GenerationError
    from dreamshell.weights.models import demo_spec
    gen = generator_at("float32")
    gen.load(demo_spec()) if gen.spec is None else None
    req = parse_request('"a red circle" -s 2 -S 42 -W 64 -H 64 -C 5 -A k_euler --model demo --rng nv')
    latents = gen.initial_latents(req)
    assert np.array_equal(latents[0].float().numpy(), noise.randn_like_cuda(42, (4, 16, 16)))
    with pytest.raises(GenerationError) as e:
        gen.generate(req.with_(rng="gpu"))
    assert str(e.value).startswith("--rng gpu: GPU noise is torch.randn on a CUDA device, and this run is on cpu")


# ----- InvokeAI 2.2.5 reads every Dream chunk we write

# InvokeAI 2.2.5 ldm/invoke/args.py `_create_dream_cmd_parser`: its samplers (SAMPLER_CHOICES) and the switches of
# its invoke> line, with the values each takes (the switches dreamshell writes, and a few it never does)
INVOKEAI_SAMPLERS = ["ddim", "k_dpm_2_a", "k_dpm_2", "k_dpmpp_2_a", "k_dpmpp_2", "k_euler_a", "k_euler", "k_heun",
                     "k_lms", "plms"]
INVOKEAI_SWITCHES = [  # spellings, argparse keywords
    (("-s", "--steps"), dict(type=int)), (("-S", "--seed"), dict(type=int)), (("-n", "--iterations"), dict(type=int)),
    (("-W", "--width"), dict(type=int)), (("-H", "--height"), dict(type=int)), (("-C", "--cfg_scale"), dict(type=float)),
    (("-g", "--grid"), dict(action="store_true")), (("-x", "--skip_normalize"), dict(action="store_true")),
    (("-A", "-m", "--sampler"), dict(choices=INVOKEAI_SAMPLERS)), (("-t", "--log_tokenization"), dict(action="store_true")),
    (("-o", "--outdir"), dict()), (("--hires_fix",), dict(action="store_true")), (("--karras_max",), dict(type=int)),
    (("-I", "--init_img"), dict()), (("-T", "-fit", "--fit"), dict(action="store_true")),
    (("-f", "--strength"), dict(type=float)), (("-M", "--init_mask"), dict()), (("-U", "--upscale"), dict(nargs="+", type=float)),
    (("-save_orig", "--save_original"), dict(action="store_true")), (("--seamless",), dict(action="store_true")),
    (("-v", "--variation_amount"), dict(type=float)), (("-V", "--with_variations"), dict()),
    (("--perlin",), dict(type=float)), (("--threshold",), dict(type=float)), (("--embiggen",), dict(nargs="+")),
]


def invokeai_accepts(dream: str) -> argparse.Namespace:
    """Args.parse_cmd of InvokeAI 2.2.5 (a quoted prompt, then its switches), as a table."""
    parser = argparse.ArgumentParser(exit_on_error=False, add_help=False)
    for names, kwargs in INVOKEAI_SWITCHES:
        parser.add_argument(*names, **kwargs)
    tokens = shlex.split(dream)
    assert dream.startswith('"')
    return parser.parse_args(tokens[1:])


EVERY_FEATURE = [
    "", "-A ddim", "-A plms", "-A k_lms", "-A k_euler_a", "-A k_heun", "-A k_dpm_2", "-A k_dpm_2_a", "-A k_dpmpp_2",
    "-A dpmpp_2s", "-A deis", '-A "DPM++ 2M Karras"', '-A "DPM++ 2M SDE"', '-A "DPM++ SDE"', "-A UniPC", "-A LCM",
    "-A k_euler --schedule karras", "-A k_euler --schedule exponential", "-A UniPC --schedule sgm_uniform",
    "-A k_dpmpp_2 --schedule ddim", "--clip_skip 2", "--vae demo-vae.safetensors",
    "--hires_fix --hires_scale 2 --hires_steps 10 --hires_strength 0.7 --hires_upscaler latent",
    "-n 2 -g", "-V 7:0.3", "-v 0.2", "-U 4 0.5 --save_original", "-I in.png -f 0.6 --fit", "-I in.png -M m.png",
    "--seamless", "-x", "--rng nv --ensd 31337", "-o outdir", "-t",
]


@pytest.mark.parametrize("switches", EVERY_FEATURE)
@pytest.mark.parametrize("prompt", ['a red circle [blurry]', 'a <lora:demo_cross:0.8> red:0.7 blue circle:0.3',
                                    "it's a \\\"quoted\\\" circle"])
def test_invokeai_2_2_parses_our_dream_chunk(prompt, switches):
    req = parse_request(f'"{prompt}" -s 20 -S 5 -W 64 -H 64 -C 5 --model demo {switches}')
    if req.iterations > 1:
        req = req.with_(grid=False)
    meta = ImageMeta(req, image_type="grid" if req.iterations > 1 else "txt2img")
    dream = read_chunks_of(meta)["Dream"]
    args = invokeai_accepts(dream)
    assert "<lora" not in shlex.split(dream)[0]
    assert args.grid == (req.iterations > 1)
    if args.sampler and args.sampler.startswith("k_"):
        assert args.karras_max is not None       # InvokeAI 2.2 keeps the last value: every k_ line says it
    data = json.loads(read_chunks_of(meta)["sd-metadata"])
    for image in data.get("images") or [data["image"]]:
        assert all("<lora" not in p["prompt"] for p in image["prompt"])


def read_chunks_of(meta: ImageMeta) -> dict:
    import tempfile
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "x.png"
        path.write_bytes(png_bytes(Image.new("RGB", (8, 8)), meta))
        return read_chunks(path)


# ----- A1111's AND (composable diffusion)


def test_and_parts_are_read_as_a1111_reads_them():
    from dreamshell.line.prompt import PromptError, split_prompt
    parts = split_prompt("a red circle :1.2 AND a blue background :0.8 [blurry]")
    assert parts.combine and parts.positive == (("a red circle", 1.2), ("a blue background", 0.8))
    assert parts.normalized() == parts.positive          # A1111 does not normalise AND weights
    assert split_prompt("red AND blue").positive == (("red", 1.0), ("blue", 1.0))
    assert not split_prompt("a red:0.5 blue:0.5 circle").combine and not split_prompt("sand and android").combine
    with pytest.raises(PromptError, match="an AND part takes one weight"):
        split_prompt("a:0.5 b AND c")


def _by_hand(gen, request, parts, weights):
    """Euler on the scheduler's sigmas with A1111's CFG combine: uncond + sum(w x cfg x (cond_i - uncond))."""
    import torch
    pipe = gen._pipes["txt2img"]
    sigmas, timesteps = pipe.scheduler.sigmas, pipe.scheduler.timesteps
    shape = (4, request.height // pipe.vae_scale_factor, request.width // pipe.vae_scale_factor)
    x = torch.randn(shape, generator=torch.Generator().manual_seed(request.seed))[None] * sigmas[0]
    encode = [pipe.encode_prompt(t, "cpu", 1, False)[0] for t in [*parts, ""]]
    embeds = torch.cat([encode[-1], *encode[:-1]])
    with torch.inference_mode():
        for i, t in enumerate(timesteps):
            s, s_next = float(sigmas[i]), float(sigmas[i + 1])
            out = pipe.unet(torch.cat([x] * len(embeds)) / (s * s + 1) ** 0.5, t, encoder_hidden_states=embeds).sample
            u, conds = out[:1], out[1:]
            eps = u + sum(w * request.cfg_scale * (c[None] - u) for w, c in zip(weights, conds))
            x = x + eps * (s_next - s)
    return x


@pytest.mark.parametrize("cfg", [5.0, 1.0])
def test_and_combines_the_parts_guidance_as_a1111(cfg):
    # before: read as a blend of the parts' embeddings, weights normalised (one UNet pass, another image)
    from dreamshell.weights.models import demo_spec
    gen = generator_at("float32")
    gen.load(demo_spec()) if gen.spec is None else None
    req = parse_request(f'"a red circle :1.2 AND a blue background :0.6" -s 4 -S 5 -W 64 -H 64 -C {cfg:g} -A k_euler '
                        "--schedule uniform --model demo")
    gen.prepare(req)
    got = gen._generate_one(req, None, None, None, None, None, 1, output_type="latent")[None]
    want = _by_hand(gen, req, ["a red circle", "a blue background"], [1.2, 0.6])
    assert float((got.float() - want.float()).abs().max()) < 1e-3
