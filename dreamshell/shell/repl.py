"""The dream> prompt: live while images draw. Lines become numbered jobs run one at a time by the
job queue; everything a job says appears above the prompt (patch_stdout), the toolbar shows the
running job, a thumbnail follows each image and a live preview shows while one denoises."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.filters import Condition
from prompt_toolkit.history import FileHistory, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings
from prompt_toolkit.output import ColorDepth
from prompt_toolkit.patch_stdout import patch_stdout

from ..line.errors import UserError
from ..line.request import ImageRecord
from ..run.dispatch import Command, Dispatcher, Outcome, Work, data_dir
from ..run.jobs import Job, JobQueue
from ..run.report import TextListener, record_line
from ..run.session import Session
from .completer import DreamCompleter
from .thumbnails import PROTOCOLS, block_fragments, detect_protocol, render

PROMPT = "dream> "
CLEAR_WORDS = ("clear", "cls")
PREVIEW_MODES = ("auto",) + PROTOCOLS
THUMBNAIL_ROWS = 12
LIVE_ROWS = 8


class QuietFileHistory(FileHistory):
    """FileHistory that warns once, instead of a traceback, when the file stops being writable."""

    def __init__(self, filename: str, warn):
        super().__init__(filename)
        self._warn = warn
        self._warned = False

    def store_string(self, string: str) -> None:
        try:
            super().store_string(string)
        except OSError as e:
            if not self._warned:
                self._warned = True
                self._warn(f"warning: history is no longer saved ({self.filename}: {e.strerror})")


def open_history(path: Path | None, warn) -> object:
    """FileHistory at path (or the data folder); an unwritable place is a warning, not a crash."""
    path = path or (Path(os.environ["DREAMSHELL_HISTORY"]) if os.environ.get("DREAMSHELL_HISTORY")
                    else data_dir() / "history")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
        return QuietFileHistory(str(path), warn)
    except OSError as e:
        warn(f"warning: history is not saved ({path}: {e.strerror})")
        return InMemoryHistory()


class JobListener(TextListener):
    """A queued job's events: lines above the prompt, progress into the job for the toolbar, a
    thumbnail after each image and the live preview while one denoises."""

    def __init__(self, shell: "DreamShell", job: Job):
        super().__init__(shell.echo, name=f"#{job.number}")
        self.shell = shell
        self.job = job
        self.wants_preview = shell.protocol != "off"

    def image_started(self, index: int, total: int, seed: int, steps: int) -> None:
        job = self.job
        job.image, job.images, job.step, job.steps, job.step_times = index, total, 0, steps, []
        self.shell.live_preview = None
        self._started = time.monotonic()

    def step(self, done: int, total: int) -> None:
        self.job.step, self.job.steps = done, total
        self.job.step_times.append(time.monotonic())
        del self.job.step_times[:-20]

    def preview(self, done: int, total: int, image) -> None:
        if not self.job.control.stop.is_set():   # a stopped image's picture is gone (see _stop_running)
            self.shell.live_preview = image

    def image_saved(self, record: ImageRecord, image) -> None:
        self.shell.live_preview = None
        started = getattr(self, "_started", None)
        if started is not None:   # issue 17: the seconds an image took, in the toolbar until the next one
            self.shell.last_image = (record.path, time.monotonic() - started)
        self.say(record_line(record))
        self.shell.show_thumbnail(image)


class DreamShell:
    def __init__(self, session: Session, dispatcher: Dispatcher, history=None, input=None, output=None,
                 echo=None, on_first_prompt=None, first_prompt_delay: float = 0.1, preview: str = "auto"):
        self.session = session
        self.dispatcher = dispatcher
        self._on_first_prompt = on_first_prompt
        self._delay = first_prompt_delay
        self._patch = echo is None          # a real terminal: print above the prompt
        self.echo = echo or print
        dispatcher.echo = self.echo
        self.history = history or InMemoryHistory()
        dispatcher.history = self.history_lines
        self.jobs = JobQueue(on_error=self._job_crashed)
        dispatcher.may_be_made = lambda path: self.jobs.busy() and session.may_make(path)
        self.live_preview = None
        self.last_image: tuple[str, float] | None = None   # (file, seconds it took) of the last image made
        self.protocol = self._pick_protocol(preview)
        self._leave_asked = False
        self._timer: threading.Timer | None = None
        self._register_queue_commands()
        completer = DreamCompleter(lambda: list(session.registry.models), lambda: dispatcher.commands,
                                   session.library)
        self.prompt = PromptSession(history=self.history, auto_suggest=AutoSuggestFromHistory(),
                                    completer=completer, complete_while_typing=False,
                                    enable_history_search=True,   # Up finds earlier lines starting as typed
                                    bottom_toolbar=self.toolbar, input=input, output=output,
                                    key_bindings=self._key_bindings(), refresh_interval=0.25,
                                    # the live preview's colours are 24-bit whatever TERM says (tmux)
                                    color_depth=ColorDepth.TRUE_COLOR if self.protocol != "off" else None)

    def history_lines(self) -> list[str]:
        return list(self.history.get_strings())  # oldest first

    # ----- what the user sees

    def _pick_protocol(self, mode: str) -> str:
        """The picture protocol for a --preview/!preview mode; auto asks the terminal (never in tests,
        where output is not a terminal, and nothing is shown)."""
        if mode not in PREVIEW_MODES:
            raise UserError(f"unknown preview mode '{mode}'; modes: {', '.join(PREVIEW_MODES)}")
        if mode != "auto":
            return mode
        return detect_protocol(query_sixel=True) if self._patch else "off"

    def toolbar(self):
        """The live preview of the image being drawn (half-blocks), above one line of status."""
        status = self._status()
        preview = self.live_preview
        if preview is None or self.protocol == "off" or self.jobs.running is None:
            return status
        # the toolbar's style is reversed: the picture's own colours must not be
        picture = [(f"noreverse {style}" if style else "", text) for style, text in
                   block_fragments(preview, rows=LIVE_ROWS)]
        return picture + [("", "\n"), ("class:bottom-toolbar.text", status)]

    def _status(self, width: int | None = None) -> str:
        """One line: the model, the device, the running job (image, step, ETA; or paused), what waits, the
        last seed, the seconds the last image took. At a narrow width the least needed parts go first, so `!help` always shows."""
        s = self.session
        loading = s.host.loading
        if loading is not None:
            model = f"{loading.name} (loading...)"
        elif s.spec is not None:
            model = s.spec.name
        else:
            model = f"{s.model.name} (not loaded yet)"
        job = self.jobs.running
        state = ""
        if job is not None:
            state = f"#{job.number}"
            if job.images:
                state += f" image {job.image}/{job.images} step {job.step}/{job.steps}"
                eta = None if self.jobs.paused else job.eta()
                if eta is not None:
                    state += f" ETA {eta:.0f}s"
            if self.jobs.paused:
                state += " paused"
        waiting = len(self.jobs.waiting())
        queue = (f"{waiting} waiting" if waiting else "") + (" (paused: !resume)" if self.jobs.paused else "")
        took = f"last image {self.last_image[1]:.1f}s" if self.last_image else ""
        parts = [(f"model: {model}", 3), (f"device: {s.host.device_label}", 1), (state, 5), (queue.strip(), 4),
                 (f"last seed: {s.seeds[-1] if s.seeds else '-'}", 2), (took, 1.5)]
        parts = [(text, rank) for text, rank in parts if text]
        width = width or self._width()
        while len(parts) > 1 and len(" " + " | ".join(t for t, _ in parts) + " | !help ") > width:
            parts.remove(min(parts, key=lambda p: p[1]))     # the least needed part goes first
        return " " + " | ".join(t for t, _ in parts) + " | !help "

    def _width(self) -> int:
        try:
            return self.prompt.app.output.get_size().columns
        except Exception:   # no terminal (tests, a pipe)
            return 200

    def show_thumbnail(self, image) -> None:
        """A thumbnail of a finished image above the prompt, in the terminal's picture protocol."""
        if self.protocol != "off" and image is not None:
            self.echo(render(image, self.protocol, rows=THUMBNAIL_ROWS).rstrip("\n"))

    def _job_crashed(self, job: Job, error: BaseException) -> None:
        self.dispatcher.error(f"job #{job.number} ended unexpectedly: {type(error).__name__}: {error}")

    # ----- keys

    def _key_bindings(self) -> KeyBindings:
        kb = KeyBindings()

        @kb.add("c-c", filter=Condition(lambda: self.jobs.running is not None))
        def _(event):
            self._stop_running()
        return kb

    def _stop_running(self) -> None:
        """Ctrl-C while a job runs: its image stops within a step; the waiting jobs stay."""
        job = self.jobs.stop_running()
        if job is None:
            return
        # the live picture leaves the toolbar and is printed where it was, as the stopped image's last look:
        # a toolbar that shrinks under a printed line leaves its rows as blank lines (prompt_toolkit draws
        # its bottom toolbar at the bottom of the terminal)
        picture, self.live_preview = self.live_preview, None
        waiting = len(self.jobs.waiting())
        tail = (f"; {waiting} waiting job(s) go on (!queue lists them, !cancel all drops them)"
                if waiting else "")
        self.echo(f"stopping #{job.number} within a step{tail}")
        if picture is not None and self.protocol != "off":
            self.echo(render(picture, self.protocol, rows=LIVE_ROWS).rstrip("\n"))

    # ----- the queue commands

    def _register_queue_commands(self) -> None:
        for cmd in (
            Command("queue", "!queue", "list the waiting jobs", self._queue),
            Command("cancel", "!cancel N|all", "drop waiting job N, or all of them", self._cancel),
            Command("pause", "!pause", "stop after the current image until !resume", self._pause),
            Command("resume", "!resume", "go on after !pause", self._resume),
            Command("next", "!next N", "move waiting job N to the front", self._next),
            Command("preview", "!preview [MODE]", "thumbnails and live previews: " + "|".join(PREVIEW_MODES),
                    self._preview),
        ):
            self.dispatcher.register(cmd)

    def _queue(self, _args: str) -> Outcome:
        job = self.jobs.running
        if job is not None:
            self.echo(f"running #{job.number}: {job.label}")
        waiting = self.jobs.waiting()
        for w in waiting:
            self.echo(f"waiting #{w.number}: {w.label}")
        if job is None and not waiting:
            self.echo("the queue is empty")
        elif self.jobs.paused:
            self.echo("the queue is paused: !resume goes on")
        return Outcome()

    def _job_number(self, args: str, command: str) -> int:
        text = args.strip().lstrip("#")
        if not text.isdigit():
            raise UserError(f"!{command} takes a job number from !queue, e.g. !{command} 3")
        return int(text)

    def _cancel(self, args: str) -> Outcome:
        if args.strip() == "all":
            dropped = self.jobs.cancel_all()
            self.echo(f"cancelled {len(dropped)} waiting job(s)" if dropped else "no job is waiting")
            return Outcome()
        number = self._job_number(args, "cancel")
        try:
            job = self.jobs.cancel(number)
        except KeyError:
            raise UserError(self._not_waiting(number, "cancel")) from None
        self.echo(f"cancelled #{job.number}: {job.label}")
        return Outcome()

    def _not_waiting(self, number: int, command: str) -> str:
        running = self.jobs.running
        if running is not None and running.number == number:
            return f"#{number} is running, not waiting: Ctrl-C stops it"
        return f"no waiting job #{number} (!queue lists them)"

    def _next(self, args: str) -> Outcome:
        number = self._job_number(args, "next")
        try:
            job = self.jobs.move_to_front(number)
        except KeyError:
            raise UserError(self._not_waiting(number, "next")) from None
        self.echo(f"#{job.number} runs next: {job.label}")
        return Outcome()

    def _pause(self, _args: str) -> Outcome:
        self.jobs.pause()
        running = self.jobs.running
        self.echo("paused: " + (f"#{running.number} stops after its current image; " if running else "")
                  + "!resume goes on")
        return Outcome()

    def _preview(self, args: str) -> Outcome:
        if args.strip():
            self.protocol = self._pick_protocol(args.strip())
        self.echo(f"preview: {self.protocol}" + (" (this output is not a terminal)"
                                                 if self.protocol == "off" and not self._patch else ""))
        return Outcome()

    def _resume(self, _args: str) -> Outcome:
        self.jobs.resume()
        self.echo("resumed")
        return Outcome()

    # ----- the loop

    def submit_text(self, text: str) -> Outcome:
        """What the prompt returned: one line, or several pasted at once (each a line of its own, in order)."""
        lines = [line for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
        if len(lines) == 1:
            return self.submit(text)
        lines = [line for line in lines if line.strip()]
        self.echo(f"pasted {len(lines)} lines: each runs as if typed, in order")
        outcome = Outcome()
        for line in lines:
            outcome = self.submit(line)
            if outcome.quit:
                return outcome
        return Outcome()

    def submit(self, line: str) -> Outcome:
        """Answer a line at once, or queue it as a job."""
        if line.strip() in CLEAR_WORDS:   # as in a terminal; `"clear" -S 1` still draws the word
            clear_screen(self.prompt.app.output if self._patch else None)
            return Outcome()
        planned = self.dispatcher.plan(line)
        if not isinstance(planned, Work):
            return planned
        busy = self.jobs.busy()
        job = self.jobs.submit(planned.label, lambda job: self._run_job(job, planned))
        if busy:
            ahead = len(self.jobs.waiting()) - 1 + (self.jobs.running is not None)
            self.echo(f"#{job.number} queued ({ahead} ahead)")
        return Outcome()

    def _run_job(self, job: Job, work: Work) -> None:
        self.dispatcher.run_work(work, job.control, JobListener(self, job))

    def _first_prompt_shown(self) -> None:
        """Start the deferred work (loading the model) just after the first prompt is drawn."""
        if self._on_first_prompt is not None:
            start, self._on_first_prompt = self._on_first_prompt, None
            self._timer = threading.Timer(self._delay, start)
            self._timer.daemon = True
            self._timer.start()

    def _may_leave(self) -> bool:
        """Leave at once when nothing is queued; otherwise say what would be dropped and ask again."""
        if not self.jobs.busy() or self._leave_asked:
            return True
        self._leave_asked = True
        waiting = len(self.jobs.waiting())
        running = self.jobs.running
        what = (f"#{running.number} is running" if running else "") + \
               (" and " if running and waiting else "") + (f"{waiting} job(s) wait" if waiting else "")
        stops = (f"stops #{running.number}'s image (its finished images are kept)" if running else "") + \
                (" and " if running and waiting else "") + ("drops the waiting jobs" if waiting else "")
        self.echo(f"{what}: Ctrl-D again leaves: it {stops} (or !cancel all, then Ctrl-D)")
        return False

    async def _loop(self) -> int:
        prefill = ""
        while True:
            try:
                line = await self.prompt.prompt_async(PROMPT, default=prefill, pre_run=self._first_prompt_shown)
            except KeyboardInterrupt:  # Ctrl-C at the prompt (no job running) clears the line
                prefill = ""
                continue
            except EOFError:            # Ctrl-D leaves
                if self._may_leave():
                    return 0
                continue
            prefill = ""
            self._leave_asked = False
            # planning can take seconds (a !fetch of a big recipe): never on the prompt's thread
            outcome = await asyncio.to_thread(self.submit_text, line)
            if outcome.quit:
                if self._may_leave():
                    return 0
                continue
            if outcome.prefill:
                prefill = outcome.prefill

    def _sigint(self, signum, frame) -> None:
        """Ctrl-C while no prompt is reading keys (a line being planned, between Enter and the next prompt):
        it stops the running image as the Ctrl-C key does, and never raises KeyboardInterrupt, which
        would end the shell."""
        if self.jobs.running is not None:
            self._stop_running()

    def run(self) -> int:
        old = None
        if threading.current_thread() is threading.main_thread():
            old = signal.signal(signal.SIGINT, self._sigint)   # asyncio.run keeps a handler that is not the default
        try:
            if self._patch:
                with patch_stdout(raw=True):
                    code = asyncio.run(self._loop())
            else:
                code = asyncio.run(self._loop())
        finally:
            if old is not None:
                signal.signal(signal.SIGINT, old)
            if self._timer is not None:
                self._timer.cancel()      # leaving at once: the model need not start loading
            self.jobs.close()
            self.jobs.wait_idle(timeout=30)
        self.echo("bye")
        return code


def clear_screen(output) -> None:
    """Clear the terminal (the `clear` line); nothing when there is no terminal."""
    if output is None:
        return
    output.erase_screen()
    output.cursor_goto(0, 0)
    output.flush()
