"""`!control IMAGE PRE [-M MASK] [-W W -H H]`: save the control map a preprocessor makes of an image, so a user
can look at what `--control MODEL/PRE:IMAGE` will guide with (no torch; numpy and Pillow in preprocess.py).

The map lands in the output folder as IMAGE's stem + `.control-PRE.png` (then `-01`, ... never overwriting),
with its thumbnail; `IMAGE` may be `-1` (the last image made). Its size is the image's own (rounded down to a
multiple of 8), or -W/-H as a line would make it.
"""

from __future__ import annotations

import io
import shlex
from pathlib import Path

from ..line.control import PREPROCESSORS, ControlError, check_preprocessor
from ..line.errors import UserError
from ..line.parser import parse_switches
from ..line.request import ImageRecord
from ..store.naming import save_derived
from ..store.output import OutputFolder
from .dispatch import Command, Dispatcher, Outcome, Work
from .image import _load_image, read_image_size
from .plan import LAST_IMAGE, check_image_file
from .types import Control, Listener

SYNTAX = "!control IMAGE PRE [-M MASK] [-W W -H H]"


def parse_control_command(args: str, last_image=None) -> tuple[Path, str, dict]:
    """(image path, preprocessor, switches) of `!control` arguments; UserError in one line."""
    try:
        tokens = shlex.split(args)
    except ValueError as e:
        raise UserError(f"!control: cannot read '{args[:80]}': {e}") from None
    if len(tokens) < 2 or tokens[1].startswith("-"):
        raise UserError(f"!control needs an image and a preprocessor: {SYNTAX} (preprocessors: "
                        f"{', '.join(PREPROCESSORS)})")
    image, pre = tokens[0], tokens[1].lower()
    try:
        check_preprocessor(pre)
    except ControlError as e:
        raise UserError(f"!control: {e}") from None
    values, _ = parse_switches(tokens[2:])
    extra = set(values) - {"init_mask", "width", "height"}
    if extra:
        raise UserError(f"!control takes -M, -W and -H; {', '.join(sorted(extra))} belong on a prompt line")
    if pre == "inpaint" and "init_mask" not in values:
        raise UserError("!control IMAGE inpaint marks a mask: add -M MASK")
    if image == LAST_IMAGE:
        if not last_image or not isinstance(last_image, str):
            raise UserError("!control -1 means the last image made, but none was made yet")
        image = last_image
    return Path(image).expanduser(), pre, values


def save_control_map(outdir: Path, image_path: Path, pre: str, values: dict, log: bool = True):
    """Make and save the map; (its path, the map)."""
    from .preprocess import make_map, viewable
    check_image_file(str(image_path), "!control")
    width, height = read_image_size(str(image_path), "!control")
    size = (values.get("width") or width // 8 * 8, values.get("height") or height // 8 * 8)
    image = _load_image(str(image_path), "!control", "RGB")
    mask = _load_image(values["init_mask"], "-M", "L") if values.get("init_mask") else None
    shown = viewable(make_map(image, pre, size, mask))
    buf = io.BytesIO()
    shown.save(buf, "PNG")
    folder = OutputFolder(outdir, log=log)
    folder.open()
    return save_derived(image_path, f"control-{pre}", buf.getvalue(), folder=folder.folder), shown


def register_control(dispatcher: Dispatcher) -> None:
    def handler(args: str) -> Work:
        session = dispatcher.session
        path, pre, values = parse_control_command(args, session.state.last_image)
        if not (dispatcher.may_be_made(str(path)) and not path.exists()):
            check_image_file(str(path), "!control")

        def run(control: Control, listener: Listener) -> Outcome:
            saved, shown = save_control_map(session.outdir, path, pre, values, session.log_enabled)
            listener.image_saved(ImageRecord(str(saved), -1, f"{pre} map of {path} ({shown.width}x{shown.height})"),
                                 shown)
            return Outcome()
        return Work(f"!control {args}", run)

    dispatcher.register(Command("control", SYNTAX, "save the control map PRE makes of IMAGE (-1: the last image) in "
                                "the output folder, to see what --control MODEL/PRE:IMAGE guides with", handler,
                                "path"))
