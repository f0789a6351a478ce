"""`dreamshell --dry_run --from_file FILE`: check a command file without loading a model (no torch).

Prints, per line, the canonical command it would run or its one-line error; `!fetch PATH` lines
print the command recovered from that PNG. Exit status 1 when any line is bad, 2 when the file
itself cannot be a command file.
"""

from __future__ import annotations

import io
import sys
from collections import deque
from pathlib import Path
from typing import TextIO

from ..weights.library import ExtraError, Library
from ..line.prompt import PromptError
from ..store.dreamlog import CommandFileError, read_command_stream, read_commands
from ..line.formatter import format_request
from ..line.limits import check_request
from ..weights.models import ModelsFileError, Registry, load_registry
from ..line.parser import ParseError, parse_line
from ..store.pngmeta import MetadataError, fetch_recipe
from ..line.request import BangCommand, Blank, DreamRequest, HelpRequest
from .resolve import ResolveError, apply_defaults, resolve_request
from ..line.safetext import one_line, quoted, shorten, visible
from ..line.switches import MAX_SEED

RANDOM = "<random>"
KEPT_SEEDS = 100_000   # -S -N can look this far back

USER_ERRORS = (ParseError, MetadataError, ModelsFileError, ResolveError, ExtraError, PromptError)


class DryRun:
    """Describes command lines one by one, as the shell would run them, keeping the seeds made so far."""

    def __init__(self, registry: Registry, defaults: DreamRequest | None = None):
        self.registry = registry
        self.defaults = defaults
        self.seeds: deque[int | None] = deque(maxlen=KEPT_SEEDS)  # None: random, known only when run
        self.images = 0

    def describe(self, command: str) -> tuple[bool, str]:
        """(valid, the one line to print): the canonical command, or `error: ...`."""
        try:
            return True, self._describe(command)
        except USER_ERRORS as e:
            return False, "error: " + one_line(str(e))
        except OSError as e:  # !fetch of a folder, a device, an unreadable file
            return False, "error: " + one_line(f"cannot read it: {e.strerror or e}")

    def _describe(self, command: str) -> str:
        item = parse_line(command)
        if isinstance(item, Blank):
            return "(blank)"
        if isinstance(item, HelpRequest):
            return "-h (shows help)"
        if isinstance(item, BangCommand):
            if item.name == "fetch":
                recipe = fetch_recipe(Path(item.args), Library(self.registry.folders))
                notes = "".join(f"\n  note: {one_line(note)}" for note in recipe.notes)
                return visible(f"!fetch {item.args} -> {format_request(recipe.request)}") + notes
            return shorten(f"!{item.name} {item.args}".rstrip(), 200) + " (shell command)"
        req = apply_defaults(item, self.defaults)
        spec = self.registry.get(req.model) if req.model else self.registry.default
        if not spec.weights.exists():
            raise ModelsFileError(f"model {quoted(spec.name)}: its weights {quoted(str(spec.weights), 120)} "
                                  "do not exist; fix the path in the models file")
        return self._resolved(req, spec)

    def _resolved(self, req: DreamRequest, spec) -> str:
        """The canonical command, with <random> where the seed is only known when it runs."""
        seed = req.seed
        if seed is not None and seed < 0:
            if -seed > self.images:
                raise ResolveError(f"-S {seed} refers to an image {-seed} back, but only {self.images} "
                                   "come before it")
            if -seed > len(self.seeds):
                raise ResolveError(f"-S {seed} refers to an image {-seed} back; a dry run looks back at "
                                   f"most {KEPT_SEEDS} images")
            seed = self.seeds[seed]
        resolved = resolve_request(req.with_(seed=0 if seed is None else seed), spec, [])
        check_request(resolved)
        Library(self.registry.folders).check(resolved.prompt, resolved.vae)   # its LoRAs and VAE are there
        for i in range(resolved.iterations):   # -v: every image a variation of the one seed
            step = 0 if resolved.variation_amount else i
            self.seeds.append(None if seed is None else (seed + step) % (MAX_SEED + 1))
        self.images += resolved.iterations
        return visible(format_request(resolved, shown={"seed": RANDOM} if seed is None else None))


def _commands(source: str) -> list[tuple[int, str]]:
    if source != "-":
        return read_commands(Path(source))
    stream = getattr(sys.stdin, "buffer", None) or io.BytesIO(sys.stdin.read().encode("utf-8"))
    return read_command_stream(stream, "stdin")


def dry_run(source: str, config: Path | None, defaults: DreamRequest, out: TextIO) -> int:
    try:
        registry = load_registry(config)
        lines = _commands(source)
    except (ModelsFileError, CommandFileError) as e:
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
