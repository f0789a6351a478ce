"""Compose the parts for a real run: registry, engines (lazily), session, dispatcher, shell or batch."""

from __future__ import annotations

import signal
import threading
from pathlib import Path

from .line.errors import CommandFileError
from .line.request import DreamRequest
from .line.safetext import shorten
from .run.dispatch import Dispatcher, data_dir
from .run.model_host import ModelHost
from .run.report import RichProgress, TextListener, error_printer
from .run.session import Session
from .run.types import Control
from .store.dreamlog import read_command_source
from .weights.models import ModelsFileError, load_registry, with_folders


def _generator_factory(device: str, precision: str, lowvram: bool = False, compile: bool = False,
                       batch_size: int = 1, folders=None, vae_precision: str = "auto"):
    def make():
        from .engines.generator import DiffusersGenerator
        return DiffusersGenerator(device=device, precision=precision, lowvram=lowvram, compile=compile,
                                  batch_size=batch_size, folders=folders, vae_precision=vae_precision)
    return make


def _upscaler_factory(registry, device: str):
    def make():
        from .engines.upscaler import make_upscaler
        return make_upscaler(registry, device)
    return make


def launch_folders(args) -> dict:
    """--lora_dir, --embedding_dir, --vae_dir, --controlnet_dir and --decoder_dir as weights.models.with_folders
    takes them."""
    return {"loras": getattr(args, "lora_dir", None), "embeddings": getattr(args, "embedding_dir", None),
            "vaes": getattr(args, "vae_dir", None), "controlnets": getattr(args, "controlnet_dir", None),
            "decoders": getattr(args, "decoder_dir", None)}


class InterruptibleRun:
    """A batch or one-shot run: the first Ctrl-C stops at the next step (and ends the batch); a second
    one forces it."""

    def __init__(self, control: Control):
        self.control = control
        self._old = None

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            self._old = signal.getsignal(signal.SIGINT)
            signal.signal(signal.SIGINT, self._handle)
        return self

    def _handle(self, signum, frame):
        if self.control.stop.is_set():
            raise KeyboardInterrupt
        self.control.stop.set()

    def __exit__(self, *exc):
        if self._old is not None:
            signal.signal(signal.SIGINT, self._old)
        return False


def build_session(args, registry, defaults: DreamRequest) -> Session:
    factory = _generator_factory(args.device, args.precision, args.lowvram, args.compile, args.batch_size,
                                 registry.folders, getattr(args, "vae_precision", "auto"))
    host = ModelHost(factory, _upscaler_factory(registry, args.device))
    return Session(registry, host, args.outdir, defaults=defaults, log=not args.no_log)


def warnings_to_error_log() -> None:
    """Library warnings (numpy, Pillow, torch, Ray) go to errors.log in the data folder, not to the
    terminal, where they would break the prompt's lines."""
    import logging
    import warnings
    log = logging.getLogger("dreamshell.warnings")
    if not log.handlers:
        try:
            folder = data_dir()
            folder.mkdir(parents=True, exist_ok=True)
            handler = logging.FileHandler(folder / "errors.log", delay=True, encoding="utf-8")
        except OSError:
            handler = logging.NullHandler()
        handler.setFormatter(logging.Formatter("--- %(asctime)s warning: %(message)s"))
        log.addHandler(handler)
    log.propagate = False

    def show(message, category, filename, lineno, file=None, line=None):
        log.warning("%s", warnings.formatwarning(message, category, filename, lineno, line).strip())
    warnings.showwarning = show


def run_app(args, config: Path | None, defaults: DreamRequest) -> int:
    from rich.console import Console

    warnings_to_error_log()
    console = Console(highlight=False, soft_wrap=True)
    err = Console(stderr=True, highlight=False, soft_wrap=True)

    def echo(text: str) -> None:
        console.out(text, highlight=False)

    error = error_printer(err)

    try:
        registry = with_folders(load_registry(config), **launch_folders(args))
        spec = registry.get(args.model) if args.model else registry.default
    except ModelsFileError as e:
        error(str(e))
        return 2
    if getattr(args, "ray", None) is not None:  # the images are made by Ray workers; this is the writer
        from .batch.cluster import run_ray
        with InterruptibleRun(control := Control()):
            return run_ray(args, registry, spec, defaults, echo, error, control, console)
    session = build_session(args, registry, defaults)
    session.model = spec
    progress = RichProgress(console) if console.is_terminal else None
    dispatcher = Dispatcher(session, echo, error, listener=lambda: TextListener(echo, progress))
    _register_fix(dispatcher)

    if args.line is not None or args.from_file is not None:
        lines = None
        if args.from_file is not None:
            lines = _read_file(args.from_file, error)   # a bad file is told before any model loads
            if lines is None:
                return 2
        session.host.preload(spec)
        control = Control()
        with InterruptibleRun(control):
            if lines is None:
                outcome = dispatcher.execute(args.line, control)
            else:
                outcome = dispatcher.run_lines(lines, label=shorten(args.from_file, 120), control=control)
        return 1 if outcome.failed else 130 if outcome.interrupted else 0

    from .shell.repl import DreamShell, open_history
    history = open_history(args.history_file, echo)
    echo(f"dreamshell: model {spec.name} is loading in the background; type a prompt (!help for help, "
         "Ctrl-D to leave)")
    # the model starts loading once the prompt is on screen: importing torch in a thread beside the
    # first draw would hold the GIL and delay the prompt
    shell = DreamShell(session, dispatcher, history=history, preview=getattr(args, "preview", "auto"),
                       on_first_prompt=lambda: session.host.preload(spec))
    return shell.run()


def _read_file(source: str, error):
    """A command file's (or stdin's) lines, checked whole first; a snapshot: the log may grow as we run."""
    try:
        return read_command_source(source)
    except CommandFileError as e:
        error(f"--from_file: {e}")
        return None


def _register_fix(dispatcher: Dispatcher) -> None:
    """`!fix PATH [switches]`: post-process an existing image (see postprocess.py); `!control IMAGE PRE`: a control
    map (run/control.py)."""
    from .run.control import register_control
    from .run.postprocess import register_fix
    register_fix(dispatcher)
    register_control(dispatcher)
