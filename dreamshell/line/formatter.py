"""A request -> the canonical command line that reproduces it (stdlib only), in the
original shell's log-line shape (lstein/stable-diffusion v1.15 `dream_log.txt`).

Order: the prompt, then the switches in table order; a switch is written when its value differs
from the request's default. `parse_request(format_request(r)) == r` for every valid request.
"""

from __future__ import annotations

from .request import REQUEST_DEFAULTS, DreamRequest
from .safetext import visible
from .switches import SWITCHES


def quote(text: str) -> str:
    """Double-quote text, escaping backslashes and double quotes.

    A control or line-break character is written as a visible escape, so the result is always one
    line (a log entry is never split); the parser refuses such characters, so no parsed request has one.
    """
    return '"' + visible(text.replace("\\", "\\\\").replace('"', '\\"')) + '"'


def _token(text: str) -> str:
    if text and all(c.isalnum() or c in "-_.,:/+=@%" for c in text):
        return text
    return quote(text)


def format_request(request: DreamRequest, shown: dict[str, str] | None = None) -> str:
    """The canonical one-line command for `request`.

    `shown` maps a field to text written in place of its value (the dry run's `-S <random>`).
    """
    parts = [quote(request.prompt)]
    for sw in SWITCHES:
        value = getattr(request, sw.field)
        if value == REQUEST_DEFAULTS[sw.field] and not (shown and sw.field in shown):
            continue
        if shown and sw.field in shown:
            parts += [sw.spelling, shown[sw.field]]
            continue
        for one in (value if sw.repeat else (value,)):   # a repeated switch is written once per value
            parts.append(sw.spelling)
            parts.extend(_token(v) for v in sw.format_value(one))
    return " ".join(parts)
