"""A 40-image command file made locally and on a local Ray with 1 and 2 workers (issue 13).

Each run is `python -m dreamshell --from_file FILE ...` in its own process on the demo model (CPU),
the local run on --threads torch threads and each Ray worker on as many cores.
Steady-state images/s is timed over the second half of the `[N]` lines the run prints (model loads
and Ray's start are left out and printed apart; and the images other workers made ahead of a slow
first one, written in a burst once it is written, do not inflate the rate). The Ray overhead per image is the
steady per-image time of Ray with one worker against the local run (the same thread count). The
driver's own cost per image (planning + writing the PNG and its log line) is timed in-process.

    flock /tmp/ds-heavy.lock python bench/bench_ray.py [--images 40] [--steps 10] [--threads 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
COLOURS = ["red", "blue", "green", "yellow", "purple", "white", "orange", "pink"]
SHAPES = ["circle", "square", "triangle"]


def command_file(folder: Path, images: int) -> Path:
    lines = [f"a {COLOURS[i % 8]} {SHAPES[i % 3]} on a black background -S {100 + 2 * i} -n 2"
             for i in range(images // 2)]
    path = folder / "batch.txt"
    path.write_text("\n".join(lines) + "\n")
    return path


def timed_run(argv: list[str], cwd: Path, threads: int) -> dict:
    """Wall time, the time of each `[N]` line, and the exit status of one dreamshell run."""
    env = dict(os.environ, PYTHONUNBUFFERED="1", PYTHONPATH=str(ROOT), OMP_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "dreamshell", *argv], cwd=cwd, env=env, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    stamps = [time.perf_counter() - t0 for line in proc.stdout if line.startswith("[")]
    code = proc.wait()
    return {"wall": time.perf_counter() - t0, "stamps": stamps, "code": code}


def driver_cost(images: int, folder: Path) -> float:
    """Seconds the driver spends per image: planning its line and writing its PNG + log line."""
    from PIL import Image

    from dreamshell.batch.plan import plan_lines
    from dreamshell.store.dreamlog import read_commands
    from dreamshell.weights.models import Registry, demo_spec
    from dreamshell.batch.cluster import OrderedWriter
    spec = demo_spec()
    path = command_file(folder, images)
    t0 = time.perf_counter()
    plan = plan_lines(list(read_commands(path)), Registry({spec.name: spec}), spec, None, str(path))
    writer = OrderedWriter(folder / "driver-out", True, lambda text: None)
    image = Image.new("RGB", (64, 64), "red")
    for task in plan.tasks:
        writer.write(task, {"request": task.request, "image": image, "notes": [], "post": (),
                            "model_hash": "0" * 64, "original": None})
    return (time.perf_counter() - t0) / len(plan.tasks)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--images", type=int, default=40)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads of the local run and cores of each Ray worker (the same, so the "
                         "comparison is Ray's cost alone)")
    opts = ap.parse_args()
    cores = os.cpu_count() or 1
    per = str(opts.threads)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        path = command_file(tmp, opts.images)
        common = ["--from_file", str(path), "-s", str(opts.steps)]
        runs = {
            "local": common + ["-o", "local"],
            "ray, 1 worker": common + ["-o", "ray1", "--ray", "--ray_workers", "1", "--ray_cpus_per_worker", per],
            "ray, 2 workers": common + ["-o", "ray2", "--ray", "--ray_workers", "2", "--ray_cpus_per_worker", per],
        }
        print(f"{opts.images} images, demo model 64x64, {opts.steps} steps, CPU ({cores} cores), "
              f"{opts.threads} thread(s) for the local run and per worker")
        print(f"{'run':16} {'wall s':>7} {'first image s':>14} {'steady img/s':>13} {'s/img':>7}")
        per_image = {}
        for name, argv in runs.items():
            r = timed_run(argv, tmp, opts.threads)
            stamps = r["stamps"]
            if r["code"] != 0 or len(stamps) != opts.images:
                print(f"{name}: failed (exit {r['code']}, {len(stamps)} images)")
                continue
            half = len(stamps) // 2   # the second half: images made ahead of a slow first one are
            steady = (stamps[-1] - stamps[half]) / (len(stamps) - 1 - half)   # written in a burst early on
            per_image[name] = steady
            print(f"{name:16} {r['wall']:7.1f} {stamps[0]:14.1f} {1 / steady:13.2f} {steady:7.3f}")
        if "local" in per_image and "ray, 1 worker" in per_image:
            over = per_image["ray, 1 worker"] / per_image["local"] - 1
            print(f"Ray overhead per image, 1 worker vs local: {over * 100:+.1f} %")
        cost = driver_cost(opts.images, tmp)
        print(f"driver cost per image (plan + PNG + log line): {cost * 1000:.1f} ms")


if __name__ == "__main__":
    main()
