"""dream_log.txt: one line per image, appended durably the moment it is saved; read back for replay.

Line shape (the original shell's v1.15): `outputs/000012.3355519391.png: "prompt" -s 60 -S 3355519391 ...`
stdlib only.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import BinaryIO

from ..line.errors import CommandFileError
from ..line.limits import MAX_COMMAND_FILE_BYTES, MAX_LINE_CHARS
from ..line.logline import COMMENT
from ..line.parser import is_comment, strip_log_prefix
from ..line.safetext import shorten
from .fileops import append_line

LOG_NAME = "dream_log.txt"


def display_path(path: Path) -> str:
    """The path as the log writes it: relative to the working directory when below it (and then with a
    leading ./ where it would start with '#', so that no image line reads as a comment)."""
    try:
        shown = os.path.relpath(path) if Path(path).resolve().is_relative_to(Path.cwd().resolve()) else str(path)
    except ValueError:  # another drive on Windows
        shown = str(path)
    return "./" + shown if shown.startswith("#") else shown


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
    append_line(log_path, COMMENT + text.replace("\n", " "))


def read_commands(path: Path) -> list[tuple[int, str]]:
    """(line number, command) for each line of a log or command file; comments and blanks skipped,
    a leading `path: ` removed, `!` commands kept as they are.

    The whole file is checked before anything runs (a regular file, at most MAX_COMMAND_FILE_BYTES,
    UTF-8 text without NUL bytes, lines of at most MAX_LINE_CHARS): else CommandFileError.
    """
    label = shorten(str(path), 120)
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise CommandFileError(f"{label}: no such file") from None
    except OSError as e:
        raise CommandFileError(f"{label}: cannot be read ({e.strerror or e})") from None
    if stat.S_ISDIR(info.st_mode):
        raise CommandFileError(f"{label} is a folder, not a command file; give a file such as "
                               "outputs/dream_log.txt")
    if not stat.S_ISREG(info.st_mode):
        raise CommandFileError(f"{label} is not a regular file (a device, pipe or socket); "
                               "give a text file of commands")
    _check_size(info.st_size, label)
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_COMMAND_FILE_BYTES + 1)
    except OSError as e:
        raise CommandFileError(f"{label}: cannot be read ({e.strerror or e})") from None
    return commands_from_bytes(data, label)


def read_command_stream(stream: BinaryIO, label: str = "stdin") -> list[tuple[int, str]]:
    """read_commands for a byte stream (`--from_file -`), with the same checks and limits."""
    return commands_from_bytes(stream.read(MAX_COMMAND_FILE_BYTES + 1), label)


def _check_size(size: int, label: str) -> None:
    if size > MAX_COMMAND_FILE_BYTES:
        raise CommandFileError(f"{label} is {_megabytes(size)}; a command file is at most "
                               f"{_megabytes(MAX_COMMAND_FILE_BYTES)} (split it)")


def _megabytes(size: int) -> str:
    return f"{size / 2**20:.0f} MB" if size >= 2**20 else f"{size} bytes"


def commands_from_bytes(data: bytes, label: str) -> list[tuple[int, str]]:
    """The commands in a command file's bytes, after the binary, encoding and length checks."""
    if len(data) > MAX_COMMAND_FILE_BYTES:
        raise CommandFileError(f"{label} is over {_megabytes(MAX_COMMAND_FILE_BYTES)}; a command file "
                               f"is at most {_megabytes(MAX_COMMAND_FILE_BYTES)} (split it)")
    nul = data.find(b"\0")
    if nul >= 0:
        line = data.count(b"\n", 0, nul) + 1
        raise CommandFileError(f"{label} is binary (a NUL byte on line {line}), "
                               "not a text file of commands")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data.count(b"\n", 0, e.start) + 1
        raise CommandFileError(f"{label} is not UTF-8 text (byte 0x{data[e.start]:02x} on line {line}); "
                               "command files are UTF-8: save it as UTF-8") from None
    out = []
    for number, raw in enumerate(text.removeprefix("\ufeff").split("\n"), 1):
        line = raw.strip()
        if len(line) > MAX_LINE_CHARS:
            raise CommandFileError(f"{label}: line {number} is {len(line)} characters long; a command "
                                   f"is at most {MAX_LINE_CHARS} (is this a command file?)")
        if line and not is_comment(line):
            out.append((number, strip_log_prefix(line).strip()))
    return out


def read_command_source(source: str) -> list[tuple[int, str]]:
    """`--from_file FILE|-`: the file's (or stdin's) lines, checked whole first (CommandFileError)."""
    if source == "-":
        import sys
        return read_command_stream(sys.stdin.buffer, "stdin")
    return read_commands(Path(source))
