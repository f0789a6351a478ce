"""Run one line of the shell or of a command file: the `!` command registry and the error boundary.

Every user error becomes one line; an unexpected exception becomes one line plus a traceback in
the data folder's error log; the session and its model survive both. No torch here.
"""

from __future__ import annotations

import datetime
import os
import traceback
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from ..line.errors import UserError
from ..line.formatter import format_request
from ..line.parser import parse_line
from ..line.request import BangCommand, Blank, HelpRequest
from ..line.safetext import first_line, one_line, shorten, visible
from ..line.switches import SWITCHES
from ..store.dreamlog import read_commands
from ..store.pngmeta import fetch_recipe
from ..weights.files import describe_kind, kind_of
from ..weights.models import listing
from .report import TextListener, stopped_line
from .session import Session
from .types import Control, Listener


def data_dir() -> Path:
    """Where history and the error log live (platformdirs; DREAMSHELL_DATA_DIR overrides)."""
    env = os.environ.get("DREAMSHELL_DATA_DIR")
    if env:
        return Path(env)
    import platformdirs
    return Path(platformdirs.user_data_dir("dreamshell", appauthor=False))


@dataclass
class Outcome:
    prefill: str | None = None   # text for the next input line (!fetch, !N)
    quit: bool = False
    interrupted: bool = False
    failed: bool = False


@dataclass(frozen=True)
class Command:
    name: str
    syntax: str
    help: str
    handler: Callable[[str], "Outcome | Work | None"]
    complete: str | None = None   # 'path', 'model', None


@dataclass(frozen=True)
class Work:
    """A line that needs the model: run now (a batch) or queued behind the live prompt (the shell)."""

    label: str
    run: Callable[[Control, Listener], Outcome]


