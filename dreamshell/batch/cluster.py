"""`--from_file FILE --ray [ADDRESS]`: a command file's images made by Ray actors, written by the driver.

The driver plans every image first (batch_plan.py: bad lines are reported before anything runs),
hands one image at a time to actors that each keep one model resident (ray_worker.py), and is the
only writer: results come back in any order and are written through the same `OutputFolder` as a
local run, in the file's order, so names, chunks and log lines are those of a local run. A worker that
dies has its images handed to another; an image is written once. No torch here; ray is imported
only when `--ray` is used.
"""

from __future__ import annotations

import contextlib
import logging
import signal
import threading
import time
from pathlib import Path

from ..line.errors import CommandFileError, UserError
from ..line.safetext import first_line
from ..store.dreamlog import read_command_source
from .driver import DEPTH, BatchRun, OrderedWriter
from .plan import plan_lines

INSTALL = '--ray needs Ray, an optional extra: pip install "dreamshell[ray]"'
MAX_RESTARTS = 3          # a worker process that dies is started again this often


def local_runtime_env() -> dict:
    """Workers of a Ray started here import this very dreamshell (a source checkout included)."""
    import os
    root = str(Path(__file__).resolve().parents[2])
    path = os.pathsep.join(p for p in (root, os.environ.get("PYTHONPATH", "")) if p)
    return {"env_vars": {"PYTHONPATH": path}}


def connect(ray, address: str | None) -> bool:
    """Join the cluster at address ("auto", "ray://host:10001") or start a local Ray; True when
    this call started the connection (and so should end it)."""
    if ray.is_initialized():
        return False
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.ERROR}
    if address in (None, "local"):
        ray.init(runtime_env=local_runtime_env(), **quiet)
    else:
        ray.init(address=address, **quiet)
    return True


def worker_layout(ray, device: str, cpus_per_worker: int, limit: int | None) -> tuple[int, dict, str]:
    """How many workers, their Ray resources and their device: one per GPU, else one per N cores
    of each node (N capped at the largest node's cores)."""
    nodes = [n for n in ray.nodes() if n.get("Alive")]
    gpus = sum(int(n["Resources"].get("GPU", 0)) for n in nodes)
    if gpus and device != "cpu":
        count, options, where = gpus, {"num_gpus": 1}, device
    else:
        cores = [int(n["Resources"].get("CPU", 0)) for n in nodes]
        per = max(1, min(cpus_per_worker, max(cores, default=1)))  # a small node: one worker on all its cores
        count = sum(c // per for c in cores)
        options, where = {"num_cpus": per}, "cpu"
    if limit:
        count = min(count, limit)
    return count, options, where


class WorkerPool:
    """The actors, what each runs now, and which are down (restarting) or gone."""

    def __init__(self, ray, count: int, options: dict, registry, device: str, precision: str,
                 vae_precision: str = "auto"):
        from .worker import ImageWorker
        self.ray = ray
        cls = ray.remote(ImageWorker).options(max_restarts=MAX_RESTARTS, max_task_retries=0, **options)
        self.actors = [cls.remote(registry, device, precision, vae_precision) for _ in range(count)]
        self.model = [None] * count           # the model each was last given (grouping)
        self.load = [0] * count
        self.running: dict = {}               # ref -> (index, actor)
        self.pings: dict = {}                 # ref -> actor, for actors that are down
        self.down: dict[int, float] = {}      # actor -> since when
        self.gone: set[int] = set()
        self.pids: set[int] = set()           # worker processes seen (tests kill one)

    @property
    def alive(self) -> int:
        return len(self.actors) - len(self.down) - len(self.gone)

    def free(self) -> list[int]:
        """Actors that can take one more image, the least busy first."""
        ready = [a for a in range(len(self.actors)) if a not in self.down and a not in self.gone
                 and self.load[a] < DEPTH]
        return sorted(ready, key=lambda a: self.load[a])

    def submit(self, actor: int, index: int, task, payload, notes: bool) -> None:
        request, init, mask = payload
        ref = self.actors[actor].run.remote(request, task.spec, task.plan.files, init, mask, notes)
        self.running[ref] = (index, actor)
        self.load[actor] += 1
        self.model[actor] = task.spec.name

    def wait(self, timeout: float):
        """What finished: ("ok", index, result), ("error", index, line) or ("lost", index, None)."""
        refs = list(self.running) + list(self.pings)
        if not refs:
            time.sleep(timeout)
            return []
        done, _ = self.ray.wait(refs, num_returns=1, timeout=timeout)
        if done:
            done, _ = self.ray.wait(refs, num_returns=len(refs), timeout=0)
        events = []
        for ref in done:
            if ref in self.pings:
                self._pinged(ref)
                continue
            index, actor = self.running.pop(ref)
            self.load[actor] -= 1
            events.append(self._outcome(ref, index, actor))
        return events

    def _outcome(self, ref, index: int, actor: int):
        from ray.exceptions import RayError, RayTaskError
        try:
            result = self.ray.get(ref)
        except RayTaskError as e:  # the worker's code failed (not a user error it could name)
            return "error", index, f"the worker failed: {str(e).strip().splitlines()[-1]}"
        except RayError:  # the worker process died: hand the image to another
            self._mark_down(actor)
            return "lost", index, None
        self.pids.add(result.pid)
        return ("error", index, result.error) if result.error is not None else ("ok", index, result.result)

    def _mark_down(self, actor: int) -> None:
        if actor not in self.down and actor not in self.gone:
            self.down[actor] = time.monotonic()
            self.model[actor] = None
            self.pings[self.actors[actor].ping.remote()] = actor

    def _pinged(self, ref) -> None:
        from ray.exceptions import RayError
        actor = self.pings.pop(ref)
        try:
            self.pids.add(self.ray.get(ref))
            del self.down[actor]
        except RayError:
            if time.monotonic() - self.down[actor] > 60:
                del self.down[actor]
                self.gone.add(actor)
            else:
                time.sleep(0.2)
                self.pings[self.actors[actor].ping.remote()] = actor

    def close(self) -> None:
        for actor in self.actors:
            try:
                self.ray.kill(actor, no_restart=True)
            except Exception:  # already gone
                pass


class BatchProgress:
    """One bar for the whole batch: images done, images/s, ETA and workers alive."""

    def __init__(self, console, total: int):
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
        )
        self._progress = Progress(TextColumn("images"), BarColumn(), MofNCompleteColumn(),
                                  TextColumn("{task.fields[rate]}"), TextColumn("ETA"), TimeRemainingColumn(),
                                  TextColumn("{task.fields[workers]}"), console=console, transient=True)
        self._task = self._progress.add_task("images", total=total, rate="", workers="")
        self._t0 = time.perf_counter()
        self._progress.start()

    def update(self, written: int, skipped: int, alive: int, workers: int) -> None:
        rate = written / max(1e-9, time.perf_counter() - self._t0)
        self._progress.update(self._task, completed=written + skipped, rate=f"{rate:.2f} img/s",
                              workers=f"{alive}/{workers} workers")

    def stop(self) -> None:
        self._progress.stop()


