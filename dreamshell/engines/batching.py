"""Several images of one line in one batch (`--batch_size N`, GPUs): each keeps its own seed's noise and
sampler generator, so image i is the image its request alone makes (imports torch)."""

from __future__ import annotations

from ..line.request import DreamRequest
from . import composable
from ..line.samplers import plan as scheduler_plan
from .decoders import decode_to_pil
from .protocols import Interrupted


def generate_together(gen, group: list[DreamRequest], on_step, should_stop) -> list:
    """The images of `group` in one pipeline call on the generator `gen`."""
    torch, first = gen.torch, group[0]
    pipe = gen._pipe("txt2img")
    pipe.scheduler = gen._scheduler(first.sampler, first.schedule)

    def step_end(_pipe, step, _timestep, kwargs):
        if should_stop is not None and should_stop():
            raise Interrupted()
        if on_step is not None:
            on_step(step + 1, first.steps)
        return kwargs

    cond = dict(gen.text.conditioning(first))
    and_parts = cond.pop(composable.KEY, None)   # A1111's AND: composable.py repeats it over the batch
    cond = {k: (v.repeat(len(group), *[1] * (v.dim() - 1)) if v is not None else None) for k, v in cond.items()}
    noise = gen.latent_noise(group)   # one stream per image (issue 19): image i's noise is its request's alone
    tiny = gen._tiny_decoder(gen._files.decoder)   # issue 17: the line's tiny decoder makes the pixels
    args = dict(cond, num_inference_steps=first.steps, guidance_scale=first.cfg_scale,
                callback_on_step_end=step_end, output_type="latent" if tiny is not None else "pil",
                width=first.width, height=first.height,
                generator=[torch.Generator("cpu").manual_seed(r.seed) for r in group],
                latents=noise.first().to(gen.device, gen.dtype))
    args.update(scheduler_plan(first.sampler, first.schedule, first.timesteps, first.eta).pipeline_args())
    if gen.kind.endswith("-inpaint"):
        gen._whole_image_mask(args, first)
    from . import families
    args.update(families.rescale_args(gen, pipe, first))   # --cfg_rescale
    with gen.noise_steps(pipe, noise), composable.and_guidance(pipe.unet, and_parts, first.cfg_scale > 1):
        images = gen._run(pipe, args, first)
    return decode_to_pil(tiny, images) if tiny is not None else images
