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
    batch_size = 1
    text_layers = 2
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
        self.esrgan = None
        self.files_seen: list = []        # the LoRA/embedding/VAE files each image was given (work-once tests)

    def load(self, spec):
        self.load_gate.wait(30)
        if not spec.weights.exists() and spec.name != "fake":
            raise GenerationError(f"model '{spec.name}': {spec.weights} does not exist")
        if spec.name == "broken":
            self.spec = None
            raise GenerationError(f"cannot load model 'broken' from {spec.weights}: its weights are damaged")
        self.loads.append(spec.name)
        self.spec = spec

    def tokenization(self, prompt: str, files=None) -> str:
        return f"tokens of {prompt}"

    def prompt_notes(self, prompt: str, files=None, running=None) -> list[str]:
        return []

    def generate_batch(self, requests, *, files=None, on_step=None, should_stop=None):
        return [self.generate(r, files=files, on_step=on_step, should_stop=should_stop) for r in requests]

    def generate(self, request, *, files=None, init_image=None, mask=None, on_step=None, should_stop=None,
                 on_preview=None, **_):
        self.files_seen.append(files)
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
