"""The queue between the live prompt and the model: jobs run one at a time, in the order typed.

A job is numbered when it is queued. Waiting jobs can be listed, cancelled and moved to the front;
the queue can be paused (the running job stops after its current image) and resumed. Ctrl-C stops
the running job's image and leaves the waiting jobs alone. No torch, no terminal: the shell reads
the state and prints.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from typing import Callable

from .types import Control, StopFlag


@dataclass
class Job:
    number: int
    label: str                          # what the user typed
    work: Callable[["Job"], object]     # runs on the worker thread, given its job
    control: Control = field(default=None)  # type: ignore[assignment]
    started: float = 0.0
    # progress of the running job, written by the listener
    image: int = 0
    images: int = 0
    step: int = 0
    steps: int = 0
    step_times: list = field(default_factory=list)

    def eta(self) -> float | None:
        """Seconds left in this job's current image and the images after it, from the step rate."""
        if len(self.step_times) < 2 or not self.steps:
            return None
        rate = (self.step_times[-1] - self.step_times[0]) / (len(self.step_times) - 1)
        left = (self.steps - self.step) + max(0, self.images - self.image) * self.steps
        return rate * left


class JobQueue:
    def __init__(self, on_error: Callable[[Job, BaseException], None] | None = None):
        self._cond = threading.Condition()
        self._waiting: list[Job] = []
        self._next_number = 1
        self._paused = False
        self._closed = False
        self.running: Job | None = None
        self.on_error = on_error
        self._thread = threading.Thread(target=self._loop, name="jobs", daemon=True)
        self._thread.start()

    # ----- what the prompt does

    def submit(self, label: str, work: Callable[[Job], object]) -> Job:
        with self._cond:
            job = Job(self._next_number, label, work)
            job.control = Control(StopFlag(), gate=lambda: self._wait_unpaused(job))
            self._next_number += 1
            self._waiting.append(job)
            self._cond.notify_all()
            return job

    def waiting(self) -> list[Job]:
        with self._cond:
            return list(self._waiting)

    def cancel(self, number: int) -> Job:
        """Drop waiting job `number`; KeyError if no waiting job has it."""
        with self._cond:
            for job in self._waiting:
                if job.number == number:
                    self._waiting.remove(job)
                    return job
        raise KeyError(number)

    def cancel_all(self) -> list[Job]:
        with self._cond:
            dropped, self._waiting = self._waiting, []
            return dropped

    def move_to_front(self, number: int) -> Job:
        with self._cond:
            for job in self._waiting:
                if job.number == number:
                    self._waiting.remove(job)
                    self._waiting.insert(0, job)
                    return job
        raise KeyError(number)

    def pause(self) -> None:
        with self._cond:
            self._paused = True

    def resume(self) -> None:
        with self._cond:
            self._paused = False
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        return self._paused

    def stop_running(self) -> Job | None:
        """Ctrl-C: stop the running job's image within a step; the waiting jobs stay."""
        job = self.running
        if job is not None:
            job.control.stop.set()
            with self._cond:
                self._cond.notify_all()  # a paused job wakes up to stop
        return job

    def busy(self) -> bool:
        with self._cond:
            return self.running is not None or bool(self._waiting)

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing runs or waits (tests, leaving); False on timeout."""
        deadline = None if timeout is None else time.monotonic() + timeout
        with self._cond:
            while self.running is not None or (self._waiting and not self._paused):
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._cond.wait(left)
            return True

    def close(self) -> None:
        """Drop waiting jobs, stop the running one, and end the worker."""
        self.cancel_all()
        self.stop_running()
        with self._cond:
            self._closed = True
            self._paused = False
            self._cond.notify_all()

    # ----- the worker

    def _wait_unpaused(self, job: Job) -> None:
        with self._cond:
            while self._paused and not job.control.stop.is_set() and not self._closed:
                self._cond.wait()

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._closed and (not self._waiting or self._paused):
                    self._cond.wait()
                if self._closed:
                    return
                job = self._waiting.pop(0)
                self.running = job
                job.started = time.monotonic()
            try:
                job.work(job)
            except BaseException as e:  # the job's own boundary reports user errors; this is the last net
                if self.on_error is not None:
                    self.on_error(job, e)
            finally:
                with self._cond:
                    self.running = None
                    self._cond.notify_all()
