"""The driver's side of a distributed batch: images handed out in a window ahead of the writer and
written in the file's order (no ray, no torch: the worker pool is handed in).

Results come back in any order; the writer takes them in the file's order, so the numbers of the
names (given in the order images are written) are a local run's. An image is written once: a result
for an image already written, or of a line that failed, is dropped.
"""

from __future__ import annotations

from pathlib import Path

from .. import __version__
from ..line.errors import UserError
from ..line.request import ImageRecord
from ..run.image import load_inputs
from ..run.report import record_line
from ..run.types import ImageResult
from ..store.output import OutputFolder, compose_grid
from ..store.pngmeta import ImageMeta
from .plan import LogIndex, Plan

DEPTH = 2                 # images queued at each worker (the next one is there when one ends)
MAX_LOSSES = 3            # an image whose worker died this often is given up


class OrderedWriter:
    """Writes finished images in the file's order through the output folders, as a local run does."""

    def __init__(self, outdir: Path, log: bool, echo):
        self.outdir = Path(outdir)
        self.log = log
        self.echo = echo
        self._folders: dict[Path, OutputFolder] = {}
        self._grid: list = []

    def folder(self, path: str | None) -> OutputFolder:
        key = Path(path).expanduser() if path else self.outdir
        if key not in self._folders:
            self._folders[key] = OutputFolder(key, log=self.log)
            for note in self._folders[key].open():
                self.echo(note)
        return self._folders[key]

    def write(self, task, result: ImageResult) -> str:
        """Save one image (and its original with --save_original) with the one call a local run uses."""
        for note in result.notes:
            self.echo(note)
        path, command = self.folder(result.request.outdir).save_result(result, task.plan.extras, __version__)
        self.echo(record_line(ImageRecord(str(path), result.request.seed, command)))
        if task.plan.grid:
            self._grid.append((path, result))
        return str(path)

    def end_line(self, task) -> None:
        """After a line's last image: its grid (-g), of the images that were made."""
        made, self._grid = self._grid, []
        if len(made) < 2:
            return
        first, result = made[0]
        meta = ImageMeta(task.plan.grid_request(result.request), result.model_hash, __version__, (), "grid",
                         task.plan.extras)
        self.folder(result.request.outdir).save_grid(first, compose_grid([r.image for _, r in made]), meta, len(made))


