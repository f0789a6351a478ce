"""Compose the parts for a real run: registry, engines (lazily), session, dispatcher, shell or batch."""

from __future__ import annotations

import sys
from pathlib import Path

from .dispatch import Dispatcher
from .dreamlog import read_commands
from .models import ModelsFileError, load_registry
from .request import DreamRequest
from .session import Session


def _generator_factory(device: str, precision: str):
    def make():
        from .engines.generator import DiffusersGenerator
        return DiffusersGenerator(device=device, precision=precision)
    return make


def _upscaler_factory(registry, device: str):
    def make():
        from .engines.upscaler import make_upscaler
        return make_upscaler(registry, device)
    return make


def build_session(args, registry, defaults: DreamRequest, echo, progress) -> Session:
    return Session(registry, _generator_factory(args.device, args.precision), args.outdir,
                   upscaler_factory=_upscaler_factory(registry, args.device), defaults=defaults,
                   log=not args.no_log, echo=echo, progress=progress)


def run_app(args, config: Path | None, defaults: DreamRequest) -> int:
    from rich.console import Console

    console = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)

    def echo(text: str) -> None:
        console.out(text)

    def error(text: str) -> None:
        err.print(f"[red]error:[/red] {text}", markup=True, highlight=False) if err.is_terminal \
            else err.out(f"error: {text}")

    try:
        registry = load_registry(config)
        spec = registry.get(args.model) if args.model else registry.default
    except ModelsFileError as e:
        error(str(e))
        return 2
    if console.is_terminal:
        from .ui import RichProgress
        progress = RichProgress(console)
    else:
        from .session import NullProgress
        progress = NullProgress()
    session = build_session(args, registry, defaults, echo, progress)
    session.on_wait = lambda name: echo(f"loading model {name}... (the line runs when it is ready)")
    dispatcher = Dispatcher(session, echo, error)
    _register_fix(dispatcher)

    from .shell.repl import InterruptibleRun
    if args.line is not None or args.from_file is not None:
        session.start_loading(spec)
    if args.line is not None:
        with InterruptibleRun(session):
            outcome = dispatcher.execute(args.line)
        return 1 if outcome.failed else 130 if outcome.interrupted else 0
    if args.from_file is not None:
        source = args.from_file
        if source == "-":
            lines = ((n, line.strip()) for n, line in enumerate(sys.stdin, 1))
        else:
            if not Path(source).is_file():
                error(f"--from_file {source}: no such file")
                return 2
            lines = list(read_commands(Path(source)))  # a snapshot: the log may grow as we run
        with InterruptibleRun(session):
            outcome = dispatcher.run_lines(lines, label=source)
        return 1 if outcome.failed else 130 if outcome.interrupted else 0

    from .shell.repl import DreamShell, open_history
    history = open_history(args.history_file, echo)
    echo(f"dreamshell: model {spec.name} is loading in the background; type a prompt (!help for help, "
         "Ctrl-D to leave)")
    # the model starts loading once the prompt is on screen: importing torch in a thread beside the
    # first draw would hold the GIL and delay the prompt
    return DreamShell(session, dispatcher, history=history, echo=echo,
                      on_first_prompt=lambda: session.start_loading(spec)).run()


def _register_fix(dispatcher: Dispatcher) -> None:
    """`!fix PATH [switches]`: post-process an existing image (see postprocess.py)."""
    from .postprocess import register_fix
    register_fix(dispatcher)
