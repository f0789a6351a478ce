"""One line at a time: plan -> load the model -> the image step -> save. Returns data, prints nothing.

No torch here: the model is reached through the model host (model_host.py), files through the output
folder (store/output.py). A line is planned once (plan.py); each image is made by the one image step
(image.py) on the host's thread and saved with one call. What happens while a line runs is told to a
Listener as events; only the shell and the batch runner turn events and results into text.
"""

from __future__ import annotations

import random
from pathlib import Path

from .. import __version__
from ..engines.protocols import Interrupted
from ..line.limits import check_clip_skip
from ..line.request import DreamRequest, ImageRecord
from ..store.output import OutputFolder, compose_grid
from ..store.pngmeta import ImageMeta
from ..weights.library import Library
from ..weights.models import ModelSpec, Registry
from .image import load_inputs, make_images
from .model_host import ModelHost
from .plan import CheckedLine, LinePlan, Planner, PlanState, batch_groups
from .types import Control, Listener, RunResult, Stopped


class Session:
    def __init__(self, registry: Registry, host: ModelHost, outdir: Path,
                 defaults: DreamRequest | None = None, log: bool = True, rng: random.Random | None = None):
        self.registry = registry
        self.host = host
        self.outdir = Path(outdir)
        self.defaults = defaults
        self.log_enabled = log
        self.library = Library(registry.folders)   # LoRA, embedding and VAE files
        self.planner = Planner(registry, defaults, self.library)
        self.state = PlanState(registry.default, rng or random.SystemRandom())
        self._folders: dict[Path, OutputFolder] = {}
        self._expected: set[Path] = {self.outdir.resolve()}   # folders this session's lines write to

    @property
    def model(self) -> ModelSpec:
        """The model lines run on (the queue's view: it changes when a line that names one runs)."""
        return self.state.model

    @model.setter
    def model(self, spec: ModelSpec) -> None:
        self.state.model = spec

    @property
    def seeds(self) -> list[int]:
        """Seeds of the images made, oldest first (-S -1 is the last)."""
        return self.state.seeds

    @property
    def spec(self) -> ModelSpec | None:
        """The resident model (None until its first load has finished)."""
        return self.host.spec

    def folder(self, path: Path | str | None = None) -> OutputFolder:
        """The output folder for -o path (default: the session's); opened, and repaired, on first use."""
        key = Path(path).expanduser() if path else self.outdir
        if key not in self._folders:
            self._folders[key] = OutputFolder(key, log=self.log_enabled)
        return self._folders[key]

    # ----- at submit time (nothing loaded, nothing resolved)

    def check(self, request: DreamRequest, files: bool = True, pending=lambda path: False) -> CheckedLine:
        """Refuse at once what can be known wrong before the line runs (UserError): its own rules, and
        what the loaded model says (clip skip deeper than its text encoder). A -I/-M file that is not
        there yet but that a queued job may make (`pending`) is looked for when the line runs."""
        checked = self.planner.check(request, files, pending, current=self.model)
        spec = checked.spec or self.model
        if checked.request.clip_skip and self.host.spec == spec and self.host.generator is not None:
            check_clip_skip(checked.request.clip_skip, self.host.generator.text_layers)
        self._expected.add(self._folder_key(checked.request.outdir))
        return checked

    def may_make(self, path: str) -> bool:
        """Could a line of this session make the image at path (in an output folder its lines write to)?"""
        try:
            return Path(path).expanduser().resolve().parent in self._expected
        except OSError:
            return False

    def _folder_key(self, outdir: str | None) -> Path:
        return (Path(outdir).expanduser() if outdir else self.outdir).resolve()

    def lookup(self, name: str) -> ModelSpec:
        return self.planner.model(name)

    # ----- the model

    def switch(self, name: str, listener: Listener | None = None) -> ModelSpec:
        """Make `name` the model lines run on; blocks until it is loaded (a failed load keeps the old)."""
        spec = self.lookup(name)
        self.host.ensure(spec, on_wait=(listener or Listener()).waiting_for_model)
        self.model = spec
        return spec

    # ----- one line

    def run(self, request: DreamRequest | CheckedLine, listener: Listener | None = None,
            control: Control | None = None) -> RunResult:
        """Make every image of a line; each is saved and logged the moment it is done."""
        listener = listener or Listener()
        control = control or Control()
        checked = request if isinstance(request, CheckedLine) else self.check(request)
        spec = checked.spec or self.model
        self.host.ensure(spec, on_wait=listener.waiting_for_model)
        self.model = spec
        plan = self.planner.resolve(checked, self.state)
        result = RunResult()

        def note(text: str) -> None:
            result.notes.append(text)
            listener.note(text)

        for text in plan.notes:
            note(text)
        init, mask, first = load_inputs(plan.images[0], plan.explicit_size, note)
        images = [one.with_(width=first.width, height=first.height) for one in plan.images]
        folder = self.folder(plan.line.outdir)
        for text in folder.open():
            note(text)
        generator = self.host.generator
        for text in self.host.call(lambda: self._line_notes(generator, plan)):
            note(text)
        extras = plan.extras
        made = []
        groups = batch_groups(tuple(images), generator.batch_size, together=init is None)
        for group in groups:
            control.before_image()
            listener.image_started(len(made) + 1, len(images), group[0].seed, group[0].steps)
            try:
                if control.stop.is_set():  # Ctrl-C between two images
                    raise Interrupted()
                results = self.host.call(lambda: make_images(
                    generator, group, plan.files, init, mask, upscale=self.host.upscale, on_step=listener.step,
                    should_stop=control.stop.is_set, on_preview=listener.preview if listener.wants_preview else None))
            except (Interrupted, KeyboardInterrupt):
                result.stopped = Stopped(len(made) + 1, len(images), len(result.records))
                break
            for one in results:
                for text in one.notes:
                    note(text)
                path, command = folder.save_result(one, extras, __version__)
                self.state.image_made(one.request.seed, str(path))
                record = ImageRecord(str(path), one.request.seed, command)
                result.records.append(record)
                made.append(one.image)
                listener.image_saved(record, one.image)
        if plan.grid and len(made) > 1:
            meta = ImageMeta(plan.grid_request(images[0]), generator.model_hash or "", __version__,
                             (), "grid", extras)
            result.grid = folder.save_grid(Path(result.records[0].path), compose_grid(made), meta, len(made))
        return result

    @staticmethod
    def _line_notes(generator, plan: LinePlan) -> list[str]:
        """-t's tokens and the prompt's notes (long prompts, LoRA layers left out), before the first image."""
        notes = [generator.tokenization(plan.line.prompt, plan.files)] if plan.line.log_tokenization else []
        return notes + generator.prompt_notes(plan.line.prompt, plan.files, (plan.line.sampler, plan.line.cfg_scale))
