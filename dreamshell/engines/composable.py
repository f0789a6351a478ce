"""A1111's `AND` (composable diffusion) on a diffusers pipeline (imports torch).

A1111 (`modules/sd_samplers_cfg_denoiser.py` CFGDenoiser.combine_denoised) runs the UNet once per AND part and
once for the negative prompt, and combines: uncond + sum_i(weight_i x cfg x (cond_i - uncond)), the weights as
written. A diffusers pipeline runs [uncond, cond] and combines uncond + cfg x (cond - uncond); here the UNet
call is widened to [uncond, cond_1, ..., cond_K] and its cond answer replaced by uncond + sum_i(weight_i x
(cond_i - uncond)), which the pipeline's own combine turns into A1111's. At a CFG scale of 1 or less the pipeline
runs the cond alone; the answer is then A1111's with cfg 1 (A1111 runs the uncond there too).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

KEY = "and_guidance"   # the conditioning dict's entry the generator takes out before the pipeline call


@dataclass
class AndGuidance:
    """The AND parts' embeddings (each batch 1), their weights, and the negative prompt's; SDXL's pooled ones."""

    parts: list
    weights: list[float]
    negative: object
    pooled_parts: list | None = None
    negative_pooled: object = None


def _expand(value, batch: int, cfg: bool, first, rest: list):
    """[uncond, cond] (or [cond]) of `batch` images each -> [uncond, cond_1 .. cond_K]: `first`/`rest` give the
    replacement per part (None: repeat what the pipeline passed)."""
    import torch
    if value is None or not torch.is_tensor(value) or value.dim() == 0 or value.shape[0] != batch * (2 if cfg else 1):
        return value
    u, c = (value[:batch], value[batch:]) if cfg else (value, value)
    u = first if first is not None else u
    parts = [r if r is not None else c for r in rest]
    return torch.cat([u, *parts])


@contextlib.contextmanager
def and_guidance(unet, guidance: AndGuidance | None, cfg: bool):
    """While inside, the UNet answers as A1111's AND combine (see the module's docstring)."""
    if guidance is None:
        yield
        return
    import torch
    k = len(guidance.parts)
    state: dict = {}

    def pre(module, args, kwargs):
        args = list(args)
        sample = args[0] if args else kwargs["sample"]
        batch = sample.shape[0] // (2 if cfg else 1)
        state["batch"] = batch

        def rep(t):
            return t.to(sample.device).repeat(batch, *[1] * (t.dim() - 1))
        new_sample = _expand(sample, batch, cfg, None, [None] * k)
        if args:
            args[0] = new_sample
        else:
            kwargs["sample"] = new_sample
        if len(args) > 1:
            args[1] = _expand(args[1], batch, cfg, None, [None] * k)
        elif "timestep" in kwargs:
            kwargs["timestep"] = _expand(kwargs["timestep"], batch, cfg, None, [None] * k)
        dtype = kwargs["encoder_hidden_states"].dtype
        kwargs["encoder_hidden_states"] = torch.cat([rep(guidance.negative), *[rep(p) for p in guidance.parts]]).to(dtype)
        added = kwargs.get("added_cond_kwargs")
        if added:
            added = dict(added)
            if guidance.pooled_parts is not None and "text_embeds" in added:
                added["text_embeds"] = torch.cat([rep(guidance.negative_pooled),
                                                  *[rep(p) for p in guidance.pooled_parts]]).to(added["text_embeds"].dtype)
            if "time_ids" in added:
                added["time_ids"] = _expand(added["time_ids"], batch, cfg, None, [None] * k)
            kwargs["added_cond_kwargs"] = added
        return tuple(args), kwargs

    def post(module, args, kwargs, output):
        batch = state["batch"]
        out = output[0] if isinstance(output, tuple) else output.sample
        u, conds = out[:batch], out[batch:].split(batch)
        combined = u + sum(w * (c - u) for w, c in zip(guidance.weights, conds))
        new = torch.cat([u, combined]) if cfg else combined
        if isinstance(output, tuple):
            return (new, *output[1:])
        output.sample = new
        return output

    handles = [unet.register_forward_pre_hook(pre, with_kwargs=True),
               unet.register_forward_hook(post, with_kwargs=True)]
    try:
        yield
    finally:
        for h in handles:
            h.remove()
