"""The dry run describes the parsed request; it never edits the typed text."""

from dreamshell.run.dryrun import RANDOM, DryRun
from dreamshell.weights.models import load_registry


def _describe(*lines):
    checker = DryRun(load_registry(None))
    return [checker.describe(line) for line in lines]


def test_the_prompt_is_never_rewritten():
    [(ok, text)] = _describe('"draw -S 0 here" -s 5')
    assert ok
    assert text.startswith('"draw -S 0 here" -s 5 -S <random> ')
    [(ok, text)] = _describe('"a -S 0 b" -S 0')
    assert text.startswith('"a -S 0 b" -s 20 -S 0 ') and RANDOM not in text


def test_earlier_seeds_are_followed():
    results = _describe("x -S 7 -n 3", "y -S -1", "z", "w -S -1", "v -S -9")
    assert [ok for ok, _ in results] == [True, True, True, True, False]
    assert " -S 9 " in results[1][1]
    assert f" -S {RANDOM} " in results[3][1]
    # the run's own words (run/resolve.py): the dry run plans through the same code
    assert "-S -9 refers to the seed 9 image(s) back, but there is only 6 image(s) made so far" in results[4][1]


def test_the_resolved_request_is_checked_against_the_sampler():
    # the demo model's sampler is k_euler (1000 steps); the line's DPM++ takes 999
    [(ok, text)] = _describe("x -s 1000 -A k_dpmpp_2")
    assert not ok and "at most 999" in text


def test_bang_lines_and_errors_are_shown_safely():
    [(ok, text)] = _describe("!replay \x1b]0;t\x07")
    assert not ok and "\\x1b" in text and "\x1b" not in text
    [(ok, text)] = _describe("!history " + "x" * 5000)
    assert ok and len(text) < 300
