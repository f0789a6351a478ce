"""Reading a file a person named, whatever it is (stdlib only): only regular files are opened (a FIFO
waits for a writer forever, /dev/zero never ends), what is read whole has a size bound, and JSON has a
nesting bound. A name too long for the file system is an answer ("too long"), not an OSError."""

from __future__ import annotations

import errno
import json
import os
import stat
from pathlib import Path

MAX_JSON_DEPTH = 64              # nesting of a config or metadata JSON (real ones use fewer than 10)


class NotRegular(OSError):
    """The path is there but is not a regular file (a folder, FIFO, device or socket); str() says which."""


def kind_of(path) -> str:
    """What is at path (links followed): "file", "folder", "other" (FIFO, device, socket), "missing",
    or "too long" (the name is longer than the file system takes)."""
    try:
        mode = os.stat(Path(path).expanduser()).st_mode
    except OSError as e:
        if e.errno == errno.ENAMETOOLONG:
            return "too long"
        return "missing"
    except ValueError:   # an embedded NUL character
        return "missing"
    if stat.S_ISREG(mode):
        return "file"
    return "folder" if stat.S_ISDIR(mode) else "other"


def describe_kind(kind: str) -> str:
    """A few words for a kind_of answer that is not "file"."""
    return {"folder": "a folder", "other": "not a regular file (a FIFO, a device or a socket)",
            "missing": "no such file", "too long": "a name too long for the file system"}.get(kind, kind)


def open_regular(path, mode: str = "rb"):
    """The file at path opened for reading, only if it is a regular file (checked on the open file, so
    a FIFO never blocks and a file swapped for one after a check is still refused); NotRegular else."""
    path = Path(path)
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            what = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a FIFO, a device or a socket)"
            raise NotRegular(errno.EINVAL, f"{path} is {what}")
        if hasattr(os, "set_blocking"):
            os.set_blocking(fd, True)
        return os.fdopen(fd, mode)
    except BaseException:
        os.close(fd)
        raise


def read_bounded(path, limit: int) -> bytes:
    """The whole of a regular file of at most `limit` bytes; NotRegular or OSError(EFBIG) else."""
    with open_regular(path) as f:
        data = f.read(limit + 1)
    if len(data) > limit:
        raise OSError(errno.EFBIG, f"{path} is over {limit:,} bytes")
    return data


def json_depth_ok(value, limit: int = MAX_JSON_DEPTH) -> bool:
    """True when parsed JSON nests at most `limit` lists and objects deep (walked without recursion)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict):
            children = item.values()
        elif isinstance(item, list):
            children = item
        else:
            continue
        if depth > limit:
            return False
        stack.extend((child, depth + 1) for child in children if isinstance(child, (dict, list)))
    return True


class BadJSON(ValueError):
    """Text that is not JSON, or JSON nested deeper than MAX_JSON_DEPTH; str() says which."""


def load_json(text, limit: int = MAX_JSON_DEPTH):
    """json.loads with every failure one BadJSON (a RecursionError from deep nesting included) and a
    nesting bound, so code walking the result never recurses without end."""
    try:
        value = json.loads(text)
    except RecursionError:
        raise BadJSON(f"JSON nested deeper than {limit} levels") from None
    except (ValueError, TypeError) as e:
        raise BadJSON(f"not JSON ({str(e)[:120]})") from None
    if not json_depth_ok(value, limit):
        raise BadJSON(f"JSON nested deeper than {limit} levels")
    return value


def read_json_file(path, limit: int = 1 << 20):
    """A small JSON file (a diffusers config): a regular file of at most `limit` bytes, UTF-8, bounded
    nesting. OSError (NotRegular) or BadJSON."""
    data = read_bounded(path, limit)
    try:
        return load_json(data.decode("utf-8"))
    except UnicodeDecodeError:
        raise BadJSON("not UTF-8 JSON") from None