class Dispatcher:
    """Per-session registry of `!` commands, the line planner and the one error boundary."""

    def __init__(self, session: Session, echo: Callable[[str], None], error: Callable[[str], None] | None = None,
                 history: Callable[[], list[str]] | None = None,
                 listener: Callable[[], Listener] | None = None):
        self.session = session
        self.echo = echo
        self.error = error or (lambda text: echo(f"error: {one_line(text)}"))
        self.history = history or (lambda: [])
        self.make_listener = listener or (lambda: TextListener(self.echo))
        self.commands: dict[str, Command] = {}
        # a file a line names that is not there yet, but that a queued job may make (the shell sets this)
        self.may_be_made: Callable[[str], bool] = lambda path: False
        self._replay_depth = 0
        for cmd in (
            Command("help", "!help", "this help (also -h on a line)", self._help),
            Command("fetch", "!fetch PATH", "read the recipe from an image (ours, InvokeAI's, A1111's, ComfyUI's) "
                    "onto the next input line", self._fetch, "path"),
            Command("replay", "!replay FILE", "run each line of FILE (a dream_log.txt as it is)", self._replay, "path"),
            Command("history", "!history", "numbered history", self._history),
            Command("search", "!search TEXT", "history lines containing TEXT", self._search),
            Command("N", "!N", "put history line N on the input line", self._nth),
            Command("models", "!models", "list the models (* = loaded)", self._models),
            Command("switch", "!switch NAME", "make NAME the resident model", self._switch, "model"),
        ):
            self.register(cmd)

    def register(self, command: Command) -> None:
        self.commands[command.name] = command

    # ----- the boundary

    def guard(self, line: str, fn: Callable[[], "Outcome | Work"], who: str = "") -> "Outcome | Work":
        """Run fn; a user error is one line, a bug one line plus a traceback in errors.log. `who` names
        the job the line is (`#3`): a queued line's error says which line failed."""
        said = f"{who}: " if who else ""
        try:
            return fn()
        except UserError as e:
            self.error(said + str(e))
            return Outcome(failed=True)
        except KeyboardInterrupt:
            self.echo(f"{said}stopped")
            return Outcome(interrupted=True)
        except MemoryError:
            self.error(f"{said}out of memory: ask for less (smaller -W/-H, fewer -n, a smaller -U)"
                       "; the shell goes on")
            return Outcome(failed=True)
        except OSError as e:   # the machine said no (a name too long, a full disk, no permission)
            what = f"{e.filename}: " if e.filename else ""
            self.error(f"{said}{shorten(str(what), 160)}{e.strerror or first_line(e)}")
            return Outcome(failed=True)
        except Exception as e:  # a bug, not the user's fault: one line here, the details in a file
            where = self._log_exception(line)
            self.error(f"{said}unexpected {type(e).__name__}: {shorten(str(e), 200)} (traceback in {where}); "
                       "the shell goes on")
            return Outcome(failed=True)

    def plan(self, line: str) -> "Outcome | Work":
        """Parse and check a line at once: answer it now, or return the Work it asks of the model."""
        return self.guard(line, lambda: self._plan(line))

    def run_work(self, work: Work, control: Control | None = None, listener: Listener | None = None) -> Outcome:
        control = control or Control()
        listener = listener or self.make_listener()
        try:
            return self.guard(work.label, lambda: work.run(control, listener), listener.name)
        finally:
            listener.finish()

    def execute(self, line: str, control: Control | None = None, listener: Listener | None = None) -> Outcome:
        """Run a line to the end, now (batch files, one-shot lines, !replay, tests)."""
        planned = self.plan(line)
        if isinstance(planned, Work):
            return self.run_work(planned, control, listener)
        return planned

    def _log_exception(self, line: str) -> Path:
        folder = data_dir()
        path = folder / "errors.log"
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with open(path, "a", encoding="utf-8") as f:
                f.write(f"--- {datetime.datetime.now().isoformat(timespec='seconds')} line: {line}\n")
                f.write(traceback.format_exc())
        except OSError:
            return Path("(unwritable error log)")
        return path

    def _plan(self, line: str) -> "Outcome | Work":
        stripped = line.strip()
        if stripped in ("q", "quit", "exit"):
            return Outcome(quit=True)
        item = parse_line(stripped)
        if isinstance(item, Blank):
            return Outcome()
        if isinstance(item, HelpRequest):
            return self._help("")
        if isinstance(item, BangCommand):
            name = "N" if item.name.isdigit() else item.name
            cmd = self.commands.get(name)
            if cmd is None:
                names = ", ".join(f"!{c}" for c in self.commands if c != "N")
                raise UserError(f"unknown command '!{item.name}'; commands: {names}, !N")
            return cmd.handler(item.args if name != "N" else item.name) or Outcome()
        request = self.session.check(item, pending=self.may_be_made)
        return Work(stripped, lambda control, listener: self._dream(request, control, listener))

    def _dream(self, request, control: Control, listener: Listener) -> Outcome:
        result = self.session.run(request, listener, control)
        said = f"{listener.name} " if listener.name else ""
        if result.stopped is not None:
            self.echo(said + stopped_line(result.stopped))
        if result.grid is not None:
            self.echo(f"{said}grid: {result.grid}")
        return Outcome(interrupted=result.interrupted)

    # ----- commands

    def help_text(self) -> str:
        lines = ["Type a prompt with switches, e.g.  a red circle on a blue background -S 42 -n 3 -s 20",
                 "In the prompt: [words] are the negative prompt; a:0.3 b:0.7 blends sub-prompts; (word)1.3 or",
                 "word+ weights a word; <lora:NAME:WEIGHT> applies a LoRA from the LoRA folder (Tab after <lora:",
                 "lists them); a word that is the name of a file in the embeddings folder is that embedding.",
                 "Lines wait in a queue while an image draws: #N names a job (!queue, !cancel N); an image is",
                 "known by its file, outputs/NNNNNN.SEED.png. -I -1 is the last image made (!fix results too).",
                 "", "Switches:"]
        for sw in SWITCHES:
            names = ", ".join(list(sw.short) + [sw.long])
            lines.append(f"  {names + ' ' + sw.metavar:34} {sw.help}")
        lines += ["", "Commands:"]
        for cmd in self.commands.values():
            lines.append(f"  {cmd.syntax:34} {cmd.help}")
        lines.append(f"  {'clear':34} clear the screen")
        lines.append(f"  {'q, quit, exit, Ctrl-D':34} leave (Ctrl-C clears the line, or stops a generation)")
        return "\n".join(lines)

    def _help(self, _args: str) -> Outcome:
        self.echo(self.help_text())
        return Outcome()

    def _fetch(self, args: str) -> Outcome:
        if not args:
            raise UserError("!fetch needs a path: !fetch outputs/000001.42.png")
        recipe = fetch_recipe(Path(_unquote(args)).expanduser(), self.session.library)
        command = format_request(recipe.request)
        ours = recipe.source.startswith("dreamshell") or "(dreamshell" in recipe.source
        label = "recipe" if ours or not recipe.source else f"recipe ({recipe.source})"
        self.echo(visible(f"{label}: {command}"))
        for note in recipe.notes:
            self.echo(f"note: {one_line(note)}")
        return Outcome(prefill=command)

    def _replay(self, args: str) -> Outcome:
        if not args:
            raise UserError("!replay needs a file: !replay outputs/dream_log.txt")
        path = Path(_unquote(args)).expanduser()
        kind = kind_of(path)
        if kind in ("missing", "too long"):
            raise UserError(f"!replay {shorten(args, 200)}: {describe_kind(kind)}")
        if self._replay_depth >= 5:
            raise UserError("!replay is nested 5 deep; a file probably replays itself")
        # read it all first: replaying the log this session appends to must not chase its own tail
        lines = list(read_commands(path))

        def run(control: Control, listener: Listener) -> Outcome:
            self._replay_depth += 1
            try:
                return self.run_lines(lines, label=shorten(str(path), 120), control=control, listener=listener)
            finally:
                self._replay_depth -= 1
        return Work(f"!replay {args}", run)

    def run_lines(self, lines, label: str, control: Control | None = None,
                  listener: Listener | None = None) -> Outcome:
        """Run numbered lines as if typed, one after another; one Ctrl-C ends the whole batch. Inside a
        queued `!replay` the job's listener is used, so its lines show as the job's (toolbar, thumbnails)."""
        control = control or Control()
        bad = ran = 0
        for number, command in lines:
            self.echo(shorten(f"{label}:{number}: {command}"))
            outcome = self.execute(command, control, listener)
            if outcome.interrupted or control.stop.is_set():
                self.echo(f"{label}: batch stopped at line {number}")
                return Outcome(interrupted=True)
            if outcome.quit:
                return outcome
            bad += outcome.failed
            ran += 1
        self.echo(f"{label}: {ran} line(s) run, {bad} with errors")
        return Outcome(failed=bad > 0)

    def _history(self, _args: str) -> Outcome:
        for i, text in enumerate(self.history(), 1):
            self.echo(f"{i:4}  {shorten(text)}")
        return Outcome()

    def _search(self, args: str) -> Outcome:
        if not args:
            raise UserError("!search needs text: !search lighthouse")
        hits = [(i, t) for i, t in enumerate(self.history(), 1) if args.lower() in t.lower()]
        for i, text in hits:
            self.echo(f"{i:4}  {shorten(text)}")
        if not hits:
            self.echo(f"no history line contains {shorten(repr(args), 80)}")
        return Outcome()

    def _nth(self, number: str) -> Outcome:
        items = self.history()
        n = int(number)
        if not 1 <= n <= len(items):
            raise UserError(f"!{number}: history has lines 1 to {len(items)} (!history lists them)")
        return Outcome(prefill=items[n - 1])

    def _models(self, _args: str) -> Outcome:
        current = self.session.spec.name if self.session.spec else None
        loading = self.session.host.loading
        for spec in self.session.registry.models.values():
            mark = "*" if spec.name == current else " "
            state = "loaded" if mark == "*" else "loading" if loading == spec else "not loaded"
            self.echo(f"{mark} {spec.name:20} {state:11} {listing(spec)}")
        return Outcome()

    def _switch(self, args: str) -> Work:
        if not args:
            raise UserError("!switch needs a model name (!models lists them)")
        name = _unquote(args)
        self.session.lookup(name)  # an unknown name is answered at once

        def run(control: Control, listener: Listener) -> Outcome:
            spec = self.session.switch(name, listener)
            self.echo(f"model {spec.name} loaded")
            return Outcome()
        return Work(f"!switch {args}", run)


def _unquote(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'":
        return text[1:-1]
    return text
