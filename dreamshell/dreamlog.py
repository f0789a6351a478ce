"""dream_log.txt: one line per image, appended durably the moment it is saved; read back for replay.

Line shape (the original shell's v1.15): `outputs/000012.3355519391.png: "prompt" -s 60 -S 3355519391 ...`
stdlib only.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterator

from .fileops import append_line
from .parser import strip_log_prefix

LOG_NAME = "dream_log.txt"


def display_path(path: Path) -> str:
    """The path as the log writes it: relative to the working directory when below it."""
    try:
        return os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except ValueError:  # another drive on Windows
        return str(path)


def log_line(image_path: Path, command: str) -> str:
    return f"{display_path(image_path)}: {command}"


def append_log_line(log_path: Path, image_path: Path, command: str) -> str:
    """Append `image_path: command` to the log (one write, flushed and fsynced); return the line."""
    line = log_line(image_path, command)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    append_line(log_path, line)
    return line


def append_comment(log_path: Path, text: str) -> None:
    log_path.parent.mkdir(parents=True, exist_ok=True)
    append_line(log_path, "# " + text.replace("\n", " "))


def read_commands(path: Path) -> Iterator[tuple[int, str]]:
    """(line number, command) for each line of a log or command file; comments and blanks skipped,
    a leading `path: ` removed. `!` commands are yielded as they are."""
    with open(path, encoding="utf-8", errors="replace") as f:
        for number, raw in enumerate(f, 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            yield number, strip_log_prefix(line).strip()