class BatchRun:
    """The driver's loop: make tasks ready in a window ahead of the writer, hand them to free workers
    (the same model first), take results, write them in order."""

    def __init__(self, plan: Plan, pool, writer: OrderedWriter, control, label: str,
                 error, resume: bool, progress=None, window: int | None = None):
        self.tasks = plan.tasks
        self.pool, self.writer, self.control, self.label = pool, writer, control, label
        self.error, self.resume, self.progress = error, resume, progress
        self.window = window or max(16, 4 * DEPTH * len(pool.actors))
        n = len(self.tasks)
        self.status = ["todo"] * n    # todo ready running done skipped failed dropped
        self.payload: dict[int, tuple] = {}
        self.results: dict[int, dict] = {}
        self.failure: dict[int, str] = {}
        self.paths: dict[int, str] = {}
        self.losses = [0] * n
        self.next = 0                 # the first image not yet written (or skipped)
        self.written = self.skipped = self.retried = 0
        self.bad_lines = 0
        self._logs: dict[Path, LogIndex] = {}

    def run(self) -> str:
        """"done", "stopped" or "dead" (every worker gone)."""
        while True:
            self._prepare()
            stopping = self.control.stop.is_set()
            if not stopping:
                self._flush()
            if self.next >= len(self.tasks):
                return "done"
            if stopping:
                return "stopped"
            if not self.pool.alive and not self.pool.down:
                return "dead"
            self._assign()
            for kind, index, value in self.pool.wait(0.25):
                self._take(kind, index, value)
            if self.progress is not None:
                self.progress.update(self.written, self.skipped, self.pool.alive, len(self.pool.actors))

    # ----- ready: inputs loaded, -I -1 resolved, already made images (--resume) found

    def _prepare(self) -> None:
        for i in range(self.next, min(len(self.tasks), self.next + self.window)):
            task = self.tasks[i]
            if self.status[i] != "todo":
                continue
            if task.request.init_img == "-1" and self.next < task.line_start:
                continue  # waits until the image it names is written
            try:
                payload = self._inputs(task)
            except UserError as e:
                self._fail_line(task, str(e))
                continue
            logged = self._log(payload[0].outdir).take(payload[0]) if self.resume else None
            if logged is not None:
                self.status[i], self.paths[i] = "skipped", logged
            else:
                self.status[i], self.payload[i] = "ready", payload

    def _inputs(self, task):
        request = task.request
        if request.init_img == "-1":
            last = next((self.paths[j] for j in range(task.line_start - 1, -1, -1) if j in self.paths), None)
            if last is None:
                raise UserError("-I -1 means the last image made, but none was made before this line")
            request = request.with_(init_img=last)
        init, mask, request = load_inputs(request, task.plan.explicit_size, self.writer.echo)
        return request, init, mask

    def _log(self, outdir: str | None) -> LogIndex:
        folder = self.writer.folder(outdir).folder   # opened (and repaired) before its log is read
        if folder not in self._logs:
            self._logs[folder] = LogIndex(folder)
        return self._logs[folder]

    def _fail_line(self, task, message: str, start: int | None = None) -> None:
        """Images of the line from start on are not made (those before it are kept, as locally)."""
        for j in range(task.line_start if start is None else start, task.line_start + task.line_count):
            if self.status[j] in ("todo", "ready", "running", "done"):
                self.status[j] = "failed"
                self.failure.setdefault(j, message)

    # ----- hand out, take back

    def _assign(self) -> None:
        for actor in self.pool.free():
            index = self._pick(self.pool.model[actor])
            if index is None:
                return
            task = self.tasks[index]
            self.pool.submit(actor, index, task, self.payload[index], notes=index == task.line_start)
            self.status[index] = "running"

    def _pick(self, model: str | None) -> int | None:
        """The first ready image for this worker's model, else the first ready image."""
        first = None
        for i in range(self.next, min(len(self.tasks), self.next + self.window)):
            if self.status[i] == "ready":
                if self.tasks[i].spec.name == model:
                    return i
                first = i if first is None else first
        return first

    def _take(self, kind: str, index: int, value) -> None:
        if self.status[index] != "running":
            return  # its line failed meanwhile: dropped
        if kind == "ok":
            self.status[index], self.results[index] = "done", value
        elif kind == "error":
            self._fail_line(self.tasks[index], value, index)
        else:
            self.retried += 1
            self.losses[index] += 1
            if self.losses[index] >= MAX_LOSSES:
                self._fail_line(self.tasks[index], f"the worker making this image died {MAX_LOSSES} times",
                                index)
            else:
                self.status[index] = "ready"

    # ----- write, in the file's order

    def _flush(self) -> None:
        """Write what is next in order, until an image is not finished or Ctrl-C is pressed (it stops at
        once: what is written is whole and logged; images finished but not written are made again by
        --resume)."""
        while self.next < len(self.tasks) and not self.control.stop.is_set():
            i, task = self.next, self.tasks[self.next]
            state = self.status[i]
            if state == "done":
                self.paths[i] = self.writer.write(task, self.results.pop(i))
                self.payload.pop(i, None)
                self.written += 1
            elif state == "skipped":
                self.skipped += 1
            elif state == "failed":
                if i in self.failure:
                    self.error(f"{self.label}:{task.number}: {self.failure[i]}")
                    self.bad_lines += 1
                for j in range(i, task.line_start + task.line_count):
                    self.status[j] = "dropped"
                    self.payload.pop(j, None)
                    self.results.pop(j, None)
            elif state != "dropped":
                return
            self.next += 1
            if self.next == task.line_start + task.line_count:
                self.writer.end_line(task)
            self._prepare()
