"""Where the noise comes from: the initial latents and the per-step noise of ancestral and SDE samplers,
drawn as A1111 draws them for its three `RNG` settings (REFERENCE.md section 12).

- cpu: `torch.randn` on a CPU `torch.Generator` seeded with the image's seed (dreamshell's noise, and
  A1111's `RNG: CPU`); the same on every device.
- gpu: `torch.randn` on the CUDA device with a CUDA generator (A1111's default, `RNG: GPU`); CUDA only.
- nv: Philox 4x32-10 counters and the Box-Muller transform, the way CUDA's `torch.randn` makes them,
  computed here with numpy on any device (A1111's `RNG: NV`, stable-diffusion.cpp's `--rng cuda`).

`LatentNoise` is one batch's noise, one stream per image as A1111's `ImageRNG` (`modules/rng.py`): the
first draw is the seed's noise (variation seeds slerped in), each later draw is the next tensor of the
image's stream, or, with an eta noise seed delta (ENSD), of a new stream seeded with seed + ENSD.
`step_noise` makes a diffusers scheduler take its per-step noise from it, as A1111's `TorchHijack`
does for k-diffusion. The Philox part needs numpy only; torch is imported where tensors are made.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass

import numpy as np

from ..line.rng import rng_names

RNG_SOURCES = tuple(rng_names())   # A1111's `RNG: CPU | GPU | NV` (line/rng.py; store.formats.a1111 writes and reads them)

# Philox 4x32-10 (Salmon et al., "Parallel random numbers: as easy as 1, 2, 3", SC 2011), as curand has it
_MUL_A, _MUL_B = 0xD2511F53, 0xCD9E8D57        # round multipliers
_BUMP_A, _BUMP_B = 0x9E3779B9, 0xBB67AE85      # key schedule: added to the two key words each round
_ROUNDS = 10
_MASK32 = 0xFFFFFFFF
# curand's float constants, rounded to float32 as A1111's module rounds them: 2^-32, and 2^-32 * 2pi
_INV_2POW32 = float(np.float32(2.3283064e-10))
_INV_2POW32_2PI = float(np.float32(2.3283064e-10 * 6.2831855))


class NoiseError(ValueError):
    """A noise source that cannot run here; str() is the one line for the user."""


def philox4x32(counter: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], key: tuple[int, int],
               rounds: int = _ROUNDS) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Philox 4x32 over arrays of counters (four uint32 words each) under one 64-bit key (two words)."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint32) for c in counter)
    k0, k1 = key[0] & _MASK32, key[1] & _MASK32
    for r in range(rounds):
        if r:
            k0, k1 = (k0 + _BUMP_A) & _MASK32, (k1 + _BUMP_B) & _MASK32
        pa = c0.astype(np.uint64) * np.uint64(_MUL_A)
        pb = c2.astype(np.uint64) * np.uint64(_MUL_B)
        hi_a, lo_a = (pa >> np.uint64(32)).astype(np.uint32), pa.astype(np.uint32)
        hi_b, lo_b = (pb >> np.uint64(32)).astype(np.uint32), pb.astype(np.uint32)
        c0, c1, c2, c3 = hi_b ^ c1 ^ np.uint32(k0), lo_b, hi_a ^ c3 ^ np.uint32(k1), lo_a
    return c0, c1, c2, c3


def box_muller_first(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """The first normal of the Box-Muller pair from two uint32 words, each taken as the middle of its
    2^-32 step (never 0); worked in float64 from curand's float32 constants, returned as float32."""
    u = x.astype(np.float64) * _INV_2POW32 + _INV_2POW32 / 2
    v = y.astype(np.float64) * _INV_2POW32_2PI + _INV_2POW32_2PI / 2
    return (np.sqrt(-2.0 * np.log(u)) * np.sin(v)).astype(np.float32)


def randn_like_cuda(seed: int, shape, offset: int = 0) -> np.ndarray:
    """Normal float32 noise of `shape` as CUDA's torch.randn makes it for `seed` (A1111's NV noise):
    value i is Philox of counter (offset, 0, i, 0) under key (seed's low word, seed's high word)."""
    n = int(np.prod(shape, dtype=np.int64))
    if n > 1 << 32:
        raise NoiseError(f"nv noise: {n} values in one draw is more than Philox's 2^32 counters")
    seed = int(seed) & 0xFFFFFFFFFFFFFFFF
    index = np.arange(n, dtype=np.uint64).astype(np.uint32)
    zeros = np.zeros(n, dtype=np.uint32)
    words = philox4x32((np.full(n, offset & _MASK32, dtype=np.uint32), zeros, index, zeros),
                       (seed & _MASK32, seed >> 32))
    return box_muller_first(words[0], words[1]).reshape(tuple(shape))


