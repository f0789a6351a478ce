"""Hostile lines through the line-level error path: parse, limits, the dry run's description, rich.

For any line: either it is valid, or the project's own error types say why in one short line with no
raw control character, which rich prints exactly as it is (markup off, or escaped into markup).
"""

import io

from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from rich.console import Console

from dreamshell.run.dryrun import DryRun
from dreamshell.line.errors import ParseError
from dreamshell.line.limits import check_request
from dreamshell.weights.models import load_registry
from dreamshell.line.parser import parse_line
from dreamshell.line.request import DreamRequest
from dreamshell.line.safetext import MESSAGE_LIMIT, first_unsafe, for_markup, one_line

VALID = [
    "a lighthouse at dusk -S 42 -n 3 -s 30 -U 2", "a cat's hat -S 1", '"a -in b" -S 1',
    'outputs/000012.3355519391.png: "a fantastic alien landscape" -s 60 -S 3355519391 -W 576 -H 512 -C 7.5 -A k_lms',
    "a dog -s50 -b1 -W512 -H512 -C7.5 -mplms -S42", "x -U 4 0.5 -S -1 -I -1 -f 0.3",
    'x -A "DPM++ 2M Karras" -o "Bob\'s pics" --model demo', "x -V 42:0.1,77:0.2 -v 0.25",
    "a [blurry] [dark] (cat)1.2 ((dog)) :0.25 bird:0.75", "!fetch outputs/000001.2.png", "!replay log.txt",
]
FRAGMENTS = [
    "[/bold]", "[red]", "[/]", "[link=file:///etc/passwd]", "[@click=app.quit]", "\\[", "\\",
    "\x1b]0;title\x07", "\x1b[2J", "\r", "\x00", "\n", "\t", "\x9b", "\x7f", "\ud800", "\u2028", "\u202e",
    "9" * 400, "4294967295", "-4294967296", "1e309", "-1e309", "nan", "-inf", "-0", "0x10",
    "(", ")", "((((", "))", "[", "]", "\\(", '"', "'", ":", ":0", ":-1", "::", "#", "!", "=",
    " -n ", " -s ", " -S ", " -A ", " -o ", " -W ", " -H ", " -C ", " -U ", " -V ", " -v ", " -f ", " -I ",
    " -M ", " --model ", " --fit", " -h", " -b ", " -G ", " --embiggen ", " -- ", " - ", " -s2000", " -n4294967295",
    "東京", "🐱", "\u0301", "\ufeff",
]


@st.composite
def hostile_lines(draw):
    line = draw(st.sampled_from(VALID))
    for _ in range(draw(st.integers(1, 6))):
        action = draw(st.sampled_from(["insert", "insert", "delete", "repeat", "huge"]))
        at = draw(st.integers(0, len(line)))
        if action == "insert":
            line = line[:at] + draw(st.sampled_from(FRAGMENTS) | st.text(max_size=8)) + line[at:]
        elif action == "delete":
            line = line[:at] + line[at + draw(st.integers(1, 12)):]
        elif action == "repeat":
            line = line[:at] + draw(st.sampled_from(FRAGMENTS)) * draw(st.integers(2, 300)) + line[at:]
        else:
            line = line[:at] + draw(st.sampled_from(["x", "(", "9", "\x1b", "[b]"])) * draw(
                st.sampled_from([2001, 10_001, 200_000])) + line[at:]
    return line


REGISTRY = load_registry(None)


def _printed(text: str, markup: bool) -> str:
    buf = io.StringIO()
    console = Console(file=buf, width=80, soft_wrap=True, highlight=False, color_system=None)
    console.print(text, markup=markup, emoji=False)
    return buf.getvalue()[:-1]


def _assert_safe_message(message: str) -> None:
    assert "\n" not in message and "\r" not in message
    assert len(message) <= MESSAGE_LIMIT, len(message)
    assert first_unsafe(message) is None, repr(message)


def _assert_prints_exactly(message: str) -> None:
    shown = one_line(message)
    assert _printed(shown, markup=False) == shown
    assert _printed("[red]error:[/red] " + for_markup(message), markup=True) == "error: " + shown


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(hostile_lines())
@example("x -s 5" + "4294967295" * 200 + " -A plms")    # found by bench/fuzz_lines.py: numbers echoed whole
@example("x -n " + "9" * 4000)
@example("x -b1" + "9" * 2000)                          # an unsupported switch's name echoed whole
@example("x --embiggen" + "[/bold]\x1b" * 500)
def test_hostile_lines_fail_cleanly_in_one_short_safe_line(line):
    try:
        item = parse_line(line)
        if isinstance(item, DreamRequest):
            check_request(item)
    except ParseError as e:  # LimitError and CommandFileError are ParseErrors
        message = str(e)
        _assert_safe_message(message)
        _assert_prints_exactly(message)
    valid, text = DryRun(REGISTRY).describe(line)
    assert "\n" not in text and first_unsafe(text) is None
    if not valid:
        assert text.startswith("error: ") and len(text) <= len("error: ") + MESSAGE_LIMIT
        _assert_prints_exactly(text)


def test_the_fuzzer_reaches_the_error_and_the_valid_paths():
    """The strategy is not vacuous: it makes bad lines of several kinds and some valid ones."""
    seen = {"valid": 0, "error": 0, "limit": 0}

    @settings(max_examples=150, deadline=None, database=None, suppress_health_check=[HealthCheck.too_slow])
    @given(hostile_lines())
    def run(line):
        valid, text = DryRun(REGISTRY).describe(line)
        seen["valid" if valid else "error"] += 1
        seen["limit"] += "at most" in text or "the most is" in text

    run()
    assert seen["valid"] > 5 and seen["error"] > 50 and seen["limit"] > 5, seen


def _shell_error_path():
    """The Dispatcher the shell uses (on a fake model) and app.py's error printer, into a string."""
    import tempfile
    from pathlib import Path

    from conftest import fake_session_at

    from dreamshell.run.dispatch import Dispatcher
    from dreamshell.run.report import error_printer
    folder = Path(tempfile.mkdtemp())
    session = fake_session_at(folder, steps=2)
    buffer = io.StringIO()
    console = Console(file=buffer, force_terminal=True, color_system="truecolor", width=10_000)
    printed = []
    app_error = error_printer(console)   # the printer app.py gives the dispatcher

    def error(text):
        start = buffer.tell()
        app_error(text)
        printed.append(buffer.getvalue()[start:])
    return Dispatcher(session, echo=lambda text: None, error=error), printed


SHELL, SHELL_PRINTED = _shell_error_path()


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(hostile_lines())
def test_the_shell_error_path_prints_one_safe_line(line):
    SHELL_PRINTED.clear()
    SHELL.plan(line)        # never raises: the boundary answers every line
    for out in SHELL_PRINTED:
        text = out.replace("\x1b[31m", "").replace("\x1b[0m", "")
        assert text.endswith("\n") and text.count("\n") == 1, repr(out[:200])
        assert first_unsafe(text.rstrip("\n")) is None, repr(out[:200])
        assert len(text) <= MESSAGE_LIMIT + 20, len(text)
