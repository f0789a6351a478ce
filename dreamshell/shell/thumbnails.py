"""Images in the terminal: kitty graphics, iTerm2 inline images, sixel and 24-bit half-blocks.

PIL + stdlib only (never torch). Every encoder takes a PIL image and a height in terminal rows,
keeps the aspect (cells assumed twice as tall as wide) and returns text that, printed, leaves the
cursor at the start of the line below the picture. `detect_protocol` picks what the terminal can show.

No library was used: term-image pins pillow<11 (this project needs pillow>=10 and ships with 13) and
textual-image needs Python>=3.12 from 0.13 on, has no iTerm2 encoder and queries the terminal when
imported; the encoders below are a few dozen lines each.
"""

from __future__ import annotations

import base64
import io
import os
import re
import sys

from PIL import Image

PROTOCOLS = ("kitty", "iterm", "sixel", "blocks", "off")
DEFAULT_ROWS = 12
CELL_PX = (10, 20)          # assumed cell size in pixels (w, h) when the terminal does not say
KITTY_CHUNK = 4096           # the kitty protocol's largest payload per escape
ESC = "\x1b"
ST = ESC + "\\"
UPPER_HALF = "\u2580"        # ▀: foreground paints the top half, background the bottom half


def cell_size(image: Image.Image, rows: int, max_cols: int | None = None) -> tuple[int, int]:
    """(columns, rows) a picture of `rows` text rows takes with its aspect kept (2:1 cells);
    fewer rows when it would be wider than max_cols."""
    rows = max(1, int(rows))
    aspect = image.width / max(1, image.height)
    cols = max(1, round(rows * 2 * aspect))
    if max_cols is not None and cols > max_cols:
        cols = max(1, int(max_cols))
        rows = max(1, round(cols / (2 * aspect)))
    return cols, rows


def _fit_pixels(image: Image.Image, rows: int, cell_px: tuple[int, int]) -> Image.Image:
    """The image scaled to fill `rows` rows of cell_px cells (aspect kept), in RGB."""
    height = rows * cell_px[1]
    width = max(1, round(height * image.width / max(1, image.height)))
    return image.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)


def _png_base64(image: Image.Image) -> str:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return base64.standard_b64encode(buf.getvalue()).decode("ascii")


# ----- kitty graphics protocol (https://sw.kovidgoyal.net/kitty/graphics-protocol/)

def render_kitty(image: Image.Image, rows: int = DEFAULT_ROWS, max_cols: int | None = None,
                 cell_px: tuple[int, int] = CELL_PX) -> str:
    """A PNG sent in <= 4096-byte base64 chunks, shown in cols x rows cells (q=2: no replies)."""
    cols, rows = cell_size(image, rows, max_cols)
    data = _png_base64(_fit_pixels(image, rows, cell_px))
    chunks = [data[i:i + KITTY_CHUNK] for i in range(0, len(data), KITTY_CHUNK)] or [""]
    out = []
    for i, chunk in enumerate(chunks):
        more = int(i < len(chunks) - 1)
        keys = f"a=T,f=100,q=2,c={cols},r={rows},m={more}" if i == 0 else f"m={more}"
        out.append(f"{ESC}_G{keys};{chunk}{ST}")
    return "".join(out) + "\n"


# ----- iTerm2 inline images (https://iterm2.com/documentation-images.html)

def render_iterm(image: Image.Image, rows: int = DEFAULT_ROWS, max_cols: int | None = None,
                 cell_px: tuple[int, int] = CELL_PX) -> str:
    """OSC 1337 File=inline=1 with the PNG in base64, `rows` cells high, aspect preserved."""
    _, rows = cell_size(image, rows, max_cols)
    data = _png_base64(_fit_pixels(image, rows, cell_px))
    size = len(base64.standard_b64decode(data))
    return f"{ESC}]1337;File=inline=1;size={size};height={rows};preserveAspectRatio=1:{data}\a\n"


# ----- sixel (DEC VT3xx; https://vt100.net/docs/vt3xx-gp/chapter14.html)

_SIXEL_TABLE = bytes(range(63, 127)) + bytes(192)   # translate(): bit pattern 0..63 -> '?'..'~'
_RUN = re.compile(rb"(.)\1{3,}")


def _sixel_run(match: re.Match) -> bytes:
    return b"!%d%s" % (len(match.group(0)), match.group(1))


def _sixel_band(pixels: bytes, width: int, top: int, height: int) -> bytes:
    """One band of six pixel rows: for each colour in it, '#n' and its run-length coded columns."""
    columns: dict[int, bytearray] = {}
    for r in range(min(6, height - top)):
        row = pixels[(top + r) * width:(top + r + 1) * width]
        bit = 1 << r
        for x, colour in enumerate(row):
            col = columns.get(colour)
            if col is None:
                col = columns[colour] = bytearray(width)
            col[x] |= bit
    lines = []
    for colour, col in sorted(columns.items()):
        data = bytes(col).translate(_SIXEL_TABLE).rstrip(b"?")
        lines.append(b"#%d" % colour + _RUN.sub(_sixel_run, data))
    return b"$".join(lines)


