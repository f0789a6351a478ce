"""`dreamshell --dry_run --from_file FILE`: check a command file without loading a model (no torch).

Prints, per line, the canonical command it would run or its one-line error; `!fetch PATH` lines
print the command recovered from that PNG. Exit status 1 when any line is bad, 2 when the file
itself cannot be a command file.
"""

from __future__ import annotations

import io
import sys
from pathlib import Path
from typing import TextIO

from ..line.errors import UserError
from ..line.formatter import format_request
from ..line.request import BangCommand, Blank, DreamRequest, HelpRequest
from ..line.safetext import one_line, shorten, visible
from ..store.dreamlog import read_command_stream, read_commands
from ..store.pngmeta import fetch_recipe
from ..weights.models import ModelSpec, Registry, load_registry, with_folders
from .plan import UNKNOWN_SEEDS, LinePlan, Planner, PlanState, plan_file_line

RANDOM = "<random>"


class DryRun:
    """Describes command lines one by one, as they would run, through the planner the run uses
    (the same checks, the same words); seeds left open are shown as <random>."""

    def __init__(self, registry: Registry, defaults: DreamRequest | None = None):
        self.registry = registry
        self.planner = Planner(registry, defaults)
        self.state = PlanState(registry.default, UNKNOWN_SEEDS)

    def describe(self, command: str) -> tuple[bool, str]:
        """(valid, the one line to print): the canonical command, or `error: ...`."""
        try:
            return True, self._describe(command)
        except UserError as e:
            return False, "error: " + one_line(str(e))
        except OSError as e:  # !fetch of a folder, a device, an unreadable file
            return False, "error: " + one_line(f"cannot read it: {e.strerror or e}")

    def _describe(self, command: str) -> str:
        planned = plan_file_line(self.planner, self.state, command)
        if isinstance(planned, Blank):
            return "(blank)"
        if isinstance(planned, HelpRequest):
            return "-h (shows help)"
        if isinstance(planned, ModelSpec):
            return f"!switch {shorten(planned.name, 120)} (the lines after it run on this model)"
        if isinstance(planned, BangCommand):
            if planned.name == "fetch":
                recipe = fetch_recipe(Path(planned.args), self.planner.library)
                notes = "".join(f"\n  note: {one_line(note)}" for note in recipe.notes)
                return visible(f"!fetch {planned.args} -> {format_request(recipe.request)}") + notes
            return shorten(f"!{planned.name} {planned.args}".rstrip(), 200) + " (shell command)"
        assert isinstance(planned, LinePlan)
        line = planned.line
        notes = "".join(f"\n  {one_line(note)}" for note in planned.notes)
        return visible(format_request(line, shown={"seed": RANDOM} if line.seed is None else None)) + notes


def _commands(source: str) -> list[tuple[int, str]]:
    if source != "-":
        return read_commands(Path(source))
    stream = getattr(sys.stdin, "buffer", None) or io.BytesIO(sys.stdin.read().encode("utf-8"))
    return read_command_stream(stream, "stdin")


def dry_run(source: str, config: Path | None, defaults: DreamRequest, out: TextIO, folders=None) -> int:
    """Check a command file line by line; `folders` are the launch's --lora_dir/--embedding_dir/--vae_dir."""
    try:
        registry = with_folders(load_registry(config), **(folders or {}))
        lines = _commands(source)
    except UserError as e:
        print("error: " + one_line(str(e)), file=out)
        return 2
    checker = DryRun(registry, defaults)
    bad = 0
    for number, command in lines:
        valid, text = checker.describe(command)
        bad += not valid
        for part in text.split("\n"):   # a !fetch's notes follow on lines of their own
            print(f"line {number}: {part}", file=out)
    print(f"{bad} bad line(s)" if bad else "all lines are valid", file=out)
    return 1 if bad else 0
