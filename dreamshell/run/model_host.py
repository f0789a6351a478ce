"""The model host: the one thread that loads and runs the model (no torch here).

Everything that touches the model (loading, switching, generating, upscaling) is a task run in
order on this thread, so there are never two loads and never two models built: a `!switch` typed
while the first model loads waits for that load and then finds the model it asked for, or loads
once. A load that fails leaves the model that was resident before.
"""

from __future__ import annotations

import threading
from concurrent.futures import Future
from queue import SimpleQueue
from typing import Callable

from ..engines.protocols import GenerationError
from ..line.errors import UserError
from ..line.safetext import first_line
from ..weights.models import ModelSpec


class LoadError(UserError):
    """A model that cannot be loaded; str() is the one line (it says what is resident instead)."""


class ModelHost:
    def __init__(self, generator_factory: Callable[[], object],
                 upscaler_factory: Callable[[], object] | None = None):
        self._generator_factory = generator_factory
        self._upscaler_factory = upscaler_factory
        self._tasks: SimpleQueue = SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name="model-host", daemon=True)
        self._thread.start()
        self.generator = None
        self.upscaler_instance = None
        self.loading: ModelSpec | None = None   # the spec being loaded now, for the toolbar
        self.loads = 0                          # how many loads ran (tests: never two for one switch)

    # ----- the thread

    def _loop(self) -> None:
        while True:
            fn, future = self._tasks.get()
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(fn())
            except BaseException as e:  # handed to whoever waits
                future.set_exception(e)

    def submit(self, fn: Callable[[], object]) -> Future:
        """Run fn on the host thread after everything submitted before it."""
        future: Future = Future()
        self._tasks.put((fn, future))
        return future

    def call(self, fn: Callable[[], object]):
        """Run fn on the host thread and wait for its result (its exception is raised here)."""
        if threading.current_thread() is self._thread:
            return fn()
        future = self.submit(fn)
        while True:  # a timed wait keeps the main thread responsive to signals (Ctrl-C)
            try:
                return future.result(timeout=0.25)
            except TimeoutError:
                continue

    # ----- the model

    @property
    def spec(self) -> ModelSpec | None:
        """The resident model's spec (None before the first load finishes)."""
        return self.generator.spec if self.generator is not None else None

    def preload(self, spec: ModelSpec) -> Future:
        """Start loading spec in the background (the shell does this once the prompt is drawn)."""
        return self.submit(lambda: self._ensure(spec))

    def ensure(self, spec: ModelSpec, on_wait: Callable[[str], None] | None = None) -> ModelSpec:
        """Make spec the resident model, waiting for any load already under way; raise LoadError."""
        if on_wait is not None and self.spec != spec:
            on_wait(spec.name)
        return self.call(lambda: self._ensure(spec))

    def _ensure(self, spec: ModelSpec) -> ModelSpec:
        if self.spec == spec:
            return spec
        if self.generator is None:
            self.generator = self._generator_factory()
            self.generator.esrgan = self._hires_esrgan   # the hires fix's Real-ESRGAN (runs on this thread)
        previous = self.spec
        self.loading = spec
        try:
            self.loads += 1
            self.generator.load(spec)
        except (GenerationError, OSError, ValueError) as e:
            message = first_line(e, 400)
            kept = self._restore(previous)
            if previous is not None and self.spec == previous and f"'{previous.name}'" in message:
                kept = ""   # the engine has said already that the previous model is loaded again
            raise LoadError(message + kept) from None
        except BaseException:
            self._restore(previous)
            raise
        finally:
            self.loading = None
        return spec

    def _restore(self, previous: ModelSpec | None) -> str:
        """After a failed load, have the previous model resident again; say which model is."""
        if previous is None:
            return ""
        if self.spec != previous:
            try:
                self.loads += 1
                self.generator.load(previous)
            except Exception:
                return "; no model is loaded now (!switch NAME loads one)"
        return f"; {previous.name} is still the loaded model"

    def _hires_esrgan(self, image, factor: float):
        try:
            upscaler = self.upscaler()
        except LoadError as e:
            raise GenerationError(f"--hires_upscaler esrgan: {e}; use latent or lanczos") from None
        return upscaler.upscale(image, factor, 1.0)

    def upscale(self, image, factor: float, strength: float, should_stop=None):
        """Real-ESRGAN -U on this thread's upscaler (LoadError when none is set up)."""
        return self.upscaler().upscale(image, factor, strength, should_stop=should_stop)

    def upscaler(self):
        """The upscaler, made on first use (its weights load only when -U or !fix asks)."""
        if self.upscaler_instance is None:
            if self._upscaler_factory is None:
                raise LoadError("no upscaler is set up in this dreamshell")
            self.upscaler_instance = self._upscaler_factory()
        return self.upscaler_instance

    @property
    def device_label(self) -> str:
        gen = self.generator
        if gen is None:
            return "-"
        return f"{gen.device} {gen.precision}"
