"""The shape of a dream_log.txt line, in one place (stdlib only): `PATH: COMMAND`, where PATH ends in an
image file name of ours, `NNNNNN.SEED[.upscale[-NN]].png`, and a comment is what our writer writes as
one, `# text`. The output folder's repair, `--resume` and the parser's `strip_log_prefix` all split a
line here, so a folder whose path holds `": "` or starts with `#` reads back as it was written.
"""

from __future__ import annotations

import re

COMMENT = "# "          # how the log writer starts a comment line (store/dreamlog.append_comment)

# an image file name the log gives a line of its own: NNNNNN.SEED.png, NNNNNN.SEED.upscale[-NN].png
IMAGE_NAME = r"\d{6,}\.\d+(?:\.upscale(?:-\d{2,})?)?\.png"
IMAGE_FILE = re.compile(rf"^{IMAGE_NAME}$")
# the first folder path (any characters, ': ' and '#' included) that ends in one of our names and ': '
_IMAGE_LINE = re.compile(rf"^(?P<path>(?:[^\n]*?[/\\])?{IMAGE_NAME}): (?P<command>.*)$", re.S)


def is_log_comment(line: str) -> bool:
    """A line our writer wrote as a comment (`# grid ...`)."""
    return line.startswith(COMMENT)


def split_log_line(line: str) -> tuple[str, str] | None:
    """(image path, command) of a log line of one of our images; None for a comment or any other line."""
    line = line.rstrip("\r\n")
    if is_log_comment(line):
        return None
    m = _IMAGE_LINE.match(line)
    return (m.group("path"), m.group("command")) if m else None


GRID_FILE = re.compile(r"^\d{6,}\.\d+\.grid(?:-\d{2,})?\.png$")
_GRID_COMMENT = re.compile(r"^# grid (?P<path>.*?\d{6,}\.\d+\.grid(?:-\d{2,})?\.png) of (?P<count>\d+) images: "
                           r"(?P<command>.*)$", re.S)


def grid_comment(path, count: int, command: str) -> str:
    """The text of a grid's comment line (the writer adds the leading '# ')."""
    return f"grid {path} of {count} images: {command}"


def split_grid_comment(line: str) -> tuple[str, int, str] | None:
    """(grid path, image count, command) of a grid's comment line, else None."""
    m = _GRID_COMMENT.match(line.rstrip("\r\n"))
    return (m.group("path"), int(m.group("count")), m.group("command")) if m else None


def image_number(name: str) -> int | None:
    """The NNNNNN of one of our file names (the image, its upscale, grid or original), else None."""
    m = re.match(r"^(\d{6,})\.\d+\.", name)
    return int(m.group(1)) if m else None
