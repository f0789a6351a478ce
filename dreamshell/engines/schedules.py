"""A1111's sigma schedules on diffusers' schedulers (issue 19: the same sampling as A1111; imports torch).

A1111 1.10 picks each k-diffusion sampler's sigmas in `KDiffusionSampler.get_sigmas` from its schedule types
(`modules/sd_schedulers.py`) over the model's own sigmas, those of ldm's `CompVisDenoiser`:
sigma(t) = sqrt((1 - alphas_cumprod[t]) / alphas_cumprod[t]), fractional t interpolated in log sigma. diffusers
computes its "linspace" spacing in sigma (not log sigma), takes a Karras or exponential schedule's ends from the
spaced timesteps (with the SD configs' `leading` spacing, not the model's ends), has no DDIM schedule with A1111's
extra step, and no `discard_next_to_last_sigma` (DPM2). So the schedule is made here and handed to the
scheduler: through its `_convert_to_karras` hook where it has one (its set_timesteps then lays the sigmas out as
the sampler needs: Heun's and DPM2's doubled steps, DPM-Solver's), by replacing the sigmas after set_timesteps
where it has not (Euler a), and as timesteps for DDIM, A1111's timesteps sampler.
"""

from __future__ import annotations

import math
import types

import numpy as np

from ..line.samplers import Plan

# the start of a schedule as A1111 scales its first noise: x * sigmas[0] in k-diffusion's (VE) form; a scheduler
# that works in the VP form (x / sqrt(1 + sigma^2)) takes it as sigma / sqrt(1 + sigma^2)
_VP_SCHEDULERS = frozenset({"DPMSolverMultistepScheduler", "DPMSolverSinglestepScheduler", "UniPCMultistepScheduler",
                            "DEISMultistepScheduler"})


def model_sigmas(alphas_cumprod):
    """The model's 1000 sigmas, as ldm's CompVisDenoiser makes them (float32)."""
    import torch
    ac = torch.as_tensor(alphas_cumprod, dtype=torch.float32)
    return ((1 - ac) / ac) ** 0.5


def alphas_cumprod(scheduler):
    """The scheduler's alphas_cumprod as ldm makes them for A1111 (betas and their product in float64, then
    float32; diffusers makes them in float32, a few parts in a million off)."""
    import torch
    config = scheduler.config
    if config.get("trained_betas") is None and config.get("beta_schedule") in ("linear", "scaled_linear"):
        lo, hi, n = config["beta_start"], config["beta_end"], config["num_train_timesteps"]
        if config["beta_schedule"] == "scaled_linear":
            betas = torch.linspace(lo ** 0.5, hi ** 0.5, n, dtype=torch.float64) ** 2
        else:
            betas = torch.linspace(lo, hi, n, dtype=torch.float64)
        return torch.cumprod(1.0 - betas, 0).to(torch.float32)
    return scheduler.alphas_cumprod


def t_to_sigma(t, sigmas):
    """sigma at fractional timesteps t, interpolated in log sigma (k-diffusion's DiscreteSchedule.t_to_sigma)."""
    import torch
    t = torch.as_tensor(t, dtype=torch.float32)
    log_sigmas = sigmas.log()
    low, high, w = t.floor().long(), t.ceil().long(), t.frac()
    return ((1 - w) * log_sigmas[low] + w * log_sigmas[high]).exp()


def sigma_to_t(sigma, sigmas):
    """The fractional timestep of each sigma (k-diffusion's DiscreteSchedule.sigma_to_t)."""
    import torch
    log_sigmas = sigmas.log()
    log_sigma = torch.as_tensor(sigma, dtype=torch.float32).log()
    dists = log_sigma - log_sigmas[:, None]
    low = dists.ge(0).cumsum(dim=0).argmax(dim=0).clamp(max=log_sigmas.shape[0] - 2)
    high = low + 1
    w = ((log_sigmas[low] - log_sigma) / (log_sigmas[low] - log_sigmas[high])).clamp(0, 1)
    return (1 - w) * low + w * high


