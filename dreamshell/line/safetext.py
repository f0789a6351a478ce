"""User- or file-supplied text made safe to show on one terminal line (stdlib only).

Control and escape characters become visible escapes (ESC -> `\\x1b`, newline -> `\\n`), so a pasted
`ESC ] 0 ; title BEL` cannot retitle the terminal; long text keeps its head and tail around `...`;
nothing is read as rich markup when printed with `markup=False` (or after `for_markup`).
"""

from __future__ import annotations

import re
import unicodedata

MESSAGE_LIMIT = 400   # characters of one printed error or note
TOKEN_LIMIT = 60      # characters of a user token quoted inside a message
ELLIPSIS = "..."

_NAMED = {"\n": "\\n", "\r": "\\r", "\t": "\\t"}
# bidirectional embeddings, overrides and isolates: invisible, and they reorder what follows
# what rich reads as a markup tag (rich.markup.RE_TAGS) with the backslashes before it; or any other
# '[' after backslashes (rich prints '\\[' as '[')
_MARKUP = re.compile(r"(\\*)(\[[a-z#/@][^[]*?])|(\\+)\[")
_BIDI = frozenset("\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069")


def is_unsafe(ch: str) -> bool:
    """True for a character that must not reach a terminal raw (controls, line breaks, surrogates)."""
    if ch in _BIDI:
        return True
    return unicodedata.category(ch) in ("Cc", "Cs", "Zl", "Zp")


def _piece(ch: str) -> str:
    """How one character is shown."""
    if not is_unsafe(ch):
        return ch
    if ch in _NAMED:
        return _NAMED[ch]
    code = ord(ch)
    return f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"


def first_unsafe(text: str) -> int | None:
    """Index of the first character `visible` would escape, or None."""
    for i, ch in enumerate(text):
        if is_unsafe(ch):
            return i
    return None


def visible(text: str) -> str:
    """text with every control, line-break and surrogate character written as an escape."""
    if first_unsafe(text) is None:
        return text
    return "".join(_piece(ch) for ch in text)


def _pieces_from(text: str, budget: int, reverse: bool) -> tuple[list[str], int]:
    """Shown pieces from one end of text until `budget` characters; (pieces, characters consumed)."""
    out, used, n = [], 0, 0
    chars = reversed(text) if reverse else iter(text)
    for ch in chars:
        p = _piece(ch)
        if used + len(p) > budget:
            break
        out.append(p)
        used += len(p)
        n += 1
    return (out[::-1] if reverse else out), n


def shorten(text: str, limit: int = MESSAGE_LIMIT) -> str:
    """visible(text), cut to at most `limit` characters around `...` (head and tail kept)."""
    limit = max(limit, len(ELLIPSIS) + 2)
    head, n_head = _pieces_from(text, limit, reverse=False)
    if n_head == len(text):
        return "".join(head)
    room = limit - len(ELLIPSIS)
    head, n_head = _pieces_from(text, room - room // 3, reverse=False)
    tail, n_tail = _pieces_from(text, room // 3, reverse=True)
    return "".join(head) + ELLIPSIS + "".join(tail)


def quoted(text: str, limit: int = TOKEN_LIMIT) -> str:
    """A user token for a message: in single quotes, visible and short."""
    return "'" + shorten(str(text), limit) + "'"


def one_line(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """The text to print for an error or note: one line, visible, at most `limit` characters.

    Print it with markup and emoji off (`console.print(text, markup=False, emoji=False)` or
    `console.out(text)`), or pass it through `for_markup` to embed it in rich markup.
    """
    return shorten(str(message), limit)


def first_line(error, limit: int = 200) -> str:
    """The first line of an error's (or a text's) message, visible and shortened; the error's type name
    when it has no message (what a one-line report of a library's exception shows)."""
    lines = str(error).strip().splitlines()
    if lines:
        return shorten(lines[0], limit)
    return type(error).__name__ if isinstance(error, BaseException) else ""


def for_markup(message: str, limit: int = MESSAGE_LIMIT) -> str:
    """one_line(message) escaped for the END of a rich markup string (print it with emoji=False).

    rich.markup.escape is not exact (a trailing backslash comes out doubled, `\\[x` loses its backslash):
    `console.print("[red]error:[/red] " + for_markup(msg), emoji=False)` shows one_line(msg) exactly.
    """
    return _MARKUP.sub(_escape_markup, one_line(message, limit))


def _escape_markup(m: re.Match) -> str:
    if m.group(2):  # a tag: an odd number of backslashes escapes it, the pairs before print as themselves
        return m.group(1) * 2 + "\\" + m.group(2)
    return m.group(3) + "\\["  # rich drops one backslash before '[': give it one to drop
