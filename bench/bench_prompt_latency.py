#!/usr/bin/env python
"""Keystroke echo latency at the dream> prompt, idle and while images are being made.

Runs the shell in a pseudo-terminal on the demo model, types a line that keeps the model busy, then
types one character at a time and times until the terminal shows it. The same is measured with
nothing running, interleaved, for comparison. Goal: median and p95 under 50 ms while drawing.

    python bench/bench_prompt_latency.py [--keys 60]
"""

from __future__ import annotations

import argparse
import os
import pty
import select
import statistics
import sys
import tempfile
import time

BUSY_LINE = b"a red circle on a blue background -S 1 -s 1000 -n 50\r"


class Pty:
    def __init__(self, argv, cwd):
        env = dict(os.environ, DREAMSHELL_DATA_DIR=tempfile.mkdtemp(), TERM="xterm-256color",
                   COLUMNS="120", LINES="40")
        self.pid, self.fd = pty.fork()
        if self.pid == 0:
            os.chdir(cwd)
            os.execvpe(argv[0], argv, env)
        self.seen = b""

    def read_until(self, marker: bytes, timeout: float) -> float:
        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            r, _, _ = select.select([self.fd], [], [], 0.002)
            if r:
                chunk = os.read(self.fd, 65536)
                self.seen += chunk
                if marker in chunk or marker in self.seen[-len(chunk) - len(marker):]:
                    return time.perf_counter() - t0
        return float("nan")

    def drain(self, seconds: float) -> None:
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            r, _, _ = select.select([self.fd], [], [], 0.01)
            if r:
                self.seen += os.read(self.fd, 65536)

    def type_and_time(self, char: bytes) -> float:
        self.drain(0.05)
        self.seen = b""
        os.write(self.fd, char)
        return self.read_until(char, 5.0)

    def close(self):
        try:
            os.kill(self.pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(self.pid, 0)
        os.close(self.fd)


def measure(busy: bool, keys: int) -> list[float]:
    work = tempfile.mkdtemp()
    shell = Pty([sys.executable, "-m", "dreamshell", "--preview", "off"], work)
    try:
        shell.read_until(b"dream>", 30)
        if busy:
            os.write(shell.fd, BUSY_LINE)
            shell.read_until(b"step", 60)     # the toolbar shows steps: the model is drawing
            shell.drain(1.0)
        times = []
        for i in range(keys):
            times.append(shell.type_and_time(b"z"))
            if i % 20 == 19:
                os.write(shell.fd, b"\x15")   # clear the typed line now and then
        return times
    finally:
        shell.close()


def summary(name: str, times: list[float]) -> str:
    ms = sorted(t * 1000 for t in times if t == t)
    p95 = ms[min(len(ms) - 1, int(round(0.95 * (len(ms) - 1))))]
    return f"  {name:28} median {statistics.median(ms):6.1f} ms  p95 {p95:6.1f} ms  max {ms[-1]:6.1f} ms  (n={len(ms)})"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--keys", type=int, default=60)
    args = ap.parse_args()
    idle = measure(False, args.keys)
    busy = measure(True, args.keys)
    print(summary("idle prompt", idle))
    print(summary("while an image is drawn", busy))
    print("  goal: while drawing, median and p95 < 50 ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
