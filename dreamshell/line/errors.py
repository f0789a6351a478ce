"""The user-error types shared by the parser and the limits (stdlib only).

`parser.ParseError` is this ParseError (re-exported there); a LimitError is a ParseError, so every
place that shows a bad line's one-line message shows a limit's too.
"""

from __future__ import annotations


class ParseError(ValueError):
    """A line that is not a valid command; str() is the one line to show the user."""


class LimitError(ParseError):
    """A request over one of the limits in limits.py; str() names the limit and what to do."""


class CommandFileError(ParseError):
    """A file that cannot be read as commands (a folder, a device, binary, too big); str() is one line.

    A ParseError, so the places that show a bad line's message show it too.
    """
