"""A1111's hires fix on the generator: the first pass at W x H, enlarged (latents resized, Lanczos or
Real-ESRGAN), then an img2img pass at the target size with the same seed (imports torch)."""

from __future__ import annotations

from ..line import hires
from ..line.request import DreamRequest
from .protocols import GenerationError


def generate_hires(gen, request: DreamRequest, on_step, should_stop, on_preview, preview_every: int):
    """A1111's hires fix: the first pass at W x H, upscaled (latents resized, Lanczos or Real-ESRGAN),
    then an img2img pass at the target size with the same seed."""
    upscaler = request.hires_upscaler or hires.DEFAULT_UPSCALER
    scale = request.hires_scale or hires.DEFAULT_SCALE
    strength = request.hires_strength or hires.DEFAULT_STRENGTH
    steps2 = request.hires_steps or request.steps
    if upscaler == "latent" and gen.kind.endswith("-inpaint"):
        raise GenerationError("--hires_upscaler latent does not work with an inpainting model (it needs an "
                              "image for its masked-image input); use --hires_upscaler lanczos or esrgan")
    if upscaler == "esrgan" and gen.esrgan is None:
        raise GenerationError("--hires_upscaler esrgan needs the Real-ESRGAN upscaler, which is not set up here; "
                              "use latent or lanczos")
    width, height = hires.target_size(request.width, request.height, scale)
    first = request.with_(hires_fix=False, hires_scale=None, hires_steps=None, hires_strength=None,
                          hires_upscaler=None)
    schedule, entry = hires.second_pass_steps(steps2, strength)
    # its noise is a new stream at the target size, the seed's first draw with the variations slerped in
    # (A1111's sample_hr_pass: a new ImageRNG, rng.next()), then the step noise (step_noise in _generate_one)
    # explicit --timesteps are the first pass's (a few-step ladder from pure noise); the second pass runs the
    # sampler's own spacing at its step count, as A1111's hires pass runs its own schedule (issue 17)
    second = first.with_(width=width, height=height, steps=schedule, strength=entry, timesteps=())
    total = request.steps + steps2
    latent = upscaler == "latent"
    out = gen._generate_one(first, None, None, on_step, should_stop, on_preview, preview_every,
                             output_type="latent" if latent else "pil", steps_all=total)
    if latent:
        factor = gen._pipes["txt2img"].vae_scale_factor
        size = (height // factor, width // factor)
        image = gen.torch.nn.functional.interpolate(out[None].float(), size=size, mode="bilinear",
                                                     antialias=False).to(out.dtype)
    elif upscaler == "lanczos":
        from PIL import Image
        image = out.resize((width, height), Image.LANCZOS)
    else:
        from PIL import Image
        image = gen.esrgan(out, scale)
        if image.size != (width, height):
            image = image.resize((width, height), Image.LANCZOS)
    return gen._generate_one(second, image, None, on_step, should_stop, on_preview, preview_every,
                              steps_before=request.steps, steps_all=total)