def render_sixel(image: Image.Image, rows: int = DEFAULT_ROWS, max_cols: int | None = None,
                 cell_px: tuple[int, int] = CELL_PX) -> str:
    """DCS q ... ST: the image at rows x cell height pixels, quantized to <= 256 colours."""
    _, rows = cell_size(image, rows, max_cols)
    fitted = _fit_pixels(image, rows, cell_px)
    indexed = fitted.quantize(colors=256, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    palette = indexed.getpalette() or []
    pixels = indexed.tobytes()
    used = sorted(set(pixels))
    width, height = indexed.size
    head = [b'\x1bPq"1;1;%d;%d' % (width, height)]
    for i in used:
        r, g, b = palette[3 * i:3 * i + 3]
        head.append(b"#%d;2;%d;%d;%d" % (i, round(r * 100 / 255), round(g * 100 / 255), round(b * 100 / 255)))
    bands = [_sixel_band(pixels, width, top, height) for top in range(0, height, 6)]
    return (b"".join(head) + b"-".join(bands) + b"\x1b\\").decode("ascii") + "\n"


# ----- 24-bit Unicode half-blocks (work in any truecolor terminal, tmux included)

def _block_pixels(image: Image.Image, rows: int, max_cols: int | None) -> tuple[int, int, list]:
    cols, rows = cell_size(image, rows, max_cols)
    small = image.convert("RGB").resize((cols, rows * 2), Image.Resampling.BOX)
    raw = small.tobytes()
    return cols, rows, list(zip(raw[0::3], raw[1::3], raw[2::3]))


def block_fragments(image: Image.Image, rows: int = DEFAULT_ROWS,
                    max_cols: int | None = None) -> list[tuple[str, str]]:
    """prompt_toolkit style fragments: ('fg:#rrggbb bg:#rrggbb', '▀...') runs, ('', '\\n') between rows."""
    cols, rows, px = _block_pixels(image, rows, max_cols)
    fragments: list[tuple[str, str]] = []
    for y in range(rows):
        if y:
            fragments.append(("", "\n"))
        top, bottom = px[2 * y * cols:(2 * y + 1) * cols], px[(2 * y + 1) * cols:(2 * y + 2) * cols]
        for t, b in zip(top, bottom):
            style = "fg:#%02x%02x%02x bg:#%02x%02x%02x" % (*t, *b)
            if fragments and fragments[-1][0] == style:
                fragments[-1] = (style, fragments[-1][1] + UPPER_HALF)
            else:
                fragments.append((style, UPPER_HALF))
    return fragments


def render_blocks(image: Image.Image, rows: int = DEFAULT_ROWS, max_cols: int | None = None) -> str:
    """ANSI 24-bit colour half-blocks: each text row shows two pixel rows; colours reset at line ends."""
    cols, rows, px = _block_pixels(image, rows, max_cols)
    lines = []
    for y in range(rows):
        top, bottom = px[2 * y * cols:(2 * y + 1) * cols], px[(2 * y + 1) * cols:(2 * y + 2) * cols]
        parts, last = [], None
        for t, b in zip(top, bottom):
            if (t, b) != last:
                parts.append(f"{ESC}[38;2;{t[0]};{t[1]};{t[2]};48;2;{b[0]};{b[1]};{b[2]}m")
                last = (t, b)
            parts.append(UPPER_HALF)
        lines.append("".join(parts) + f"{ESC}[0m\n")
    return "".join(lines)


def render(image: Image.Image, protocol: str, rows: int = DEFAULT_ROWS, max_cols: int | None = None) -> str:
    """The picture as text for `protocol` (one of PROTOCOLS); "" for off."""
    if protocol == "off":
        return ""
    encoders = {"kitty": render_kitty, "iterm": render_iterm, "sixel": render_sixel, "blocks": render_blocks}
    if protocol not in encoders:
        raise ValueError(f"unknown preview protocol '{protocol}'; use one of {', '.join(PROTOCOLS)}")
    return encoders[protocol](image, rows, max_cols)


# ----- detection

def _isatty(stream) -> bool:
    try:
        return stream is not None and stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False


def query_sixel_support(fd_in: int, fd_out: int, timeout: float = 0.2) -> bool:
    """Ask the terminal for its primary device attributes (ESC [ c); sixel is attribute 4.
    The tty is put in raw mode for the query and restored afterwards."""
    try:
        import select
        import termios
        import tty
    except ImportError:  # Windows
        return False
    import time
    try:
        saved = termios.tcgetattr(fd_in)
    except termios.error:
        return False
    reply = b""
    try:
        tty.setraw(fd_in, termios.TCSANOW)
        os.write(fd_out, b"\x1b[c")
        deadline = time.monotonic() + timeout
        while not reply.endswith(b"c"):
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd_in], [], [], left)[0]:
                break
            chunk = os.read(fd_in, 64)
            if not chunk:
                break
            reply += chunk
    except OSError:
        return False
    finally:
        termios.tcsetattr(fd_in, termios.TCSADRAIN, saved)
    match = re.search(rb"\x1b\[\?([\d;]*)c", reply)
    return bool(match) and b"4" in match.group(1).split(b";")


def detect_protocol(env=None, stdout=None, stdin=None, query_sixel: bool = False) -> str:
    """kitty, iterm, sixel, blocks or off for this terminal: off when stdout is not a tty, blocks
    inside tmux/screen (they do not pass graphics through), sixel only if asked to query the tty."""
    env = os.environ if env is None else env
    stdout = sys.stdout if stdout is None else stdout
    stdin = sys.stdin if stdin is None else stdin
    if not _isatty(stdout) or env.get("TERM") == "dumb":
        return "off"
    term = env.get("TERM", "")
    if env.get("TMUX") or term.startswith(("screen", "tmux")):
        return "blocks"
    if term == "xterm-kitty" or env.get("KITTY_WINDOW_ID") or term == "xterm-ghostty":
        return "kitty"
    if env.get("TERM_PROGRAM") in ("iTerm.app", "WezTerm"):
        return "iterm"
    if query_sixel and _isatty(stdin):
        try:
            stdout.flush()
            if query_sixel_support(stdin.fileno(), stdout.fileno()):
                return "sixel"
        except (AttributeError, ValueError, OSError):
            pass
    return "blocks"