def a1111_sigmas(schedule: str, steps: int, sigmas, discard_penultimate: bool = False):
    """A1111's sigmas for `steps` steps of a schedule type, without the final 0 (float32 tensor): uniform (and
    normal), sgm_uniform, karras, exponential, polyexponential, simple, ddim, beta (A1111 1.10's defaults:
    rho 7 for Karras, 1 for polyexponential, Beta(0.6, 0.6)). With `discard_penultimate` (DPM2, DPM2 a), one step
    more and the last nonzero sigma dropped, as A1111's `discard_next_to_last_sigma`."""
    import torch
    n = steps + (1 if discard_penultimate else 0)
    lo, hi = float(sigmas[0]), float(sigmas[-1])
    last = len(sigmas) - 1
    if schedule in ("uniform", "normal"):
        out = t_to_sigma(torch.linspace(last, 0, n), sigmas)
    elif schedule == "sgm_uniform":
        start, end = float(sigma_to_t(torch.tensor([hi]), sigmas)[0]), float(sigma_to_t(torch.tensor([lo]), sigmas)[0])
        out = t_to_sigma(torch.linspace(start, end, n + 1)[:-1], sigmas)
    elif schedule == "karras":
        ramp = torch.linspace(0, 1, n)
        out = (hi ** (1 / 7) + ramp * (lo ** (1 / 7) - hi ** (1 / 7))) ** 7
    elif schedule == "exponential":
        out = torch.linspace(math.log(hi), math.log(lo), n).exp()
    elif schedule == "polyexponential":
        out = (torch.linspace(1, 0, n) * (math.log(hi) - math.log(lo)) + math.log(lo)).exp()
    elif schedule == "simple":
        ss = len(sigmas) / n
        out = torch.tensor([float(sigmas[-(1 + int(x * ss))]) for x in range(n)])
    elif schedule == "ddim":
        ss = max(len(sigmas) // n, 1)
        out = torch.flip(sigmas[1::ss].clone(), (0,))
    elif schedule == "beta":
        from scipy import stats
        ppf = stats.beta.ppf(1 - np.linspace(0, 1, n), 0.6, 0.6)
        out = torch.tensor([lo + x * (hi - lo) for x in ppf])
    else:
        raise ValueError(f"no A1111 sigma schedule '{schedule}'")
    out = out.to(torch.float32)
    if discard_penultimate and len(out) > 1:
        out = out[:-1]
    return out


def ddim_timesteps(steps: int, train_steps: int = 1000) -> np.ndarray:
    """A1111's DDIM sampler's timesteps, newest first, without the last one it steps to (t = 1):
    range(0, 1000, 1000 // steps) + 1 (`CompVisSampler.get_timesteps`); it steps each to the one below."""
    timesteps = np.clip(np.arange(0, train_steps, train_steps // steps) + 1, 0, train_steps - 1)
    return timesteps[1:][::-1].copy()


def install(scheduler, plan: Plan) -> None:
    """Make the diffusers scheduler (built from `plan`) run A1111's schedule for it."""
    if plan.sigmas is not None:
        _install_sigmas(scheduler, plan.sigmas, plan.discard_penultimate)
    elif plan.a1111_ddim:
        _install_ddim(scheduler)
    elif plan.a1111_unipc:
        _install_unipc(scheduler)


def _install_sigmas(scheduler, schedule: str, discard: bool) -> None:
    import torch
    sigmas = model_sigmas(alphas_cumprod(scheduler))
    vp = type(scheduler).__name__ in _VP_SCHEDULERS

    def ours(steps: int):
        mine = a1111_sigmas(schedule, steps, sigmas, discard)
        if vp:   # A1111 starts at x * sigmas[0]; in the VP form that is x * sigmas[0] / sqrt(1 + sigmas[0]^2)
            scheduler.init_noise_sigma = float(mine[0]) / math.sqrt(1 + float(mine[0]) ** 2)
        return mine

    original = scheduler.set_timesteps
    if hasattr(scheduler, "_convert_to_karras") and getattr(scheduler.config, "use_karras_sigmas", False):
        # set_timesteps(n) calls _convert_to_karras(in_sigmas[, n]) and lays the result out for its sampler
        scheduler._convert_to_karras = lambda in_sigmas, num_inference_steps=None: ours(
            num_inference_steps or scheduler.num_inference_steps).numpy()
        if type(scheduler).__name__ in _ROUNDED:
            def exact(self, num_inference_steps, device=None, **kwargs):
                original(num_inference_steps, device=device, **kwargs)
                _exact_timesteps(self, sigmas)
            scheduler.set_timesteps = types.MethodType(exact, scheduler)
        return

    def set_timesteps(self, num_inference_steps, device=None, **kwargs):
        original(num_inference_steps, device=device, **kwargs)
        mine = ours(num_inference_steps)
        self.timesteps = sigma_to_t(mine, sigmas).to(device=device or "cpu", dtype=torch.float32)
        self.sigmas = torch.cat([mine, mine.new_zeros(1)])
    scheduler.set_timesteps = types.MethodType(set_timesteps, scheduler)


# schedulers whose set_timesteps rounds the timesteps of a Karras (here: any A1111) schedule to whole numbers:
# the UNet then sees t that are not the sigmas' (on the demo model DPM2 at 10 steps came out at 18 dB, not 89)
_ROUNDED = {"KDPM2DiscreteScheduler": 2, "KDPM2AncestralDiscreteScheduler": 2, "DPMSolverMultistepScheduler": 1,
            "DPMSolverSinglestepScheduler": 1, "UniPCMultistepScheduler": 1, "DEISMultistepScheduler": 1}


def _exact_timesteps(scheduler, sigmas) -> None:
    """The timesteps of each sigma step as A1111 passes them (k-diffusion's sigma_to_t, not rounded): every
    timestep for the multistep solvers, every other one for DPM2 (between them, its midpoints, which diffusers
    does not round)."""
    import torch
    every = _ROUNDED[type(scheduler).__name__]
    timesteps = scheduler.timesteps.to(torch.float32).clone()
    main = scheduler.sigmas[0:len(timesteps):every] if every > 1 else scheduler.sigmas[:len(timesteps)]
    timesteps[::every] = sigma_to_t(main.to(torch.float32), sigmas).to(timesteps.device)
    scheduler.timesteps = timesteps


def _install_ddim(scheduler) -> None:
    """diffusers' DDIM steps each timestep t to t - 1000 // steps, as A1111's does; A1111's list starts one step
    higher for most step counts and ends at t = 1 with no step to t = 0."""
    import torch
    original = scheduler.set_timesteps

    def set_timesteps(self, num_inference_steps, device=None, **kwargs):
        original(num_inference_steps, device=device, **kwargs)
        self.timesteps = torch.from_numpy(ddim_timesteps(num_inference_steps,
                                                         self.config.num_train_timesteps)).to(device or "cpu")
    scheduler.set_timesteps = types.MethodType(set_timesteps, scheduler)


def unipc_grid(steps: int, alphas_cumprod_) -> tuple:
    """A1111's UniPC grid for `steps` (sd_samplers_timesteps_impl.unipc over uni_pc's NoiseScheduleVP('discrete')):
    it runs len(range(0, 1000, 1000 // steps)) steps (one more than asked for 133 of 150 counts, as its DDIM), on
    continuous times uniform from 1 to 1/1000 ("time_uniform"), the UNet at t x 1000 - 1 (fractional: 999 down
    to 0), each time's noise level with log alpha interpolated linearly. Returns (the timesteps the UNet sees,
    newest first, N of them; the N + 1 sigmas in k-diffusion's form, the last at t = 0, not 0)."""
    import torch
    total = len(alphas_cumprod_)
    n = len(range(0, total, max(total // steps, 1)))
    log_alpha = 0.5 * torch.as_tensor(alphas_cumprod_, dtype=torch.float32).log()
    t = torch.linspace(1.0, 1.0 / total, n + 1)
    index = ((t - 1.0 / total) * total).clamp(0, total - 1)     # the UNet's timestep, fractional
    low = index.floor().long().clamp(max=total - 2)
    w = index - low
    la = (1 - w) * log_alpha[low] + w * log_alpha[low + 1]
    sigmas = (1 - torch.exp(2 * la)).sqrt() / torch.exp(la)
    return index[:-1].to(torch.float32), sigmas.to(torch.float32)


def _install_unipc(scheduler) -> None:
    """diffusers' UniPC (bh1, order 3, set by the plan) walks A1111's UniPC grid: its timesteps and sigmas replaced
    after set_timesteps (the last sigma is the model's smallest, not 0: A1111 ends at t = 1/1000)."""
    ac = alphas_cumprod(scheduler)
    if float(ac[-1]) <= 0:   # zero terminal SNR: no finite sigma at t = 1; the scheduler's own grid
        return
    original = scheduler.set_timesteps

    def set_timesteps(self, num_inference_steps, device=None, **kwargs):
        original(num_inference_steps, device=device, **kwargs)
        timesteps, sigmas = unipc_grid(num_inference_steps, ac)
        self.timesteps = timesteps.to(device or "cpu")
        self.sigmas = sigmas
        self.num_inference_steps = len(timesteps)
        self.last_sample = None
    scheduler.set_timesteps = types.MethodType(set_timesteps, scheduler)
