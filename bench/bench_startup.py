#!/usr/bin/env python
"""Seconds from launching `dreamshell` to the `dream>` prompt on screen (in a pseudo-terminal),
beside `python -c pass` as the floor, interleaved.

    python bench/bench_startup.py [--rounds 7]
"""

import argparse
import os
import pty
import select
import shutil
import statistics
import sys
import tempfile
import time


def time_until(argv, marker: bytes, timeout=30.0) -> float:
    env = dict(os.environ, DREAMSHELL_DATA_DIR=tempfile.mkdtemp(), TERM="xterm")
    t0 = time.perf_counter()
    pid, fd = pty.fork()
    if pid == 0:
        os.execvpe(argv[0], argv, env)
    seen = b""
    try:
        while time.perf_counter() - t0 < timeout:
            r, _, _ = select.select([fd], [], [], 0.05)
            if r:
                try:
                    chunk = os.read(fd, 4096)
                except OSError:
                    break
                if not chunk:
                    break
                seen += chunk
                if marker in seen:
                    return time.perf_counter() - t0
        return float("nan") if marker else time.perf_counter() - t0
    finally:
        try:
            os.kill(pid, 9)
        except ProcessLookupError:
            pass
        os.waitpid(pid, 0)
        os.close(fd)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=7)
    args = ap.parse_args()
    exe = shutil.which("dreamshell") or sys.exit("dreamshell is not installed in this environment")
    results = {"dreamshell to dream>": [], "python -c pass": []}
    for _ in range(args.rounds):
        results["dreamshell to dream>"].append(time_until([exe], b"dream>"))
        results["python -c pass"].append(time_until([sys.executable, "-c", "print('x', flush=True)"], b"x"))
    for k, v in results.items():
        print(f"  {k:22} median {statistics.median(v):.3f} s  (min {min(v):.3f}, max {max(v):.3f})")
    print("  goal: dreamshell to dream> < 0.5 s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
