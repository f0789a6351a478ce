"""Small durable-file helpers shared by the log and the image writer (stdlib only)."""

from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


@contextlib.contextmanager
def locked(fd: int):
    """Hold an exclusive advisory lock on an open file descriptor (POSIX flock)."""
    if fcntl is not None:
        fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        yield
    finally:
        if fcntl is not None:
            fcntl.flock(fd, fcntl.LOCK_UN)


@contextlib.contextmanager
def directory_lock(folder: Path, timeout: float = 30.0):
    """Exclusive lock on `folder/.dreamshell.lock`, across processes."""
    lock_path = folder / ".dreamshell.lock"
    if fcntl is not None:
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            with locked(fd):
                yield
        finally:
            os.close(fd)
        return
    deadline = time.monotonic() + timeout  # fallback: an O_EXCL lock file
    while True:
        try:
            fd = os.open(lock_path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            break
        except FileExistsError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{lock_path} is held by another process; remove it if none runs")
            time.sleep(0.01)
    try:
        yield
    finally:
        os.close(fd)
        os.unlink(lock_path)


def append_line(path: Path, line: str) -> None:
    """Append one line with a single write under a lock, then fsync: no torn or interleaved lines.

    Whole or nothing: if the write or the fsync fails (a full disk), the file is cut back to its size
    before the write and the OSError is raised."""
    data = (line.rstrip("\n") + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        with locked(fd):
            before = os.fstat(fd).st_size
            try:
                view = memoryview(data)
                while view:
                    written = os.write(fd, view)
                    view = view[written:]
                os.fsync(fd)
            except OSError:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, before)
                    os.fsync(fd)
                raise
    finally:
        os.close(fd)


TEMP_PREFIX = ".tmp-"
TEMP_SUFFIX = ".part"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except (PermissionError, OSError):
        return True
    return True


def stale_temp_files(folder: Path) -> list[Path]:
    """Temporary files in folder left by processes that no longer run (a kill -9, a crash)."""
    stale = []
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return stale
    for entry in entries:
        name = entry.name
        if not (name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX)):
            continue
        try:
            pid = int(name[len(TEMP_PREFIX):].split("-", 1)[0])
        except ValueError:
            continue
        if pid != os.getpid() and not _pid_alive(pid):
            stale.append(Path(entry.path))
    return stale


def write_new_file(tmp_dir: Path, data: bytes) -> Path:
    """Write data to a fresh temporary file in tmp_dir and fsync it; the caller links it into place."""
    fd = None
    for attempt in range(1000):
        tmp = tmp_dir / f"{TEMP_PREFIX}{os.getpid()}-{time.monotonic_ns()}-{attempt}{TEMP_SUFFIX}"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            break
        except FileExistsError:
            continue
    if fd is None:
        raise OSError(f"cannot create a temporary file in {tmp_dir}")
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    except BaseException:
        os.close(fd)
        fd = None
        with contextlib.suppress(OSError):
            tmp.unlink()  # a full disk leaves no empty or partial .part behind
        raise
    finally:
        if fd is not None:
            os.close(fd)
    return tmp


def place_without_overwrite(tmp: Path, final: Path) -> None:
    """Move tmp to final; raise FileExistsError instead of replacing an existing file."""
    try:
        os.link(tmp, final)  # atomic, and fails if final exists
    except (AttributeError, NotImplementedError, PermissionError):
        if final.exists():
            raise FileExistsError(final) from None
        os.replace(tmp, final)  # only under directory_lock, so nobody else races us here
        return
    os.unlink(tmp)