class PhiloxStream:
    """One seed's NV stream: each draw takes the next offset (A1111's rng_philox.Generator)."""

    def __init__(self, seed: int):
        self.seed, self.offset = int(seed), 0

    def randn(self, shape) -> np.ndarray:
        out = randn_like_cuda(self.seed, shape, self.offset)
        self.offset += 1
        return out


# ----- torch side


def check_source(rng: str, device: str) -> None:
    """Refuse a source that cannot run on `device`, in one line."""
    if rng not in RNG_SOURCES:
        raise NoiseError(f"--rng {rng}: unknown noise source; use one of {', '.join(RNG_SOURCES)}")
    if rng == "gpu" and not str(device).startswith("cuda"):
        raise NoiseError(f"--rng gpu: GPU noise is torch.randn on a CUDA device, and this run is on {device}; "
                         "use --rng nv (the same noise as CUDA's, made on any device) or --rng cpu")


class _Stream:
    """One seed's stream for a torch source: each draw continues the generator."""

    def __init__(self, rng: str, seed: int, device: str):
        import torch
        self.rng = rng
        if rng == "nv":
            self.philox = PhiloxStream(seed)
        else:
            self.device = str(device) if rng == "gpu" else "cpu"
            self.generator = torch.Generator(self.device).manual_seed(int(seed))

    def randn(self, shape):
        import torch
        if self.rng == "nv":
            return torch.from_numpy(self.philox.randn(shape))
        return torch.randn(shape, generator=self.generator, device=self.device, dtype=torch.float32)


def randn(rng: str, seed: int, shape, device: str = "cpu"):
    """The first float32 tensor of `seed`'s stream (A1111's randn_local); on the CPU for cpu and nv."""
    check_source(rng, device)
    return _Stream(rng, seed, device).randn(shape)


def slerp(t: float, a, b):
    """Spherical interpolation over the whole tensor (the original shell's and InvokeAI's variations;
    the same float32 arithmetic as dreamshell has always used)."""
    import torch
    af, bf = a.flatten(), b.flatten()
    dot = torch.clamp((af / af.norm()) @ (bf / bf.norm()), -1.0, 1.0)
    if abs(float(dot)) > 0.9995:
        return (1 - t) * a + t * b
    theta = torch.acos(dot)
    return (torch.sin((1 - t) * theta) * a + torch.sin(t * theta) * b) / torch.sin(theta)


@dataclass(frozen=True)
class ImageSeeds:
    """What one image's noise is made of: its seed and `-V seed:weight` variations, slerped in turn."""

    seed: int
    variations: tuple[tuple[int, float], ...] = ()


class LatentNoise:
    """A batch's noise, one stream per image (A1111's ImageRNG): `first()` the initial latents,
    `next()` each later draw (the per-step noise of ancestral samplers), shape (batch, C, H, W),
    float32, on the source's device (the CPU for cpu and nv, the CUDA device for gpu). With `shape` None the
    first draw step_noise gives a pipeline sets it (an img2img pipeline's latents are its init image's size)."""

    def __init__(self, rng: str, images: list[ImageSeeds], shape: tuple[int, int, int] | None, *,
                 device: str = "cpu", ensd: int = 0):
        check_source(rng, device)
        self.rng, self.images = rng, list(images)
        self.shape = tuple(int(s) for s in shape) if shape is not None else None
        self.device, self.ensd = device, int(ensd)
        self._streams = [_Stream(rng, im.seed, device) for im in self.images]
        self._first_done = False

    def first(self):
        """Each image's seed noise, slerped toward its variation seeds' first draws in turn."""
        import torch
        if self._first_done:
            raise RuntimeError("LatentNoise.first() is drawn once")
        xs = []
        for image, stream in zip(self.images, self._streams):
            x = stream.randn(self.shape)
            for seed, weight in image.variations:
                x = slerp(weight, x, randn(self.rng, seed, self.shape, self.device))
            xs.append(x)
        if self.ensd:
            self._streams = [_Stream(self.rng, im.seed + self.ensd, self.device) for im in self.images]
        self._first_done = True
        return torch.stack(xs)

    def next(self):
        """The next draw of every image's stream (the first call gives first())."""
        import torch
        if not self._first_done:
            return self.first()
        return torch.stack([s.randn(self.shape) for s in self._streams])

    def brownian_randn(self, size, dtype, device, seed: int):
        """The randn the Brownian tree of the SDE samplers draws with, from this source (A1111 replaces
        torchsde's `_randn` with its `randn_local`)."""
        return randn(self.rng, seed, size, self.device).to(device=device, dtype=dtype)


def _scheduler_module(obj):
    """The module a scheduler's or pipeline's class is defined in (where it looks up `randn_tensor`)."""
    return sys.modules[type(obj).__module__]


