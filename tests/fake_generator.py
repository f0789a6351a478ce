"""A generator without torch for tests of the queue, the shell and the output folder: each image is a
flat colour made from its seed, steps can be held at a gate, loads counted and held too."""

from __future__ import annotations

import threading
import time

from PIL import Image

from dreamshell.engines.protocols import GenerationError, Interrupted


class FakeGenerator:
    device = "cpu"
    precision = "float32"
    model_hash = "0" * 64
    built = 0

    def __init__(self, step_delay: float = 0.0):
        FakeGenerator.built += 1
        self.spec = None
        self.step_delay = step_delay
        self.gate = threading.Event()       # steps wait here while it is clear
        self.gate.set()
        self.load_gate = threading.Event()
        self.load_gate.set()
        self.loads: list[str] = []
        self.generated: list[int] = []

    def load(self, spec):
        self.load_gate.wait(30)
        if not spec.weights.exists() and spec.name != "fake":
            raise GenerationError(f"model '{spec.name}': {spec.weights} does not exist")
        self.loads.append(spec.name)
        self.spec = spec

    def tokenization(self, prompt: str) -> str:
        return f"tokens of {prompt}"

    def prompt_notes(self, prompt: str) -> list[str]:
        return []

    def generate(self, request, *, init_image=None, mask=None, on_step=None, should_stop=None, on_preview=None,
                 **_):
        for step in range(request.steps):
            while not self.gate.wait(0.01):
                if should_stop is not None and should_stop():
                    raise Interrupted()
            if self.step_delay:
                time.sleep(self.step_delay)
            if should_stop is not None and should_stop():
                raise Interrupted()
            if on_step is not None:
                on_step(step + 1, request.steps)
            if on_preview is not None:
                on_preview(step + 1, request.steps, Image.new("RGB", (8, 8), self.colour(request.seed)))
        self.generated.append(request.seed)
        return Image.new("RGB", (request.width, request.height), self.colour(request.seed))

    @staticmethod
    def colour(seed: int) -> tuple[int, int, int]:
        return (seed * 37 % 256, seed * 91 % 256, seed * 53 % 256)
