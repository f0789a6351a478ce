#!/usr/bin/env python
"""Resident memory over 500 replayed lines: RSS after the first 50 images and after all 500.

    python bench/bench_memory.py [--lines 500] [--steps 2]
"""

import argparse
import os
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def rss_mib() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--lines", type=int, default=500)
    ap.add_argument("--steps", type=int, default=2)
    args = ap.parse_args()

    from dreamshell.run.dispatch import Dispatcher
    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.weights.models import Registry, demo_spec
    from dreamshell.run.session import Session

    out = Path(tempfile.mkdtemp(prefix="bench-mem-"))
    spec = demo_spec()
    session = Session(Registry({spec.name: spec}), lambda: DiffusersGenerator(device="cpu"), out,
                      echo=lambda _: None)
    session.start_loading(spec)
    session.wait_until_ready()
    colours = ["red", "green", "blue", "yellow", "white", "black"]
    log = out / "replay.txt"
    log.write_text("".join(f"a {colours[i % 6]} circle on a {colours[(i + 1) % 6]} background, number {i} "
                           f"-S {i} -s {args.steps} -A {['k_euler', 'ddim', 'k_lms'][i % 3]}\n"
                           for i in range(args.lines)))
    d = Dispatcher(session, echo=lambda _: None)
    marks = {}
    lines = list(enumerate(log.read_text().splitlines(), 1))
    d.run_lines(lines[:50], "replay")
    marks[50] = rss_mib()
    d.run_lines(lines[50:], "replay")
    marks[args.lines] = rss_mib()
    growth = (marks[args.lines] - marks[50]) / marks[50]
    made = len(list(out.glob("*.png")))
    print(f"{made} images replayed ({args.steps} steps each, demo model)")
    print(f"  RSS after 50: {marks[50]:.1f} MiB, after {args.lines}: {marks[args.lines]:.1f} MiB, "
          f"growth {growth:+.1%}  (goal < 5 %)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
