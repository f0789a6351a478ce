"""The hires fix's rules, shared by the parser, the resolver, the generator and the formats (stdlib only).

A first pass at W x H, upscaled by `--hires_scale`, then an img2img pass at the target size with the
same seed (A1111's "Hires. fix": its `Size` is the first pass; `Hires upscale`, `Hires steps`,
`Hires upscaler`, `Denoising strength` describe the second).
"""

from __future__ import annotations

DEFAULT_SCALE = 2.0
DEFAULT_STRENGTH = 0.7          # A1111's default denoising strength for the hires pass
DEFAULT_UPSCALER = "latent"
MAX_SCALE = 8.0

# dreamshell name -> A1111's `Hires upscaler` name, and what it does
UPSCALERS: dict[str, tuple[str, str]] = {
    "latent": ("Latent", "the latents are resized (bilinear) and denoised again"),
    "lanczos": ("Lanczos", "the image is resized with Lanczos and denoised again"),
    "esrgan": ("R-ESRGAN 4x+", "the image is upscaled by the Real-ESRGAN upscaler and denoised again"),
}


def upscaler_names() -> list[str]:
    return list(UPSCALERS)


def find_upscaler(name: str) -> str | None:
    """Our name for an upscaler written ours or A1111's way ('Latent', 'R-ESRGAN 4x+'), else None."""
    key = name.strip().lower()
    if key in UPSCALERS:
        return key
    for ours, (theirs, _) in UPSCALERS.items():
        if key == theirs.lower():
            return ours
    return None


def target_size(width: int, height: int, scale: float) -> tuple[int, int]:
    """The second pass's size: W x H times scale, down to a multiple of 8 (A1111: int(W * scale),
    then its latent is that // 8)."""
    return int(width * scale) // 8 * 8, int(height * scale) // 8 * 8


def second_pass_steps(steps: int, strength: float) -> tuple[int, float]:
    """(schedule steps, entry strength) that make diffusers run exactly `steps` second-pass steps, as A1111 does
    (`sd_samplers_common.setup_img2img_steps` with the hires steps: a schedule of int(N / min(strength, 0.999))
    steps, entered N steps from its end). diffusers runs int(schedule x strength) steps of the schedule, which
    rounds N down to N - 1 for many pairs (and to 0 for --hires_steps 1 --hires_strength 0.55); the entry
    strength (N + 0.5) / schedule rounds to N for every N."""
    schedule = max(1, int(steps / min(strength, 0.999)))
    return schedule, min(1.0, (steps + 0.5) / schedule)
