"""A command file as a list of per-image tasks, planned on the driver before any work starts (no torch).

Each line is planned by the one planner (run/plan.py) with the local run's rules: session defaults,
the model (sticky from line to line; `!switch NAME` changes it), `-S -N` from the seeds planned
before, `-n`/`-v`. `-I -1` names the last image made before its line; that image's path is known
only once it is written, so such a line waits until every image before it is written.
"""

from __future__ import annotations

import hashlib
import os
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from ..line.errors import UserError
from ..line.formatter import format_request
from ..line.logline import split_log_line
from ..line.request import DreamRequest
from ..line.safetext import shorten
from ..run.plan import LinePlan, Planner, PlanState, plan_file_line
from ..store.dreamlog import LOG_NAME
from ..weights.files import open_regular
from ..weights.models import ModelSpec, Registry


@dataclass(frozen=True)
class ImageTask:
    """One image of the file, in the file's order (index), with the plan of the line that asks for it."""

    index: int
    number: int               # the line's number in the file
    line_start: int           # index of the line's first image
    request: DreamRequest     # resolved, one image (init_img may still be "-1")
    plan: LinePlan

    @property
    def line_count(self) -> int:
        return len(self.plan.images)

    @property
    def spec(self) -> ModelSpec:
        return self.plan.spec


@dataclass
class Plan:
    tasks: list[ImageTask]
    errors: list[str]          # `FILE:N: message`, one per bad line


def plan_seed(lines: list[tuple[int, str]]) -> random.Random:
    """The random source for seeds a file leaves open: drawn from the file's text, so a rerun
    (`--resume`) plans the very same images."""
    digest = hashlib.sha256("\n".join(text for _, text in lines).encode("utf-8")).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def plan_lines(lines: list[tuple[int, str]], registry: Registry, model: ModelSpec,
               defaults: DreamRequest | None, label: str, rng: random.Random | None = None) -> Plan:
    """Every image of every line as a task; every bad line as one error (nothing is run)."""
    planner = Planner(registry, defaults)
    state = PlanState(model, rng or plan_seed(lines))
    tasks: list[ImageTask] = []
    errors: list[str] = []
    for number, text in lines:
        try:
            plan = plan_file_line(planner, state, text, ray=True)
        except UserError as e:
            errors.append(f"{label}:{number}: {e}")
            continue
        if isinstance(plan, LinePlan):
            start = len(tasks)
            tasks += [ImageTask(start + i, number, start, one, plan) for i, one in enumerate(plan.images)]
    return Plan(tasks, errors)


# ----- --resume: what the output folder's log already holds

class LogIndex:
    """The canonical commands of a folder's log and the images they name (a multiset: a command
    planned twice is skipped only as often as it is logged). Paths come back in the folder's own form
    (`folder / name`, as the writer returns them), not as the log shows them (relative to the working
    folder), so `-I -1` after a skipped image names it as the first run did."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._paths: dict[str, list[str]] = defaultdict(list)
        try:
            with open_regular(self.folder / LOG_NAME) as f:    # a FIFO in its place is refused, not waited on
                text = f.read().decode("utf-8", "replace")
        except FileNotFoundError:
            return
        except OSError as e:
            raise UserError(f"--resume: {shorten(str(self.folder / LOG_NAME), 120)} cannot be read "
                            f"({e.strerror or e})") from None
        for line in text.splitlines():
            parts = split_log_line(line)
            if parts is not None:
                self._paths[parts[1].strip()].append(str(self.folder / os.path.basename(parts[0])))

    def take(self, request: DreamRequest) -> str | None:
        """The logged image made by this request, used up; None when the log has none left."""
        paths = self._paths.get(format_request(request))
        return paths.pop(0) if paths else None
