"""The dream> shell driven through prompt_toolkit's pipe input: a whole session in one pipe."""

import pytest
from prompt_toolkit.input import create_pipe_input
from prompt_toolkit.output import DummyOutput

from dreamshell.dispatch import Dispatcher
from dreamshell.shell.repl import DreamShell


@pytest.fixture
def shell_run(make_session):
    def run(keys: str):
        session = make_session()
        out = []
        dispatcher = Dispatcher(session, echo=out.append)
        session.echo = out.append
        with create_pipe_input() as inp:
            inp.send_text(keys)
            shell = DreamShell(session, dispatcher, input=inp, output=DummyOutput(), echo=out.append)
            code = shell.run()
        return code, out, session
    return run


def test_a_whole_session(shell_run, tmp_path):
    keys = ("a red circle on a blue background -S 5\r"
            "a cat -s abc\r"          # a bad line: one error, the shell goes on
            "half typed line\x03"     # Ctrl-C at the prompt clears the line
            "a blue square -S -1\r"   # the last seed
            "!history\r"
            "!bogus\r"
            "\x04")                   # Ctrl-D leaves
    code, out, session = shell_run(keys)
    assert code == 0
    text = "\n".join(out)
    assert "[1] " in text and "[2] " in text
    assert "error: -s: 'abc' is not a whole number; steps are a whole number >= 1" in out
    assert "half typed line" not in text
    assert session.seeds == [5, 5]
    history = [line for line in out if line[:4].strip().isdigit()]
    assert [h.split(None, 1)[1] for h in history] == [
        "a red circle on a blue background -S 5", "a cat -s abc", "a blue square -S -1", "!history"]
    assert any(line.startswith("error: unknown command '!bogus'") for line in out)
    assert out[-1] == "bye"
    log = (tmp_path / "out" / "dream_log.txt").read_text().splitlines()
    assert len(log) == 2


def test_fetch_puts_the_recipe_on_the_next_input_line(shell_run, tmp_path):
    keys = "a white triangle -S 9\r!fetch ../out/000000.9.png\r -n 2\r\x04"
    code, out, session = shell_run(keys)
    # the fetched command came back as the next line's text; " -n 2" was typed after it
    assert session.seeds == [9, 9, 10]


def test_quit_words_leave(shell_run):
    for word in ("q", "quit", "exit"):
        code, out, _ = shell_run(f"{word}\r")
        assert code == 0 and out[-1] == "bye"


def test_unexpected_errors_are_one_line_and_a_logged_traceback(shell_run, monkeypatch, tmp_path):
    from dreamshell.session import Session

    def boom(self, request):
        raise RuntimeError("kaboom")
    monkeypatch.setattr(Session, "run", boom)
    code, out, _ = shell_run("a red circle\r!help\r\x04")
    line = next(line for line in out if "kaboom" in line)
    assert line.startswith("error: unexpected RuntimeError: kaboom (traceback in ")
    log = tmp_path / "home" / "errors.log"
    assert "Traceback" in log.read_text() and "kaboom" in log.read_text()
    assert any("Switches:" in line for line in out), "the shell went on to the next line"


def test_help_comes_from_the_switch_table(make_session):
    from dreamshell.switches import SWITCHES
    d = Dispatcher(make_session(), echo=lambda _: None)
    text = d.help_text()
    for sw in SWITCHES:
        assert sw.long in text and sw.help in text
    for name in ("!fetch", "!replay", "!history", "!search", "!models", "!switch"):
        assert name in text