def uses_brownian_noise(scheduler) -> bool:
    """Whether A1111 draws this sampler's step noise from a Brownian tree (DPM++ SDE, DPM++ 2M/3M SDE:
    its "brownian_noise" option) rather than one fresh tensor a step."""
    name = type(scheduler).__name__
    algorithm = getattr(getattr(scheduler, "config", None), "algorithm_type", "") or ""
    return name == "DPMSolverSDEScheduler" or (name == "DPMSolverMultistepScheduler" and algorithm.startswith("sde-"))


class _BrownianSteps:
    """Brownian-tree noise for diffusers' DPMSolverMultistepScheduler in its SDE modes, which otherwise
    draws a fresh tensor each step: the tree spans the schedule's sigmas and is seeded with the images'
    seeds; step i gets the normalised increment between sigma i and i+1 (k-diffusion's
    `sample_dpmpp_2m_sde` with A1111's `create_noise_sampler`)."""

    def __init__(self, scheduler, noise: LatentNoise):
        self.scheduler, self.noise, self.tree = scheduler, noise, None

    def __call__(self, shape, generator=None, device=None, dtype=None, layout=None, **_):
        import torch
        from diffusers.schedulers.scheduling_dpmsolver_sde import (
            BrownianTreeNoiseSampler,
        )
        sigmas = self.scheduler.sigmas
        i = self.scheduler.step_index
        s, t = sigmas[i], sigmas[i + 1]
        if float(t) <= 0:   # the last step adds no noise (A1111 draws none)
            return torch.zeros(shape, device=device, dtype=dtype)
        if self.tree is None:
            seeds = [im.seed for im in self.noise.images]
            like = torch.zeros(shape, dtype=torch.float32)
            self.tree = BrownianTreeNoiseSampler(like, float(sigmas[sigmas > 0].min()), float(sigmas.max()),
                                                 seeds if len(seeds) > 1 else seeds[0])
        return self.tree(s, t).reshape(shape).to(device=device, dtype=dtype)


@contextlib.contextmanager
def step_noise(scheduler, noise: LatentNoise, pipe=None):
    """While inside, a diffusers scheduler's per-step noise comes from `noise` as A1111 draws it:

    - ancestral samplers (Euler a, DPM2 a, LCM, DDIM with eta, ...): `noise.next()` each step, in place
      of the tensor diffusers draws from the pipeline's generator (A1111's TorchHijack.randn_like);
    - SDE samplers (DPM++ SDE, DPM++ 2M/3M SDE): a Brownian tree seeded with each image's seed (not
      seed + ENSD), whose normals come from `noise`'s source (A1111's create_noise_sampler and its
      replacement of torchsde's `_randn` by randn_local).

    With `pipe`, the noise an img2img or inpainting pipeline draws itself to noise the init image (its
    prepare_latents) is `noise.next()` too: the first draw, as A1111's img2img and hires pass take it.

    diffusers' schedulers and pipelines call `randn_tensor(shape, generator=..., device=..., dtype=...)` from
    their own module; that name is swapped for the duration, so one generation at a time (the model host's
    rule). The VAE's own sampling of an encoded image still draws from the pipeline's generator."""
    module = _scheduler_module(scheduler)
    saved: list[tuple[object, str, object]] = []

    def draw(shape, generator=None, device=None, dtype=None, layout=None, **_):
        if noise.shape is None:
            noise.shape = tuple(int(s) for s in shape[1:])
        x = noise.next()
        if tuple(x.shape) != tuple(shape):
            x = x.reshape(shape)
        return x.to(device=device or x.device, dtype=dtype or x.dtype)

    def swap(owner, name, value):
        saved.append((owner, name, getattr(owner, name)))
        setattr(owner, name, value)

    brownian = uses_brownian_noise(scheduler)
    if brownian:
        try:
            import torchsde._brownian.brownian_interval as interval
        except ImportError:
            raise NoiseError(f"sampler {type(scheduler).__name__} draws Brownian-tree noise, which needs the "
                             "'torchsde' package: pip install torchsde") from None
        swap(interval, "_randn", lambda size, dtype, device, seed: noise.brownian_randn(size, dtype, device, seed))
    try:
        if pipe is not None:
            pipe_module = _scheduler_module(pipe)
            if hasattr(pipe_module, "randn_tensor"):
                swap(pipe_module, "randn_tensor", draw)
        if type(scheduler).__name__ == "DPMSolverSDEScheduler":
            seeds = [im.seed for im in noise.images]
            swap(scheduler, "noise_sampler_seed", seeds if len(seeds) > 1 else seeds[0])
        elif brownian:
            swap(module, "randn_tensor", _BrownianSteps(scheduler, noise))
        elif hasattr(module, "randn_tensor"):
            swap(module, "randn_tensor", draw)
        yield noise
    finally:
        for owner, name, value in reversed(saved):
            setattr(owner, name, value)
