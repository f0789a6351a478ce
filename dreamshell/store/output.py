"""The output folder: the one owner of file names, recipe chunks and log lines (no torch).

Images, originals, grids and `!fix` results are all written here. Crash-consistent: a PNG is written
to a temporary file, linked under its final name and given its log line while the folder's lock is
held; a log line that cannot be written whole takes its image back out. After a kill -9 the next
`open()` removes the dead process's temporary files and gives any PNG found without a log line its
line back from its own recipe chunk, with a note.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
from pathlib import Path

from ..line.errors import UserError
from ..line.formatter import format_request
from ..weights.library import RecipeExtras
from .dreamlog import LOG_NAME, append_comment, append_log_line
from .fileops import directory_lock, stale_temp_files
from .naming import save_derived, save_numbered
from .pngmeta import ImageMeta, MetadataError, png_bytes, read_recipe

# files that carry their own log line: NNNNNN.SEED.png and NNNNNN.SEED.upscale[-NN].png
_LOGGED = re.compile(r"^\d{6,}\.\d+(?:\.upscale(?:-\d+)?)?\.png$")


class OutputError(OSError, UserError):
    """The folder cannot take the file (full, read-only, not a folder); str() is the one line."""


def describe_os_error(folder: Path, e: OSError) -> str:
    """One line that says what stopped a write and what to do about it."""
    if e.errno == errno.ENOSPC or e.errno == errno.EDQUOT:
        return f"no space left on the device of {folder}: free some space or write elsewhere with -o DIR"
    if e.errno in (errno.EACCES, errno.EPERM):
        return f"cannot write to {folder}: permission denied; write elsewhere with -o DIR"
    if e.errno == errno.EROFS:
        return f"cannot write to {folder}: the file system is read-only; write elsewhere with -o DIR"
    if e.errno in (errno.ENOTDIR, errno.EEXIST):
        return f"cannot write to {folder}: it is not a folder; give -o a folder"
    if e.errno == errno.ENOENT:
        return f"cannot write to {folder}: a part of the path does not exist"
    return f"cannot write to {folder}: {e.strerror or e}"


class OutputFolder:
    """One folder of images and its dream_log.txt."""

    def __init__(self, folder: Path, log: bool = True):
        self.folder = Path(folder).expanduser()
        self.log = log
        self._opened = False

    @property
    def log_path(self) -> Path:
        return self.folder / LOG_NAME

    # ----- start

    def open(self) -> list[str]:
        """Make the folder if needed and repair what a killed process left; return notes for the user."""
        if self._opened:
            return []
        with self._writing():
            self.folder.mkdir(parents=True, exist_ok=True)
            notes = self._repair()
        self._opened = True
        return notes

    def _repair(self) -> list[str]:
        notes = []
        with directory_lock(self.folder):
            removed = 0
            for tmp in stale_temp_files(self.folder):
                with contextlib.suppress(OSError):
                    tmp.unlink()
                    removed += 1
            if removed:
                notes.append(f"{self.folder}: removed {removed} unfinished temporary file(s) of a stopped run")
            if self.log:
                notes += self._relog_unlogged()
        return notes

    def _relog_unlogged(self) -> list[str]:
        logged = self._cut_torn_line_and_read_names()
        notes = []
        for name in sorted(n for n in os.listdir(self.folder) if _LOGGED.match(n) and n not in logged):
            path = self.folder / name
            try:
                command = format_request(read_recipe(path))
            except (MetadataError, ValueError) as e:
                notes.append(f"{path} has no log line and its recipe cannot be read ({e}); left as it is")
                continue
            append_log_line(self.log_path, path, command)
            notes.append(f"{path} had no log line (the run that made it was stopped); it is logged again "
                         "from its own recipe")
        return notes

    def _cut_torn_line_and_read_names(self) -> set[str]:
        """Names of the images the log has lines for; a last line cut short by a kill is removed."""
        try:
            data = self.log_path.read_bytes()
        except FileNotFoundError:
            return set()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            os.truncate(self.log_path, keep)
            data = data[:keep]
        names = set()
        for line in data.decode("utf-8", "replace").splitlines():
            head, sep, _ = line.partition(": ")
            if sep and not line.startswith("#"):
                names.add(os.path.basename(head.strip()))
        return names

    # ----- writing

    @contextlib.contextmanager
    def _writing(self, what: str = ""):
        try:
            yield
        except OutputError:
            raise
        except OSError as e:
            raise OutputError(describe_os_error(self.folder, e) + what) from None

    def _log_line(self, command: str):
        if not self.log:
            return None
        return lambda path: append_log_line(self.log_path, path, command)

    def save_image(self, image, meta: ImageMeta) -> Path:
        """The image as NNNNNN.SEED.png with its chunks and its log line; nothing half-written."""
        self.open()
        command = meta.command
        with self._writing(f"; the image is not saved (its command: {command[:200]})"):
            return save_numbered(self.folder, meta.request.seed, png_bytes(image, meta),
                                 on_placed=self._log_line(command))

    def save_result(self, result, extras: RecipeExtras, app_version: str) -> tuple[Path, str]:
        """One made image (run/types.ImageResult) with its recipe, and its original under --save_original:
        (the image's path, its canonical command). The one call every path saves an image with."""
        meta = ImageMeta(result.request, result.model_hash, app_version, tuple(result.postprocessing),
                         result.image_type, extras)
        path = self.save_image(result.image, meta)
        if result.original is not None:
            plain = result.request.with_(upscale=None, save_original=False)
            self.save_original(path, result.original, ImageMeta(plain, result.model_hash, app_version, (),
                                                                result.image_type, extras))
        return path, meta.command

    def save_original(self, upscaled: Path, image, meta: ImageMeta) -> Path:
        """The un-upscaled image beside the upscaled one (`--save_original`); not a log line of its own."""
        with self._writing("; the original is not saved"):
            return save_derived(upscaled, "original", png_bytes(image, meta))

    def save_grid(self, first: Path, image, meta: ImageMeta, count: int) -> Path:
        """A grid of a line's images beside its first image, noted in the log as a comment."""
        with self._writing("; the grid is not saved"):
            path = save_derived(first, "grid", png_bytes(image, meta))
            if self.log:
                append_comment(self.log_path, f"grid {path} of {count} images: {format_request(meta.request)}")
        return path

    def save_fix(self, source: Path, image, meta: ImageMeta | None) -> Path:
        """A post-processed copy of source (`!fix`), STEM.upscale[-NN].png; logged when it has a recipe."""
        self.open()
        if meta is None:
            with self._writing("; the result is not saved"):
                return save_derived(source, "upscale", _plain_png(image), folder=self.folder)
        command = format_request(meta.request)
        with self._writing("; the result is not saved"):
            return save_derived(source, "upscale", png_bytes(image, meta), folder=self.folder,
                                on_placed=self._log_line(command))


def compose_grid(images: list):
    """The images of one line side by side in a near-square grid (`-g`), on black."""
    from PIL import Image
    cols = int(len(images) ** 0.5 + 0.999)
    rows = -(-len(images) // cols)
    w, h = images[0].size
    grid = Image.new("RGB", (cols * w, rows * h), "black")
    for i, img in enumerate(images):
        grid.paste(img, ((i % cols) * w, (i // cols) * h))
    return grid


def _plain_png(image) -> bytes:
    import io
    buf = io.BytesIO()
    image.save(buf, "PNG")
    return buf.getvalue()
