"""Output file names `NNNNNN.SEED.png` and `NNNNNN.SEED.upscale[-01].png` (stdlib only).

A number is never reused and a file never overwritten, also with several processes writing to
one folder: the number is chosen and the file linked into place under a directory lock, from a
fully written temporary file (so a crash never leaves a half image under its final name).
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Callable

from .fileops import directory_lock, place_without_overwrite, write_new_file

_NUMBERED = re.compile(r"^(\d{6,})\.")


def next_number(folder: Path) -> int:
    """One more than the highest NNNNNN. prefix in folder (0 for an empty folder)."""
    highest = -1
    with os.scandir(folder) as it:
        for entry in it:
            m = _NUMBERED.match(entry.name)
            if m:
                highest = max(highest, int(m.group(1)))
    return highest + 1


OnPlaced = Callable[[Path], None]


def _placed(final: Path, on_placed: OnPlaced | None) -> Path:
    """Run on_placed (the log line) while the directory lock is still held; undo the file if it fails."""
    if on_placed is not None:
        try:
            on_placed(final)
        except BaseException:
            final.unlink(missing_ok=True)
            raise
    return final


def save_numbered(folder: Path, seed: int, data: bytes, suffix: str = ".png",
                  on_placed: OnPlaced | None = None, floor: Callable[[], int] | None = None) -> Path:
    """Write data as folder/NNNNNN.SEED.png with the next free number; return the path.

    on_placed(path) runs under the directory lock right after the file is in place (the output folder
    appends the log line there, so no other process ever sees the image without its line). floor(),
    also called under the lock, is the lowest number allowed (one above every number the folder's log
    names: a deleted image's number is not given again)."""
    folder.mkdir(parents=True, exist_ok=True)
    tmp = write_new_file(folder, data)
    try:
        with directory_lock(folder):
            number = max(next_number(folder), floor() if floor is not None else 0)
            while True:
                final = folder / f"{number:06d}.{seed}{suffix}"
                try:
                    place_without_overwrite(tmp, final)
                except FileExistsError:
                    number += 1
                    continue
                return _placed(final, on_placed)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_derived(original: Path, tag: str, data: bytes, folder: Path | None = None,
                 on_placed: OnPlaced | None = None) -> Path:
    """Write data beside `original` as STEM.TAG.png, then STEM.TAG-01.png, ... never overwriting."""
    folder = folder or original.parent
    folder.mkdir(parents=True, exist_ok=True)
    stem = original.name[:-4] if original.name.lower().endswith(".png") else original.stem
    tmp = write_new_file(folder, data)
    try:
        with directory_lock(folder):
            for n in range(0, 10000):
                name = f"{stem}.{tag}.png" if n == 0 else f"{stem}.{tag}-{n:02d}.png"
                try:
                    place_without_overwrite(tmp, folder / name)
                except FileExistsError:
                    continue
                return _placed(folder / name, on_placed)
        raise FileExistsError(f"no free name for {stem}.{tag}-NN.png in {folder}")
    finally:
        if tmp.exists():
            tmp.unlink()
