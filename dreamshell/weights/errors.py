"""The weights stage's error (stdlib only)."""

from __future__ import annotations

from ..line.errors import UserError


class NotAModel(UserError):
    """The file is readable but is not a Stable Diffusion model dreamshell loads; str() says what it is."""
