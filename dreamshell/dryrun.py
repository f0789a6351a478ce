"""`dreamshell --dry_run --from_file FILE`: check a command file without loading a model (no torch).

Prints, per line, the canonical command it would run or its one-line error; `!fetch PATH` lines
print the command recovered from that PNG. Exit status 1 when any line is bad.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TextIO

from .formatter import format_request
from .models import ModelsFileError, load_registry
from .parser import ParseError, parse_line
from .pngmeta import MetadataError, fetch_recipe
from .request import BangCommand, Blank, DreamRequest, HelpRequest
from .resolve import apply_defaults, resolve_request

RANDOM = "<random>"


def _lines(source: str):
    if source == "-":
        yield from enumerate(sys.stdin, 1)
        return
    with open(source, encoding="utf-8", errors="replace") as f:
        yield from enumerate(f, 1)


def dry_run(source: str, config: Path | None, defaults: DreamRequest, out: TextIO) -> int:
    try:
        registry = load_registry(config)
    except ModelsFileError as e:
        print(f"error: {e}", file=out)
        return 2
    if source != "-" and not Path(source).exists():
        print(f"error: {source}: no such file", file=out)
        return 2
    bad = 0
    seeds: list[int | None] = []   # seeds of the images so far (None: random, unknown until run)
    for number, raw in _lines(source):
        try:
            item = parse_line(raw)
            if isinstance(item, Blank):
                continue
            if isinstance(item, HelpRequest):
                print(f"line {number}: -h (shows help)", file=out)
                continue
            if isinstance(item, BangCommand):
                if item.name == "fetch":
                    recipe = fetch_recipe(Path(item.args))
                    print(f"line {number}: !fetch {item.args} -> {format_request(recipe.request)}", file=out)
                    for note in recipe.notes:
                        print(f"line {number}:   note: {note}", file=out)
                else:
                    print(f"line {number}: !{item.name} {item.args}".rstrip() + " (shell command)", file=out)
                continue
            req = apply_defaults(item, defaults)
            spec = registry.get(req.model) if req.model else registry.default
            text = _describe(req, spec, seeds)
            print(f"line {number}: {text}", file=out)
        except (ParseError, MetadataError, ModelsFileError, ValueError) as e:
            bad += 1
            print(f"line {number}: error: {e}", file=out)
    print(f"{bad} bad line(s)" if bad else "all lines are valid", file=out)
    return 1 if bad else 0


def _describe(req: DreamRequest, spec, seeds: list[int | None]) -> str:
    """The canonical command, with <random> where the seed is only known when it runs."""
    seed = req.seed
    if seed is not None and seed < 0:
        if -seed > len(seeds):
            raise ValueError(f"-S {seed} refers to an image {-seed} back, but only {len(seeds)} come before it")
        seed = seeds[seed]
    resolved = resolve_request(req.with_(seed=seed if seed is not None else 0), spec, [])
    start = seed
    for i in range(resolved.iterations):
        seeds.append(None if start is None else start + i)
    text = format_request(resolved)
    if seed is None:
        text = text.replace(" -S 0", f" -S {RANDOM}", 1)
    return text