def read_lines(source: str, error) -> list[tuple[int, str]] | None:
    """The command file (or stdin) through the checked reader a local run uses; None after one line."""
    try:
        return read_command_source(source)
    except CommandFileError as e:
        error(f"--from_file: {e}")
        return None


def run_ray(args, registry, spec, defaults, echo, error, control, console=None) -> int:
    """The whole `--from_file FILE --ray` run; the exit status. Ctrl-C (app.InterruptibleRun) stops it:
    the first sets control.stop, a second raises KeyboardInterrupt wherever the run is (planning,
    connecting, waiting on workers, shutting Ray down); either way what was written stays written and
    the summary is printed."""
    try:
        import ray
    except ImportError:
        error(INSTALL)
        return 2
    started, pool, progress, batch = False, None, None, None
    end = "stopped"
    try:
        lines = read_lines(args.from_file, error)
        if lines is None:
            return 2
        plan = plan_lines(lines, registry, spec, defaults, args.from_file)
        for line in plan.errors:
            error(line)
        if plan.errors:
            error(f"{len(plan.errors)} bad line(s): nothing was run (fix them; --dry_run checks a file)")
            return 2
        try:
            started = connect(ray, args.ray)
        except (ConnectionError, RuntimeError, ValueError) as e:
            error(f"--ray {args.ray}: cannot reach the Ray cluster ({first_line(e)})")
            return 2
        count, options, device = worker_layout(ray, args.device, args.ray_cpus_per_worker, args.ray_workers)
        if count < 1:
            error(f"the Ray cluster has no room for a worker ({args.ray_cpus_per_worker} CPU(s) or 1 GPU each)")
            return 2
        pool = WorkerPool(ray, count, options, registry, device, args.precision,
                          getattr(args, "vae_precision", "auto"))
        writer = OrderedWriter(args.outdir, not args.no_log, echo)
        echo(f"{args.from_file}: {len(plan.tasks)} image(s) on {count} Ray worker(s) ({device})")
        progress = BatchProgress(console, len(plan.tasks)) if console is not None and console.is_terminal else None
        batch = BatchRun(plan, pool, writer, control, args.from_file, error, args.resume, progress)
        end = batch.run()
    except UserError as e:   # the output folder cannot be written (OutputError) or its log read
        error(str(e))
        end = "failed"
    except KeyboardInterrupt:  # a second Ctrl-C: what was written stays written
        end = "stopped"
    finally:
        _close(progress, pool, ray if started else None)
    with _ctrl_c_ignored():
        if batch is None:
            if end == "failed":
                return 1
            echo(f"{args.from_file}: stopped before any image was made")
            return 130
        return _summary(batch, end, echo, error)


def _close(progress, pool, ray) -> None:
    """End the progress bar, the workers and the Ray this run started; a Ctrl-C during one of them
    leaves the rest to the process's exit (Ray shuts itself down then)."""
    steps = [step for step in (progress and progress.stop, pool and pool.close, ray and ray.shutdown) if step]
    for step in steps:
        try:
            step()
        except KeyboardInterrupt:
            return


@contextlib.contextmanager
def _ctrl_c_ignored():
    """While the summary is printed, Ctrl-C does nothing (it would only lose the summary)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    old = signal.signal(signal.SIGINT, lambda signum, frame: None)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, old)


def _summary(batch: BatchRun, end: str, echo, error) -> int:
    made = f"{batch.written} image(s) written, {batch.skipped} already in the log"
    if batch.retried:
        made += f", {batch.retried} handed to another worker after a worker died"
    if end == "stopped":
        echo(f"{batch.label}: stopped; {made}; {len(batch.tasks) - batch.next} not made "
             "(run the same command with --resume to make them)")
        return 130
    if end == "dead":
        error(f"{batch.label}: every Ray worker died; {made}; {len(batch.tasks) - batch.next} not made "
              "(--resume makes them)")
        return 1
    if end == "failed":
        return 1
    echo(f"{batch.label}: {made}, {batch.bad_lines} line(s) with errors")
    return 1 if batch.bad_lines else 0
