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
from pathlib import Path

from ..line.errors import UserError
from ..line.formatter import format_request
from ..line.logline import (
    GRID_FILE,
    IMAGE_FILE,
    grid_comment,
    image_number,
    split_grid_comment,
    split_log_line,
)
from ..line.safetext import shorten
from ..weights.files import open_regular
from ..weights.library import RecipeExtras
from .dreamlog import LOG_NAME, append_comment, append_log_line
from .fileops import directory_lock, stale_temp_files
from .naming import save_derived, save_numbered
from .pngmeta import ImageMeta, png_bytes, read_recipe


class OutputError(OSError, UserError):
    """The folder cannot take the file (full, read-only, not a folder); str() is the one line."""


def describe_os_error(folder: Path, e: OSError) -> str:
    """One line that says what stopped a write and what to do about it."""
    folder = shorten(str(folder), 120)
    if e.errno == errno.ENAMETOOLONG:
        return f"cannot write to {folder}: a name in the path is too long for the file system"
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
        self._log_read = 0          # bytes of the log whose image numbers are counted in _log_highest
        self._log_highest = -1      # the highest image number the log names

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
        """Give each image (and grid) found without its log line (or `# grid` comment) that line back,
        from its own recipe chunk; a file whose recipe cannot be read is left as it is, with a note (it
        never stops the folder: a copied or damaged PNG named like ours is not ours to fix)."""
        logged, grids = self._cut_torn_line_and_read_names()
        notes = []
        for name in sorted(os.listdir(self.folder)):
            is_image = IMAGE_FILE.match(name) and name not in logged
            is_grid = GRID_FILE.match(name) and name not in grids
            if not (is_image or is_grid):
                continue
            path = self.folder / name
            try:
                request = read_recipe(path)
                command = format_request(request)
            except Exception as e:   # any unreadable recipe (UserError, a reader's bug) is the same note
                why = str(e) if isinstance(e, UserError) else f"{type(e).__name__}: {e}"
                notes.append(f"{path} has no log line and its recipe cannot be read ({shorten(why, 200)}); "
                             "left as it is")
                continue
            if is_grid:
                append_comment(self.log_path, grid_comment(path, request.iterations, command))
                notes.append(f"{path} had no '# grid' log line (the run that made it was stopped); it is noted "
                             "again from its own recipe")
                continue
            append_log_line(self.log_path, path, command)
            notes.append(f"{path} had no log line (the run that made it was stopped); it is logged again "
                         "from its own recipe")
        return notes

    def _cut_torn_line_and_read_names(self) -> tuple[set[str], set[str]]:
        """Names of the images the log has lines for and of the grids it has comments for; a last line
        cut short by a kill is removed."""
        try:
            with open_regular(self.log_path) as f:   # a FIFO in its place is refused, not waited on
                data = f.read()
        except FileNotFoundError:
            return set(), set()
        if data and not data.endswith(b"\n"):
            keep = data.rfind(b"\n") + 1
            os.truncate(self.log_path, keep)
            data = data[:keep]
        names, grids = set(), set()
        for line in data.decode("utf-8", "replace").splitlines():
            parts = split_log_line(line)
            if parts is not None:
                name = os.path.basename(parts[0].strip())
                names.add(name)
                number = image_number(name)
                if number is not None and number > self._log_highest:
                    self._log_highest = number
                continue
            grid = split_grid_comment(line)
            if grid is not None:
                grids.add(os.path.basename(grid[0].strip()))
        self._log_read = len(data)
        return names, grids

    def _count_numbers(self, data: bytes) -> None:
        for line in data.decode("utf-8", "replace").splitlines():
            parts = split_log_line(line)
            number = image_number(os.path.basename(parts[0])) if parts is not None else None
            if number is not None and number > self._log_highest:
                self._log_highest = number

    def _lowest_free_number(self) -> int:
        """One above the highest image number the log names, reading only what was appended since the
        last call (the log only grows; a shorter log is read again from the start). Called under the
        folder's lock."""
        try:
            with open_regular(self.log_path) as f:
                size = os.fstat(f.fileno()).st_size
                if size < self._log_read:
                    self._log_read, self._log_highest = 0, -1
                f.seek(self._log_read)
                data = f.read(max(0, size - self._log_read))
        except OSError:   # no log yet (or not a file): the folder's own names decide
            return self._log_highest + 1
        whole = data[:data.rfind(b"\n") + 1]
        self._count_numbers(whole)
        self._log_read += len(whole)
        return self._log_highest + 1

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
                                 on_placed=self._log_line(command), floor=self._lowest_free_number)

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
        command = format_request(meta.request)
        note = (lambda path: append_comment(self.log_path, grid_comment(path, count, command))) if self.log else None
        with self._writing("; the grid is not saved"):
            return save_derived(first, "grid", png_bytes(image, meta), on_placed=note)

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
