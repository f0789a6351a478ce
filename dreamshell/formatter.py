"""A request -> the canonical command line that reproduces it (stdlib only). REFERENCE.md section 3.

Order: the prompt, then the switches in table order; a switch is written when its value differs
from the request's default. `parse_request(format_request(r)) == r` for every valid request.
"""

from __future__ import annotations

from .request import REQUEST_DEFAULTS, DreamRequest
from .switches import SWITCHES


def quote(text: str) -> str:
    """Double-quote text, escaping backslashes and double quotes."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _token(text: str) -> str:
    if text and all(c.isalnum() or c in "-_.,:/+=@%" for c in text):
        return text
    return quote(text)


def format_request(request: DreamRequest) -> str:
    """The canonical one-line command for `request`."""
    parts = [quote(request.prompt)]
    for sw in SWITCHES:
        value = getattr(request, sw.field)
        if value == REQUEST_DEFAULTS[sw.field]:
            continue
        parts.append(sw.spelling)
        parts.extend(_token(v) for v in sw.format_value(value))
    return " ".join(parts)
