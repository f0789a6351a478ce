"""The dream> prompt loop: one PromptSession, history, completion, a toolbar, Ctrl-C and Ctrl-D."""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from prompt_toolkit import PromptSession
from prompt_toolkit.auto_suggest import AutoSuggestFromHistory
from prompt_toolkit.history import FileHistory, InMemoryHistory

from ..dispatch import Dispatcher, data_dir
from ..session import Session
from .completer import DreamCompleter

PROMPT = "dream> "


def open_history(path: Path | None, warn) -> object:
    """FileHistory at path (or the data folder); an unwritable place is a warning, not a crash."""
    path = path or (Path(os.environ["DREAMSHELL_HISTORY"]) if os.environ.get("DREAMSHELL_HISTORY")
                    else data_dir() / "history")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "a", encoding="utf-8"):
            pass
        return FileHistory(str(path))
    except OSError as e:
        warn(f"warning: history is not saved ({path}: {e.strerror})")
        return InMemoryHistory()


class InterruptibleRun:
    """During a generation, the first Ctrl-C asks it to stop at the next step; a second one forces it."""

    def __init__(self, session: Session):
        self.session = session
        self._old = None

    def __enter__(self):
        self.session.stop.clear()
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.session.stop.is_set():
            raise KeyboardInterrupt
        self.session.stop.set()

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


class DreamShell:
    def __init__(self, session: Session, dispatcher: Dispatcher, history=None, input=None, output=None,
                 echo=print, on_first_prompt=None, first_prompt_delay: float = 0.1):
        self.session = session
        self._on_first_prompt = on_first_prompt
        self._delay = first_prompt_delay
        self.dispatcher = dispatcher
        self.echo = echo
        self.history = history or InMemoryHistory()
        dispatcher.history = self.history_lines
        completer = DreamCompleter(lambda: list(session.registry.models), lambda: dispatcher.commands)
        self.prompt = PromptSession(history=self.history, auto_suggest=AutoSuggestFromHistory(),
                                    completer=completer, complete_while_typing=False,
                                    bottom_toolbar=self.toolbar, input=input, output=output)

    def history_lines(self) -> list[str]:
        return list(self.history.get_strings())  # oldest first

    def toolbar(self) -> str:
        s = self.session
        if s.loading is not None:
            model = f"{s.loading.name} (loading...)"
        elif s.spec is not None:
            model = s.spec.name
        else:
            model = "none (!models, !switch NAME)"
        gen = s.generator
        device = f"{gen.device} {gen.precision}" if gen is not None and hasattr(gen, "device") else "-"
        seed = s.seeds[-1] if s.seeds else "-"
        return f" model: {model} | device: {device} | last seed: {seed} | !help "

    def _first_prompt_shown(self) -> None:
        """Start the deferred work (loading the model) just after the first prompt is drawn."""
        if self._on_first_prompt is not None:
            start, self._on_first_prompt = self._on_first_prompt, None
            timer = threading.Timer(self._delay, start)
            timer.daemon = True
            timer.start()

    def run(self) -> int:
        prefill = ""
        while True:
            try:
                line = self.prompt.prompt(PROMPT, default=prefill, pre_run=self._first_prompt_shown)
            except KeyboardInterrupt:  # Ctrl-C at the prompt clears the line
                prefill = ""
                continue
            except EOFError:            # Ctrl-D leaves
                self.echo("bye")
                return 0
            prefill = ""
            with InterruptibleRun(self.session):
                outcome = self.dispatcher.execute(line)
            if outcome.quit:
                self.echo("bye")
                return 0
            if outcome.prefill:
                prefill = outcome.prefill
