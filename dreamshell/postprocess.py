"""`!fix PATH -U F [S]`: post-process an existing image into a new file (no torch here).

Writes `NNNNNN.SEED.upscale.png` beside the original (then `-01`, `-02`, ...), never overwriting,
with the original's recipe plus the upscale recorded in all three chunks, and a log line.
"""

from __future__ import annotations

import shlex
from pathlib import Path

from PIL import Image

from . import __version__
from .dispatch import Command, Dispatcher, Outcome
from .dreamlog import LOG_NAME, append_log_line
from .formatter import format_request
from .naming import save_derived
from .parser import ParseError, parse_switches
from .pngmeta import ImageMeta, MetadataError, png_bytes, read_recipe
from .request import DreamRequest
from .session import Session, UserError

FIX_SWITCHES = {"upscale"}


def fix_image(session: Session, path: Path, values: dict) -> Path:
    """Upscale the image at path as `values` say; return the new file's path."""
    if "upscale" not in values:
        raise UserError("!fix needs something to do: !fix PATH -U 4 (factor, then an optional strength)")
    extra = set(values) - FIX_SWITCHES
    if extra:
        raise UserError(f"!fix takes only -U; {', '.join(sorted(extra))} belong on a prompt line")
    try:
        with Image.open(path) as img:
            image = img.convert("RGB")
    except FileNotFoundError:
        raise UserError(f"!fix {path}: no such file") from None
    except OSError as e:
        raise UserError(f"!fix {path}: not a readable image ({e})") from None
    try:
        recipe: DreamRequest | None = read_recipe(path)
    except MetadataError:
        recipe = None
    spec = values["upscale"]
    from .engines.protocols import GenerationError
    try:
        up = session.upscaler().upscale(image, spec.factor, spec.strength)
    except GenerationError as e:
        raise UserError(f"!fix: {e}") from None
    if recipe is None:
        out = save_derived(path, "upscale", _plain_png(up))
        session.echo(f"{out}: upscaled x{spec.factor:g} (the original has no recipe, so none is written)")
        return out
    request = recipe.with_(upscale=spec)
    post = ({"type": "esrgan", "scale": spec.factor, "strength": spec.strength, "source": str(path)},)
    model_hash = getattr(session.generator, "model_hash", "") if session.generator else ""
    out = save_derived(path, "upscale", png_bytes(up, ImageMeta(request, model_hash, __version__, post)))
    command = format_request(request)
    if session.log_enabled:
        append_log_line(path.parent / LOG_NAME, out, command)
    session.echo(f"{out}: {command}")
    return out


def _plain_png(image: Image.Image) -> bytes:
    import io
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()


def register_fix(dispatcher: Dispatcher) -> None:
    def handler(args: str) -> Outcome:
        try:
            tokens = shlex.split(args)
        except ValueError as e:
            raise UserError(f"!fix: cannot read '{args}': {e}") from None
        if not tokens:
            raise UserError("!fix needs a path and -U: !fix outputs/000001.42.png -U 4")
        try:
            values, _ = parse_switches(tokens[1:])
        except ParseError as e:
            raise UserError(f"!fix: {e}") from None
        fix_image(dispatcher.session, Path(tokens[0]).expanduser(), values)
        return Outcome()

    dispatcher.register(Command("fix", "!fix PATH -U F [S]", "upscale an existing image into NNNNNN.SEED.upscale.png "
                                "(never overwrites)", handler, "path"))
