"""Where an image's noise comes from: the `--rng` sources and the eta noise seed delta (`--ensd`), as
A1111 names them in its recipes (stdlib only; engines/noise.py makes the noise).

A1111 (`modules/rng.py`, its "Random number generator source" setting, written as `RNG:`) has three
sources, and writes no `RNG` key for its default, GPU. Its "Eta noise seed delta" (`ENSD:`) moves the
stream an image's later draws come from (the step noise of ancestral samplers) to seed + ENSD.
"""

from __future__ import annotations

DEFAULT_RNG = "cpu"

# dreamshell's name -> (A1111's `RNG` value, what it is)
RNG_SOURCES: dict[str, tuple[str, str]] = {
    "cpu": ("CPU", "torch.randn on the CPU, seeded per image: the same on every device (dreamshell's default)"),
    "gpu": ("GPU", "torch.randn on the CUDA device (A1111's default; CUDA only)"),
    "nv": ("NV", "CUDA's torch.randn computed on any device (Philox 4x32-10 and Box-Muller, as A1111's NV)"),
}

MAX_ENSD = 2**32 - 1   # A1111's setting is any whole number; seed + ENSD seeds a 64-bit generator


def rng_names() -> list[str]:
    return list(RNG_SOURCES)


def find_rng(name: str) -> str | None:
    """Our source for a name written ours or A1111's way (`CPU`, `GPU`, `NV`), else None."""
    key = name.strip().lower()
    return key if key in RNG_SOURCES else None


def a1111_rng(name: str | None) -> str:
    """A1111's `RNG` value for our source (None: the default, cpu)."""
    return RNG_SOURCES[name or DEFAULT_RNG][0]


def resolved_rng(line: str | None, model: str = DEFAULT_RNG) -> str | None:
    """The `rng` of a resolved line: the line's, else its model's; None (not written) when that is cpu and
    the model's own is cpu too, so a line that names no source replays on any model."""
    source = line or model
    return None if source == DEFAULT_RNG and model == DEFAULT_RNG else source
