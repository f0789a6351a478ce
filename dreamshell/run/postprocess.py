"""`!fix PATH -U F [S]`: post-process an existing image into a new file (no torch here).

Writes `NNNNNN.SEED.upscale.png` beside the original (then `-01`, `-02`, ...), never overwriting,
with the original's recipe plus the upscale recorded in all three chunks, and a log line.
"""

from __future__ import annotations

import shlex
from pathlib import Path


from .dispatch import Command, Dispatcher, Outcome, Work
from ..line.parser import ParseError, parse_switches
from ..store.pngmeta import MetadataError, read_recipe
from ..line.request import DreamRequest
from .session import Control, Listener, Session, UserError

FIX_SWITCHES = {"upscale"}


def check_fix(path: Path, values: dict, files: bool = True) -> None:
    """Refuse at once what !fix cannot do (nothing to do, other switches, no such file)."""
    if "upscale" not in values:
        raise UserError("!fix needs something to do: !fix PATH -U 4 (factor, then an optional strength)")
    extra = set(values) - FIX_SWITCHES
    if extra:
        raise UserError(f"!fix takes only -U; {', '.join(sorted(extra))} belong on a prompt line")
    if files and not path.is_file():
        raise UserError(f"!fix {path}: no such file")


def fix_image(session: Session, path: Path, values: dict, echo) -> Path:
    """Upscale the image at path as `values` say; return the new file's path."""
    check_fix(path, values)
    try:
        recipe: DreamRequest | None = read_recipe(path)
    except MetadataError:
        recipe = None
    spec = values["upscale"]
    record = session.upscale_file(path, spec, recipe)
    if recipe is None:
        echo(f"{record.path}: upscaled x{spec.factor:g} (the original has no recipe, so none is written)")
    else:
        echo(f"{record.path}: {record.command}")
    return Path(record.path)


def register_fix(dispatcher: Dispatcher) -> None:
    def handler(args: str) -> Work:
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
        path = Path(tokens[0]).expanduser()
        check_fix(path, values, files=dispatcher.check_files_now())

        def run(control: Control, listener: Listener) -> Outcome:
            fix_image(dispatcher.session, path, values, dispatcher.echo)
            return Outcome()
        return Work(f"!fix {args}", run)

    dispatcher.register(Command("fix", "!fix PATH -U F [S]", "upscale an existing image into NNNNNN.SEED.upscale.png "
                                "(never overwrites)", handler, "path"))
