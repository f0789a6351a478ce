#!/usr/bin/env python
"""Same sampling as A1111: its samplers beside ours on one model (default: the built-in demo model).

A1111 1.10 samples with k-diffusion over its CompVis model: `CompVisDenoiser` (sigmas from the model's
alphas_cumprod, made in float64 as ldm's DDPM makes them), its CFG combine (uncond + scale x (cond -
uncond) on the denoised latents), the sigma schedule its `get_sigmas` picks for "Automatic" (and
`discard_next_to_last_sigma` for DPM2), the initial noise times sigmas[0], the step noise from the image's
stream (`TorchHijack.randn_like` -> `rng.next()`) and, for the SDE samplers, a Brownian tree seeded with the
seed (`create_noise_sampler`, torchsde's normals from `randn_local`). DDIM and UniPC are A1111's own
"timesteps" samplers (`modules/sd_samplers_timesteps_impl.py`, `modules/models/diffusion/uni_pc`): they are
loaded from an A1111 (or Forge) checkout given with --a1111, and skipped without one.

Here the same UNet is wrapped that way (a diffusers UNet behind `apply_model`), with the same prompt
embeddings and the same CPU noise; dreamshell runs the line `!fetch` reads from the A1111 recipe (Sampler,
Schedule type: Automatic, RNG: CPU). The final latents and the decoded images are compared (PSNR; the
latents' peak is the A1111 latents' range).

    pip install --no-deps k-diffusion   # bench only (its dependencies pull torchvision); torchsde, scipy are ours
    python bench/bench_parity.py [--a1111 PATH] [--steps 10 30] [--seeds 1 2] [--only "Euler a"]
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import os
import sys
import types
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

PROMPT, NEGATIVE, CFG = "a red circle on a blue background", "blurry", 5.0
# A1111 1.10's name -> (k-diffusion function or timesteps sampler, its options in sd_samplers_kdiffusion.py)
SAMPLERS = {
    "Euler": ("sample_euler", {}),
    "Euler a": ("sample_euler_ancestral", {}),
    "Heun": ("sample_heun", {}),
    "LMS": ("sample_lms", {}),
    "DPM2": ("sample_dpm_2", {"scheduler": "karras", "discard_next_to_last_sigma": True}),
    "DPM2 a": ("sample_dpm_2_ancestral", {"scheduler": "karras", "discard_next_to_last_sigma": True}),
    "DPM++ 2M": ("sample_dpmpp_2m", {"scheduler": "karras"}),
    "DPM++ 2M Karras": ("sample_dpmpp_2m", {"scheduler": "karras"}),
    "DPM++ SDE": ("sample_dpmpp_sde", {"scheduler": "karras", "brownian_noise": True}),
    "DPM++ 2M SDE": ("sample_dpmpp_2m_sde", {"scheduler": "exponential", "brownian_noise": True}),
    "DDIM": ("ddim", {"timesteps": True}),
    "UniPC": ("unipc", {"timesteps": True}),
}
DEFAULT = ["Euler", "Euler a", "Heun", "LMS", "DPM2", "DPM++ 2M", "DPM++ 2M Karras", "DPM++ SDE", "DDIM", "UniPC"]


def import_k_diffusion():
    """k_diffusion.sampling and .external without the package's __init__ (which imports its training code and
    torchvision): the two modules and utils, with torchvision stubbed (utils imports it for image helpers)."""
    spec = importlib.util.find_spec("k_diffusion")
    if spec is None:
        sys.exit("k-diffusion is not installed: pip install --no-deps k-diffusion (bench only)")
    folder = Path(spec.origin).parent
    package = types.ModuleType("k_diffusion")
    package.__path__ = [str(folder)]
    sys.modules["k_diffusion"] = package
    stubs = {}
    if importlib.util.find_spec("torchvision") is None:    # taken away again below (diffusers looks for it)
        tv = types.ModuleType("torchvision")
        tv.transforms = types.ModuleType("torchvision.transforms")
        tv.transforms.functional = types.ModuleType("torchvision.transforms.functional")
        stubs = {"torchvision": tv, "torchvision.transforms": tv.transforms,
                 "torchvision.transforms.functional": tv.transforms.functional}
        sys.modules.update(stubs)
    if importlib.util.find_spec("torchdiffeq") is None:   # only its log-likelihood uses odeint
        sys.modules["torchdiffeq"] = types.SimpleNamespace(odeint=None)
    modules = {}
    for name in ("utils", "sampling", "external"):
        mod_spec = importlib.util.spec_from_file_location(f"k_diffusion.{name}", folder / f"{name}.py")
        module = importlib.util.module_from_spec(mod_spec)
        sys.modules[f"k_diffusion.{name}"] = module
        setattr(package, name, module)
        mod_spec.loader.exec_module(module)
        modules[name] = module
    for name in stubs:
        del sys.modules[name]
    return modules["sampling"], modules["external"]


def import_a1111_timesteps(root: Path, sampling):
    """A1111's timesteps samplers (DDIM, UniPC) from a checkout, with the few settings they read."""
    modules = types.ModuleType("modules")
    modules.__path__ = [str(root / "modules")]
    shared = types.ModuleType("modules.shared")
    # A1111 1.10's defaults (modules/shared_options.py): UniPC variant bh1, skip type time_uniform, order 3
    shared.opts = types.SimpleNamespace(uni_pc_variant="bh1", uni_pc_skip_type="time_uniform", uni_pc_order=3,
                                        uni_pc_lower_order_final=True)
    shared.state = types.SimpleNamespace(interrupted=False, skipped=False)
    torch_utils = types.ModuleType("modules.torch_utils")
    import torch
    torch_utils.float64 = lambda t: torch.float32 if t.device.type in ("mps", "xpu") else torch.float64
    sys.modules.update({"modules": modules, "modules.shared": shared, "modules.torch_utils": torch_utils})
    modules.shared, modules.torch_utils = shared, torch_utils
    sys.modules["k_diffusion"].sampling = sampling
    for name, path in (("modules.models.diffusion.uni_pc.uni_pc", "modules/models/diffusion/uni_pc/uni_pc.py"),
                       ("modules.sd_samplers_timesteps_impl", "modules/sd_samplers_timesteps_impl.py")):
        for parent in ("modules.models", "modules.models.diffusion", "modules.models.diffusion.uni_pc"):
            if parent not in sys.modules:
                pkg = types.ModuleType(parent)
                pkg.__path__ = [str(root / parent.replace(".", "/"))]
                sys.modules[parent] = pkg
        spec = importlib.util.spec_from_file_location(name, root / path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
        if name.endswith("uni_pc.uni_pc"):
            sys.modules["modules.models.diffusion.uni_pc"].uni_pc = module
    return sys.modules["modules.sd_samplers_timesteps_impl"]


class CompVisModel:
    """The diffusers UNet as ldm's model: `apply_model(x, t, cond)` and `alphas_cumprod` (float64 betas, as
    ldm's DDPM.register_schedule makes them, stored in float32)."""

    def __init__(self, unet, config):
        import torch
        betas = torch.linspace(config.beta_start ** 0.5, config.beta_end ** 0.5, config.num_train_timesteps,
                               dtype=torch.float64) ** 2
        self.alphas_cumprod = torch.cumprod(1.0 - betas, 0).to(torch.float32)
        self.unet = unet

    def apply_model(self, x, t, cond):
        return self.unet(x, t, encoder_hidden_states=cond).sample


class CFGDenoiser:
    """A1111's CFGDenoiser for one prompt: the batch [cond, uncond], then uncond + scale x (cond - uncond)."""

    def __init__(self, inner, cond, uncond, scale):
        self.inner, self.cond, self.uncond, self.scale = inner, cond, uncond, scale

    def __call__(self, x, sigma, **_):
        import torch
        out = self.inner(torch.cat([x, x]), torch.cat([sigma, sigma]), cond=torch.cat([self.cond, self.uncond]))
        c, u = out.chunk(2)
        return u + (c - u) * self.scale


class TimestepsCFG(CFGDenoiser):
    """A1111's CFGDenoiserTimesteps: eps out, the model behind `.inner_model.inner_model.alphas_cumprod`."""

    def __init__(self, model, cond, uncond, scale):
        super().__init__(lambda x, t, cond: model.apply_model(x, t, cond), cond, uncond, scale)
        self.inner_model = types.SimpleNamespace(inner_model=model)


class NoiseStream:
    """A1111's ImageRNG with its CPU source for one image: first() the seed's noise, next() the following draws."""

    def __init__(self, seed, shape):
        import torch
        self.generator, self.shape = torch.Generator("cpu").manual_seed(seed), shape

    def next(self):
        import torch
        return torch.randn(self.shape, generator=self.generator)[None]


def a1111_sigmas(sampling, denoiser, name: str, options: dict, steps: int):
    """KDiffusionSampler.get_sigmas for the sampler's Automatic schedule."""
    import torch
    discard = options.get("discard_next_to_last_sigma", False)
    n = steps + (1 if discard else 0)
    lo, hi = denoiser.sigmas[0].item(), denoiser.sigmas[-1].item()
    schedule = options.get("scheduler")
    if schedule == "karras":
        sigmas = sampling.get_sigmas_karras(n=n, sigma_min=lo, sigma_max=hi)
    elif schedule == "exponential":
        sigmas = sampling.get_sigmas_exponential(n=n, sigma_min=lo, sigma_max=hi)
    else:
        sigmas = denoiser.get_sigmas(n)
    if discard:
        sigmas = torch.cat([sigmas[:-2], sigmas[-1:]])
    return sigmas


def run_a1111(kd, model, timesteps_impl, name, steps, seed, cond, uncond, shape):
    """The final latents A1111 1.10 makes for the sampler (RNG: CPU)."""
    import torch
    sampling, external = kd
    func, options = SAMPLERS[name]
    stream = NoiseStream(seed, shape)
    x = stream.next()
    hijack = types.SimpleNamespace(**{k: getattr(torch, k) for k in dir(torch) if not k.startswith("__")})
    hijack.randn_like = lambda like: stream.next().to(like)
    sampling.torch = hijack        # A1111's TorchHijack: k-diffusion's torch.randn_like is the image's stream
    try:
        if options.get("timesteps"):
            if timesteps_impl is None:
                return None
            timesteps = torch.clip(torch.asarray(list(range(0, 1000, 1000 // steps))) + 1, 0, 999)
            cfg = TimestepsCFG(model, cond, uncond, CFG)
            return getattr(timesteps_impl, func)(cfg, x, timesteps, extra_args={}, disable=True, callback=lambda d: None)
        denoiser = external.CompVisDenoiser(model, quantize=False)
        sigmas = a1111_sigmas(sampling, denoiser, name, options, steps)
        extra = {}
        if options.get("brownian_noise"):
            import torchsde._brownian.brownian_interval as interval
            interval._randn = lambda size, dtype, device, s: torch.randn(
                size, generator=torch.Generator("cpu").manual_seed(int(s))).to(device=device, dtype=dtype)
            extra["noise_sampler"] = sampling.BrownianTreeNoiseSampler(
                x, sigmas[sigmas > 0].min(), sigmas.max(), seed=[seed])
        cfg = CFGDenoiser(denoiser, cond, uncond, CFG)
        return getattr(sampling, func)(cfg, x * sigmas[0], sigmas, extra_args={}, disable=True, **extra)
    finally:
        sampling.torch = torch


def psnr(a, b, peak: float) -> float:
    mse = float(((a.double() - b.double()) ** 2).mean())
    return math.inf if mse == 0 else 10 * math.log10(peak * peak / mse)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--a1111", type=Path, default=None, help="an A1111 or Forge checkout (for DDIM and UniPC)")
    ap.add_argument("--steps", type=int, nargs="+", default=[10, 30])
    ap.add_argument("--seeds", type=int, nargs="+", default=[1])
    ap.add_argument("--only", nargs="+", default=None, help=f"samplers (default: {', '.join(DEFAULT)})")
    args = ap.parse_args()
    import torch

    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.store.formats.a1111 import read_a1111
    from dreamshell.weights.models import demo_spec
    kd = import_k_diffusion()
    impl = import_a1111_timesteps(args.a1111, kd[0]) if args.a1111 else None
    gen = DiffusersGenerator(device="cpu", precision="float32")
    spec = demo_spec()
    gen.load(spec)
    pipe = gen._pipes["txt2img"]
    model = CompVisModel(pipe.unet, pipe.scheduler.config)
    vae = pipe.vae

    def decode(latents):
        with torch.no_grad():
            image = vae.decode(latents.to(vae.dtype) / vae.config.scaling_factor).sample
        return ((image / 2 + 0.5).clamp(0, 1) * 255).round()

    print(f"{'A1111 sampler':16} {'steps':>5} {'seed':>5}  {'dreamshell line (from the recipe)':52} "
          f"{'latents dB':>10} {'image dB':>9}")
    for name in args.only or DEFAULT:
        for steps in args.steps:
            for seed in args.seeds:
                text = (f"{PROMPT}\nNegative prompt: {NEGATIVE}\nSteps: {steps}, Sampler: {name}, Schedule type: "
                        f"Automatic, CFG scale: {CFG:g}, Seed: {seed}, Size: {spec.width}x{spec.height}, RNG: CPU, "
                        "Version: v1.10.1")
                request = read_a1111(text).request.with_(model=spec.name)
                gen.prepare(request)
                with torch.inference_mode():
                    ours = gen._generate_one(request, None, None, None, None, None, 1, output_type="latent")[None]
                    cond = gen.text.conditioning(request)
                    shape = tuple(ours.shape[1:])
                    theirs = run_a1111(kd, model, impl, name, steps, seed, cond["prompt_embeds"],
                                       cond["negative_prompt_embeds"], shape)
                line = " ".join(part for part in (f"-A {request.sampler!r}", request.schedule and
                                                  f"--schedule {request.schedule}") if part)
                if theirs is None:
                    print(f"{name:16} {steps:5} {seed:5}  {line:52} {'(needs --a1111)':>10}")
                    continue
                peak = float(theirs.max() - theirs.min())
                print(f"{name:16} {steps:5} {seed:5}  {line:52} {psnr(ours, theirs, peak):10.1f} "
                      f"{psnr(decode(ours), decode(theirs), 255.0):9.1f}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
