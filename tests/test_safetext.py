"""User text shown safely: controls visible, long text shortened, never read as rich markup."""

import io

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from rich.console import Console

from dreamshell.line.safetext import (ELLIPSIS, MESSAGE_LIMIT, first_unsafe, for_markup, one_line, quoted, shorten,
                                 visible)

HOSTILE = [
    "\x1b]0;pwned\x07",                  # retitles the terminal when printed raw
    "a\nb\rc\td\x00e\x7f",
    "\x9b31m C1 CSI",
    "lone \udc80 surrogate",
    "line\u2028sep\u2029para",
    "bidi \u202eevil\u202c",
]


@pytest.mark.parametrize("text", HOSTILE)
def test_control_characters_are_made_visible(text):
    shown = visible(text)
    assert first_unsafe(shown) is None
    assert all(ch.isprintable() or ch == " " for ch in shown)


def test_escapes_name_the_character():
    assert visible("\x1b]0;t\x07") == "\\x1b]0;t\\x07"
    assert visible("a\nb\r\t") == "a\\nb\\r\\t"
    assert visible("\x9b") == "\\x9b"
    assert visible("\ud800") == "\\ud800"
    assert visible("\u2028") == "\\u2028"


def test_ordinary_unicode_is_kept():
    text = "東京の夜景, café, emoji 🐱‍👤, Ωmega, a cat's [hat] (x)1.2"
    assert visible(text) == text
    assert one_line(text) == text


def test_long_text_keeps_head_and_tail_within_the_limit():
    text = "HEAD" + "x" * 200_000 + "TAIL"
    short = shorten(text, 100)
    assert len(short) <= 100 and ELLIPSIS in short
    assert short.startswith("HEAD") and short.endswith("TAIL")
    assert len(one_line(text)) <= MESSAGE_LIMIT


def test_shortening_never_cuts_an_escape_in_half():
    text = "\x1b" * 1000
    short = shorten(text, 50)
    assert len(short) <= 50
    body = short.replace(ELLIPSIS, "")
    assert body == "\\x1b" * (len(body) // 4)


def test_quoted_tokens_are_short_and_quoted():
    q = quoted("z" * 5000)
    assert q.startswith("'") and q.endswith("'") and len(q) <= 62


def test_one_line_is_idempotent():
    for text in HOSTILE + ["y" * 5000]:
        assert one_line(one_line(text)) == one_line(text)


def _printed(text: str, markup: bool) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=80, soft_wrap=True, highlight=False, color_system=None)
    console.print(text, markup=markup, emoji=False)
    return buf.getvalue().rstrip("\n")


MARKUP = ["'-f  \\[cat's hat'", "a \\\\[b c",
          "[/bold] closes nothing", "[red]red[/red]", "a \\[escaped] b", "ends with a backslash \\",
          "\\\\[b] two backslashes", "[link=file:///etc]x[/link]", ":smile: emoji code", "[@click]x[/]"]


@pytest.mark.parametrize("text", MARKUP + HOSTILE)
def test_rich_prints_the_message_exactly(text):
    safe = one_line(text)
    assert _printed(safe, markup=False) == safe
    assert _printed("[red]error:[/red] " + for_markup(text), markup=True) == "error: " + safe


@settings(max_examples=500, deadline=None)
@given(st.text(st.sampled_from("[]\\/=@#ab :"), max_size=30))
def test_rich_prints_any_brackets_and_backslashes_exactly(text):
    assert _printed("x " + for_markup(text), markup=True) == "x " + one_line(text)
