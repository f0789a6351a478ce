"""The user-error types (stdlib only).

Every error a person can cause (a bad line, a missing file, a models file that cannot be read, a
recipe that cannot be fetched, a model that cannot load) is a `UserError`: its str() is the one line
to show, and the shell, the dry run and the batch planners catch this one class. Anything else is a
bug: one line plus a traceback in errors.log.
"""

from __future__ import annotations


class UserError(ValueError):
    """Something the user can fix; str() is the one line to show (what was wrong, what is allowed)."""


class ParseError(UserError):
    """A line that is not a valid command."""


class LimitError(ParseError):
    """A request over one of the limits in limits.py; str() names the limit and what to do."""


class CommandFileError(ParseError):
    """A file that cannot be read as commands (a folder, a device, binary, too big)."""
