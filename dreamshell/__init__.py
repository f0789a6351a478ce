"""dreamshell: an interactive dream> shell for Stable Diffusion."""

__version__ = "0.2.0"
