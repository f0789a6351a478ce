"""Fill a request's open values from the model's defaults, the session defaults and earlier seeds.

stdlib only: the dry run and the session use the same rules.
"""

from __future__ import annotations

import random
from dataclasses import fields

from ..line import hires
from ..line.errors import UserError
from ..line.limits import MAX_SEED
from ..line.request import REQUEST_DEFAULTS, DreamRequest
from ..weights.models import ModelSpec


class ResolveError(UserError):
    """A request that refers to something that is not there (an earlier seed, a last image)."""


class _Unknown:
    """In place of a random source: seeds a line leaves open stay unknown (None) until it runs (the dry run)."""

    def __repr__(self) -> str:
        return "UNKNOWN_SEEDS"


UNKNOWN_SEEDS = _Unknown()


def apply_defaults(request: DreamRequest, defaults: DreamRequest | None) -> DreamRequest:
    """Take each switch the line leaves at its default from the session defaults (launch switches)."""
    if defaults is None:
        return request
    changes = {}
    for f in fields(DreamRequest):
        if f.name == "prompt":
            continue
        mine = getattr(request, f.name)
        theirs = getattr(defaults, f.name)
        if mine == REQUEST_DEFAULTS[f.name] and theirs != REQUEST_DEFAULTS[f.name]:
            changes[f.name] = theirs
    return request.with_(**changes) if changes else request


def resolve_seed(seed: int | None, earlier: list, rng=None) -> int | None:
    """A seed to use: the given one, an earlier one for -1/-2/..., or a fresh random one (None when
    `rng` is UNKNOWN_SEEDS: known only when the line runs)."""
    if seed is None:
        if rng is UNKNOWN_SEEDS:
            return None
        return (rng or random.SystemRandom()).randint(0, MAX_SEED)
    if seed >= 0:
        return seed
    if -seed > len(earlier):
        have = f"only {len(earlier)} image(s) made so far" if earlier else "no image made yet"
        raise ResolveError(f"-S {seed} refers to the seed {-seed} image(s) back, but there is {have}")
    return earlier[seed]


def resolve_request(request: DreamRequest, spec: ModelSpec, earlier_seeds: list[int],
                    rng: random.Random | None = None) -> DreamRequest:
    """The request with steps, seed, size, cfg, sampler, model, clip skip, VAE and the hires fix's values
    set (the canonical line's fields)."""
    steps = request.steps or spec.steps
    clip_skip = request.clip_skip or spec.clip_skip
    changes = {}
    if request.hires_fix:
        changes = dict(hires_scale=request.hires_scale or hires.DEFAULT_SCALE,
                       hires_steps=request.hires_steps or steps,
                       hires_strength=request.hires_strength or hires.DEFAULT_STRENGTH,
                       hires_upscaler=request.hires_upscaler or hires.DEFAULT_UPSCALER)
    return request.with_(
        **changes,
        # written when it is not 1, or when the model's own is not 1 (so the line replays on that model)
        clip_skip=clip_skip if (clip_skip != 1 or spec.clip_skip != 1) else None,
        vae=request.vae or spec.vae,
        # the model's own decoder when the line names none; `vae` is written only over a model's other default
        decoder=None if (request.decoder or spec.decoder) == "vae" and not spec.decoder
        else request.decoder or spec.decoder,
        steps=steps,
        seed=resolve_seed(request.seed, earlier_seeds, rng),
        width=request.width or spec.width,
        height=request.height or spec.height,
        cfg_scale=spec.cfg_scale if request.cfg_scale is None else request.cfg_scale,
        sampler=request.sampler or spec.sampler,
        model=request.model or spec.name,
        strength=(0.75 if request.strength is None else request.strength) if request.init_img else request.strength,
    )


def image_requests(resolved: DreamRequest, rng=None) -> list[DreamRequest]:
    """One request per image of `-n N`. Image i gets seed S+i (A1111's rule), so each can be remade
    alone; with `-v A` every image is a variation of the one seed S, each with its own variation seed,
    written as `-S S -V seed:A` (the original shell's VARIATIONS.md). With UNKNOWN_SEEDS the open seeds
    stay None."""
    if rng is UNKNOWN_SEEDS:
        step = 0 if resolved.variation_amount else 1
        return [resolved.with_(seed=None if resolved.seed is None else (resolved.seed + i * step) % (MAX_SEED + 1),
                               iterations=1, grid=False, variation_amount=0.0) for i in range(resolved.iterations)]
    if resolved.variation_amount:
        rng = rng or random.SystemRandom()
        return [resolved.with_(iterations=1, grid=False, variation_amount=0.0,
                               with_variations=resolved.with_variations
                               + ((rng.randint(0, MAX_SEED), resolved.variation_amount),))
                for _ in range(resolved.iterations)]
    return [resolved.with_(seed=(resolved.seed + i) % (MAX_SEED + 1), iterations=1, grid=False)
            for i in range(resolved.iterations)]
