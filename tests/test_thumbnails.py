"""Terminal image encoders and protocol detection (no torch): each sequence is decoded back and checked."""

import base64
import io
import math
import os
import re
import threading

import pytest
from PIL import Image

from dreamshell.shell import thumbnails as th

QUADRANTS = [(220, 40, 40), (40, 170, 60), (40, 70, 220), (240, 220, 40)]  # TL, TR, BL, BR


def quadrants(width=80, height=40) -> Image.Image:
    """Four flat colours, one per quadrant: every encoder must put each where it belongs."""
    img = Image.new("RGB", (width, height))
    for i, colour in enumerate(QUADRANTS):
        x0, y0 = (i % 2) * width // 2, (i // 2) * height // 2
        img.paste(colour, (x0, y0, x0 + width // 2, y0 + height // 2))
    return img


def noise(width=300, height=200) -> Image.Image:
    """Incompressible pixels, so the PNG needs many kitty chunks."""
    return Image.frombytes("RGB", (width, height), os.urandom(width * height * 3))


def close(a, b, tol=4):
    return all(abs(x - y) <= tol for x, y in zip(a, b))


# ----- kitty

KITTY = re.compile(r"\x1b_G([^;]*);([^\x1b]*)\x1b\\")


def test_kitty_chunks_decode_to_the_png_with_the_right_keys():
    img = noise()
    text = th.render(img, "kitty", rows=10)
    assert text.endswith("\x1b\\\n")
    seqs = KITTY.findall(text)
    assert "".join(f"\x1b_G{k};{p}\x1b\\" for k, p in seqs) + "\n" == text  # nothing else in between
    assert len(seqs) > 2
    keys = [dict(kv.split("=") for kv in k.split(",")) for k, _ in seqs]
    assert keys[0] == {"a": "T", "f": "100", "q": "2", "c": "30", "r": "10", "m": "1"}
    assert [k for k in keys[1:-1]] == [{"m": "1"}] * (len(seqs) - 2)
    assert keys[-1] == {"m": "0"}
    assert all(0 < len(p) <= 4096 for _, p in seqs)
    png = base64.standard_b64decode("".join(p for _, p in seqs))
    assert png.startswith(b"\x89PNG\r\n\x1a\n")
    shown = Image.open(io.BytesIO(png))
    assert shown.size == (300, 200)  # 10 rows x 20 px, aspect kept
    assert shown.tobytes() == th._fit_pixels(img, 10, th.CELL_PX).tobytes()


def test_kitty_single_chunk_is_final():
    seqs = KITTY.findall(th.render(Image.new("RGB", (8, 8), "red"), "kitty", rows=2))
    assert len(seqs) == 1 and seqs[0][0].endswith("m=0") and "c=4,r=2" in seqs[0][0]


# ----- iTerm2

def test_iterm_sequence_holds_the_image():
    text = th.render(quadrants(), "iterm", rows=6)
    m = re.fullmatch(r"\x1b\]1337;File=([^:]*):([A-Za-z0-9+/=]+)\x07\n", text)
    assert m
    args = dict(kv.split("=") for kv in m.group(1).split(";"))
    assert args["inline"] == "1" and args["height"] == "6" and args["preserveAspectRatio"] == "1"
    data = base64.standard_b64decode(m.group(2))
    assert int(args["size"]) == len(data)
    shown = Image.open(io.BytesIO(data)).convert("RGB")
    assert shown.size == (240, 120)
    assert close(shown.getpixel((60, 30)), QUADRANTS[0]) and close(shown.getpixel((180, 90)), QUADRANTS[3])


# ----- sixel

def decode_sixel(text: str):
    """A small sixel reader: (declared palette, {(x, y): rgb}, raster size, number of bands)."""
    assert text.startswith("\x1bPq") and text.endswith("\x1b\\\n")
    body = text[3:-3]
    m = re.match(r'"1;1;(\d+);(\d+)', body)
    size = (int(m.group(1)), int(m.group(2)))
    body = body[m.end():]
    palette, pixels = {}, {}
    x = band = 0
    colour = None
    for tok in re.finditer(r"#(\d+)(?:;2;(\d+);(\d+);(\d+))?|!(\d+)([?-~])|([?-~])|(\$)|(-)", body):
        if tok.group(1) is not None:
            colour = int(tok.group(1))
            if tok.group(2) is not None:
                palette[colour] = tuple(round(int(tok.group(i)) * 255 / 100) for i in (2, 3, 4))
            assert colour in palette, f"colour {colour} used before it is declared"
        elif tok.group(7) or tok.group(6):
            count, ch = (int(tok.group(5)), tok.group(6)) if tok.group(6) else (1, tok.group(7))
            bits = ord(ch) - 63
            for _ in range(count):
                for r in range(6):
                    if bits >> r & 1:
                        pixels[(x, band * 6 + r)] = palette[colour]
                x += 1
        elif tok.group(8):
            x = 0
        else:
            x, band = 0, band + 1
    assert "".join(t.group(0) for t in re.finditer(
        r"#(\d+)(?:;2;(\d+);(\d+);(\d+))?|!(\d+)([?-~])|([?-~])|(\$)|(-)", body)) == body
    return palette, pixels, size, band + 1


@pytest.mark.parametrize("rows", [1, 5, 12])
def test_sixel_is_a_dcs_with_declared_colours_and_a_band_per_six_pixel_rows(rows):
    img = quadrants()
    palette, pixels, size, bands = decode_sixel(th.render(img, "sixel", rows=rows))
    assert size == (rows * 40, rows * 20)
    assert bands == math.ceil(rows * 20 / 6)
    assert 4 <= len(palette) <= 256
    w, h = size
    assert len(pixels) == w * h  # every pixel painted once
    for i, colour in enumerate(QUADRANTS):
        centre = ((i % 2) * w // 2 + w // 4, (i // 2) * h // 2 + h // 4)
        assert close(pixels[centre], colour, tol=2)  # percent steps: at most 1.3/255 off


def test_sixel_bits_run_top_to_bottom_within_a_band():
    """Twenty one-pixel stripes of different colours: each decoded row has its own colour."""
    stripes = [(12 * i, 255 - 12 * i, (97 * i) % 256) for i in range(20)]
    img = Image.new("RGB", (40, 20))
    img.putdata([c for c in stripes for _ in range(40)])
    palette, pixels, size, bands = decode_sixel(th.render_sixel(img, rows=1))
    assert size == (40, 20) and bands == 4
    assert all(close(pixels[(x, y)], stripes[y], tol=2) for x in (0, 17, 39) for y in range(20))


def test_sixel_keeps_at_most_256_colours():
    palette, pixels, size, _ = decode_sixel(th.render(noise(120, 80), "sixel", rows=4))
    assert len(palette) <= 256 and len(pixels) == size[0] * size[1]


# ----- half-blocks

SGR = re.compile(r"\x1b\[38;2;(\d+);(\d+);(\d+);48;2;(\d+);(\d+);(\d+)m")


def block_cells(text: str):
    """[[(top rgb, bottom rgb), ...] per line] from the ANSI text."""
    lines = text.split("\n")
    assert lines[-1] == ""
    out = []
    for line in lines[:-1]:
        assert line.endswith("\x1b[0m")
        cells, current = [], None
        for tok in re.finditer(SGR.pattern + r"|(\u2580)|(\x1b\[0m)", line):
            if tok.group(7):
                cells.append(current)
            elif tok.group(1):
                v = tuple(int(tok.group(i)) for i in range(1, 7))
                current = (v[:3], v[3:])
        out.append(cells)
    return out


def test_blocks_have_the_right_rows_columns_and_colours():
    img = quadrants(80, 40)
    cells = block_cells(th.render(img, "blocks", rows=5))
    assert len(cells) == 5 and all(len(row) == 20 for row in cells)
    assert cells[0][0] == (QUADRANTS[0], QUADRANTS[0])
    assert cells[0][19] == (QUADRANTS[1], QUADRANTS[1])
    assert cells[4][0] == (QUADRANTS[2], QUADRANTS[2])
    assert cells[4][19] == (QUADRANTS[3], QUADRANTS[3])


def test_blocks_top_and_bottom_pixels_of_a_cell():
    img = Image.new("RGB", (2, 4))
    img.putdata([(255, 0, 0), (0, 0, 255), (0, 255, 0), (9, 9, 9),
                 (1, 2, 3), (4, 5, 6), (7, 8, 9), (10, 11, 12)])
    cells = block_cells(th.render_blocks(img, rows=2))
    assert cells == [[((255, 0, 0), (0, 255, 0)), ((0, 0, 255), (9, 9, 9))],
                     [((1, 2, 3), (7, 8, 9)), ((4, 5, 6), (10, 11, 12))]]


def test_block_fragments_match_the_ansi_text():
    img = quadrants(80, 40)
    frags = th.block_fragments(img, rows=5)
    rows, row = [], []
    for style, text in frags:
        if text == "\n":
            rows.append(row)
            row = []
            continue
        assert set(text) == {"\u2580"}
        m = re.fullmatch(r"fg:#([0-9a-f]{6}) bg:#([0-9a-f]{6})", style)
        rgb = [tuple(int(h[i:i + 2], 16) for i in (0, 2, 4)) for h in m.groups()]
        row += [tuple(rgb)] * len(text)
    rows.append(row)
    assert rows == block_cells(th.render_blocks(img, rows=5))


def test_max_cols_keeps_the_aspect():
    wide = Image.new("RGB", (400, 100))
    assert th.cell_size(wide, 12) == (96, 12)
    assert th.cell_size(wide, 12, max_cols=40) == (40, 5)
    cells = block_cells(th.render(wide, "blocks", rows=12, max_cols=40))
    assert len(cells) == 5 and len(cells[0]) == 40


def test_render_off_and_unknown():
    assert th.render(quadrants(), "off") == ""
    with pytest.raises(ValueError, match="kitty, iterm, sixel, blocks, off"):
        th.render(quadrants(), "png")


# ----- detection

class Stream:
    def __init__(self, tty: bool, fd: int = -1):
        self.tty, self.fd = tty, fd

    def isatty(self):
        return self.tty

    def fileno(self):
        return self.fd

    def flush(self):
        pass


TTY = Stream(True)


@pytest.mark.parametrize("env, expected", [
    ({"TERM": "xterm-kitty"}, "kitty"),
    ({"TERM": "xterm-256color", "KITTY_WINDOW_ID": "1"}, "kitty"),
    ({"TERM": "xterm-kitty", "TMUX": "/tmp/tmux-0/default,1,0"}, "blocks"),
    ({"TERM": "screen-256color", "KITTY_WINDOW_ID": "1"}, "blocks"),
    ({"TERM": "tmux-256color", "TERM_PROGRAM": "iTerm.app"}, "blocks"),
    ({"TERM": "xterm-256color", "TERM_PROGRAM": "iTerm.app"}, "iterm"),
    ({"TERM": "xterm-256color", "TERM_PROGRAM": "WezTerm"}, "iterm"),
    ({"TERM": "xterm-256color"}, "blocks"),
    ({}, "blocks"),
    ({"TERM": "dumb"}, "off"),
])
def test_detect_from_environment(env, expected):
    assert th.detect_protocol(env, stdout=TTY, stdin=Stream(False)) == expected


def test_detect_off_when_stdout_is_not_a_tty():
    assert th.detect_protocol({"TERM": "xterm-kitty"}, stdout=Stream(False), stdin=TTY) == "off"
    assert th.detect_protocol({"TERM": "xterm-kitty"}, stdout=io.StringIO(), stdin=TTY) == "off"


class FakeTerminal:
    """The far end of a pty: answers a DA1 query (ESC [ c) with `reply` (or nothing) and records input."""

    def __init__(self, reply: bytes | None):
        self.master, self.slave = os.openpty()
        self.reply, self.seen = reply, b""
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        try:
            while b"\x1b[c" not in self.seen:
                chunk = os.read(self.master, 64)
                if not chunk:
                    return
                self.seen += chunk
            if self.reply:
                os.write(self.master, self.reply)
        except OSError:
            return

    def close(self):
        os.close(self.slave)
        os.close(self.master)


@pytest.mark.parametrize("reply, expected", [
    (b"\x1b[?62;4;6;22c", "sixel"),          # xterm -ti vt340, foot, mlterm
    (b"\x1b[?64;1;2;6;9;15;22c", "blocks"),  # no attribute 4
    (None, "blocks"),                         # no answer: give up after the timeout
])
def test_sixel_query_on_a_pty(reply, expected):
    import termios
    term = FakeTerminal(reply)
    try:
        before = termios.tcgetattr(term.slave)
        tty = Stream(True, term.slave)
        assert th.detect_protocol({"TERM": "xterm-256color"}, stdout=tty, stdin=tty, query_sixel=True) == expected
        assert termios.tcgetattr(term.slave) == before  # raw mode undone
        term.thread.join(0.5)
        assert b"\x1b[c" in term.seen
    finally:
        term.close()


def test_no_query_unless_asked_or_without_a_tty_on_stdin():
    term = FakeTerminal(b"\x1b[?62;4c")
    try:
        tty = Stream(True, term.slave)
        assert th.detect_protocol({"TERM": "xterm"}, stdout=tty, stdin=tty) == "blocks"
        assert th.detect_protocol({"TERM": "xterm"}, stdout=tty, stdin=Stream(False, term.slave),
                                  query_sixel=True) == "blocks"
        term.thread.join(0.3)
        assert term.seen == b""
    finally:
        term.close()
