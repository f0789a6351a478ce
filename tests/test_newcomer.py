"""What a newcomer and a probe met (issue 22): the queue's messages name their job, rules are answered
when typed, the image numbering, the toolbar, Ctrl-C and Ctrl-D, pastes, `clear`, help texts, bounds,
warnings, NaN images and stop checks. Each test failed before its fix."""

import os
import warnings
from pathlib import Path

import pytest
from conftest import PRECISIONS, run_line
from PIL import Image

from dreamshell.cli import build_argparser
from dreamshell.run.dispatch import Dispatcher
from dreamshell.run.postprocess import register_fix


def image_lines(out):
    return [line for line in out if ".png: " in line]


# ----- 3: a queued line's error names its job; what can be known is answered when typed

def test_an_error_of_a_queued_line_names_its_job(drive_shell, fake_session, tmp_path):
    s = fake_session()
    s.fake.gate.clear()
    d = drive_shell(s)
    d.type("first -S 1\r")
    d.wait_for(lambda: d.shell.jobs.running is not None)
    waiting = tmp_path / "out" / "000009.9.png"         # in the output folder: a queued job may make it
    d.type(f"second -S 2 -I {waiting}\r")
    d.wait_output("#2 queued")
    s.fake.gate.set()
    line = d.wait_output("no such file")
    assert d.finish() == 0
    assert line == f"error: #2: -I {waiting}: no such file"


def test_rules_that_do_not_depend_on_earlier_jobs_are_answered_when_typed(drive_shell, fake_session, tmp_path):
    s = fake_session()
    d = drive_shell(s)
    d.type("warm up -S 1\r")
    d.wait_output("000000.")
    s.fake.gate.clear()
    d.type("busy -S 2\r")
    d.wait_for(lambda: d.shell.jobs.running is not None)
    elsewhere = tmp_path / "pics" / "nope.png"        # no queued job writes there: looked for at once
    d.type(f"x -I {elsewhere}\r")
    d.type("x -A ddim --schedule karras\r")
    d.type("x --clip_skip 3\r")                       # the loaded model's encoder has 2 layers
    d.wait_output("clip_skip 3")
    assert len(d.shell.jobs.waiting()) == 0, "none of them was queued"
    s.fake.gate.set()
    assert d.finish() == 0
    assert f"error: -I {elsewhere}: no such file" in d.out
    assert any(line.startswith("error: sampler 'ddim' cannot run with the 'Karras' schedule") for line in d.out)
    assert "error: --clip_skip 3: this model's text encoder has 2 layers; use 1 to 2" in d.out


# ----- 4: only samplers that run are offered (tests/test_completer.py checks completion)

def test_the_unknown_sampler_error_lists_only_samplers_that_run():
    from dreamshell.line.errors import ParseError
    from dreamshell.line.parser import parse_request
    with pytest.raises(ParseError) as e:
        parse_request("x -A k_dpmpp_2_b")
    assert "k_dpmpp_2_a" not in str(e.value)


# ----- 5, 6, 7: !fetch's words, -I -1 after !fix, a !fix log line replays the same bytes

def test_fetch_of_our_own_image_says_recipe(fake_session):
    s = fake_session()
    out = []
    d = Dispatcher(s, out.append)
    d.execute("a red circle -S 4")
    d.execute(f"!fetch {s.state.last_image}")
    assert out[-1].startswith('recipe: "a red circle" -s 3 -S 4 ')


def test_dash_I_minus_1_after_a_fix_is_the_fix(make_session, tmp_path):
    from fake_upscaler import FakeUpscaler
    s = make_session(upscaler_factory=FakeUpscaler)
    out = []
    d = Dispatcher(s, out.append)
    register_fix(d)
    first = run_line(s, "a red circle -S 5").records[0].path
    assert not d.execute(f"!fix {first} -U 2").failed
    fixed = next(line for line in out if ".upscale.png: " in line).split(": ")[0]
    made = run_line(s, "a blue square -I -1 -f 0.5 -W 128 -H 128 -S 6").records[0]
    assert f"-I {fixed} " in made.command


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_fix_log_line_replays_the_same_bytes(make_session, tmp_path, precision):
    from fake_upscaler import FakeUpscaler
    s = make_session(upscaler_factory=FakeUpscaler, precision=precision)
    d = Dispatcher(s, lambda text: None)
    register_fix(d)
    first = run_line(s, "a red circle -S 5").records[0].path
    assert not d.execute(f"!fix {first} -U 2 0.5").failed
    fix = Path(first).with_name(Path(first).stem + ".upscale.png")
    log = (tmp_path / "out" / "dream_log.txt").read_text().splitlines()
    assert log[-1].startswith(str(fix) + ": ") or log[-1].startswith(os.path.relpath(fix) + ": ")
    again = run_line(s, log[-1]).records[0].path                       # the log line, as !replay runs it
    assert Path(again).read_bytes() == fix.read_bytes()


# ----- 8, 9: the toolbar while paused and at 80 columns; the first Ctrl-D says what the second does

def test_the_toolbar_shows_a_pause_and_fits_the_width(drive_shell, fake_session):
    s = fake_session()
    d = drive_shell(s)
    job = type("J", (), {"number": 3, "images": 4, "image": 2, "step": 3, "steps": 3, "eta": lambda self: 23.0})()
    d.shell.jobs.running = job
    d.shell.jobs._paused = True
    status = d.shell._status(width=200)
    assert "#3 image 2/4 step 3/3 paused" in status and "ETA" not in status
    narrow = d.shell._status(width=80)
    assert len(narrow) <= 80 and narrow.endswith("| !help ") and "#3" in narrow
    d.shell.jobs.running = None
    d.shell.jobs._paused = False
    d.finish()


def test_the_first_ctrl_d_says_the_running_image_stops_too(drive_shell, fake_session):
    s = fake_session()
    s.fake.gate.clear()
    d = drive_shell(s)
    d.type("one -S 1\r")
    d.wait_for(lambda: d.shell.jobs.running is not None)
    d.type("two -S 2\r")
    d.type("\x04")
    line = d.wait_output("Ctrl-D again")
    assert "stops #1's image" in line and "drops the waiting jobs" in line
    s.fake.gate.set()
    d.type("\x04")
    d.thread.join(30)


# ----- 10: a well-known embedding name with no file gets a note

def test_a_well_known_embedding_name_without_its_file_gets_a_note(fake_session):
    s = fake_session()
    result = run_line(s, "a cat [EasyNegative, blurry] -S 1")
    assert any("'EasyNegative' looks like a textual-inversion embedding" in n for n in result.notes)
    assert not any("looks like" in n for n in run_line(s, "a cat [blurry] -S 1").notes)


# ----- 11: two numbers a person can follow: the job #N and the file's own number

def test_an_image_line_is_its_job_and_its_log_line(drive_shell, fake_session, tmp_path):
    d = drive_shell(fake_session())
    d.type("a red circle -S 7 -n 2\r")
    d.wait_output("000001.8.png")
    assert d.finish() == 0
    log = (tmp_path / "out" / "dream_log.txt").read_text().splitlines()
    assert image_lines(d.out) == [f"#1 {line}" for line in log]


# ----- 13, 14: help texts

def test_help_texts_say_what_a_newcomer_asked():
    text = build_argparser().format_help()
    assert "-U F [S], --upscale F [S]" in text and "[F [S] ...]" not in text
    assert "(default 0.75)" in text
    assert "where the model runs" in text          # --device has a description
    d = Dispatcher.__new__(Dispatcher)
    d.commands = {}
    shown = Dispatcher.help_text(d)
    assert "<lora:NAME:WEIGHT>" in shown and "embeddings folder" in shown and "clear" in shown


# ----- 16: `clear` clears; Up searches history by the typed prefix

def test_clear_makes_no_image_and_history_search_is_on(drive_shell, fake_session):
    s = fake_session()
    d = drive_shell(s)
    d.type("clear\r")
    d.type('"clear" -S 3\r')                        # quoted, it is a prompt like any other
    d.wait_output("000000.3.png")
    assert d.finish() == 0
    assert s.seeds == [3]
    from prompt_toolkit.filters import to_filter
    assert to_filter(d.shell.prompt.enable_history_search)()


# ----- 24: a paste of several lines queues each

def test_a_paste_of_several_lines_runs_each(drive_shell, fake_session):
    s = fake_session()
    d = drive_shell(s)
    d.shell.submit_text("a red circle -S 1\na blue square -S 2\n\na cat -s abc\na green triangle -S 3")
    assert d.finish() == 0
    assert s.seeds == [1, 2, 3]
    assert "pasted 4 lines: each runs as if typed, in order" in d.out
    assert "error: -s: 'abc' is not a whole number; steps are a whole number >= 1" in d.out


# ----- 25: bounds on what -U and !fix make; out of memory is one line

def test_upscales_past_the_bound_are_refused_at_once(fake_session, tmp_path):
    s = fake_session()
    out = []
    d = Dispatcher(s, out.append)
    register_fix(d)
    assert d.execute("a cat -W 2048 -H 1024 -U 16").failed
    assert out[-1].startswith("error: -U 16 makes 32768x16384 from 2048x1024; upscaled sides are at most 16384")
    big = tmp_path / "big.png"
    Image.new("RGB", (4096, 64)).save(big)
    assert d.execute(f"!fix {big} -U 8").failed
    assert "!fix -U 8 makes 32768x512" in out[-1]


def test_running_out_of_memory_is_one_line(fake_session, monkeypatch):
    s = fake_session()
    errors = []
    d = Dispatcher(s, lambda text: None, error=errors.append)

    def boom(*a, **k):
        raise MemoryError()
    monkeypatch.setattr(s.fake, "generate", boom)
    assert d.execute("a cat -S 1").failed
    assert errors == ["out of memory: ask for less (smaller -W/-H, fewer -n, a smaller -U); the shell goes on"]


def test_a_file_name_too_long_is_one_line(fake_session):
    errors = []
    d = Dispatcher(fake_session(), lambda text: None, error=errors.append)
    assert d.execute(f"a cat -I {'x' * 300}.png").failed
    assert errors[-1].startswith("-I xxx") and "name too long" in errors[-1].lower()


# ----- 26: warnings go to errors.log; NaN makes no black image; Ctrl-C inside a decode and an upscale

def test_library_warnings_go_to_the_error_log_not_the_terminal(tmp_path, capsys):
    import logging

    from dreamshell.app import warnings_to_error_log
    log = logging.getLogger("dreamshell.warnings")
    saved_handlers, saved_show = log.handlers[:], warnings.showwarning
    log.handlers = []
    try:
        warnings_to_error_log()     # as the app starts; pytest records warnings itself, so show one directly
        warnings.showwarning("numpy says something", DeprecationWarning, "numpy/x.py", 1)
        for handler in log.handlers:
            handler.flush()
    finally:
        for handler in log.handlers:
            handler.close()
        log.handlers = saved_handlers
        warnings.showwarning = saved_show
    assert "numpy says something" not in capsys.readouterr().err
    assert "numpy says something" in (tmp_path / "home" / "errors.log").read_text()


def test_a_lora_full_of_nan_is_one_line_not_a_black_image(tmp_path):
    import torch
    from safetensors.torch import load_file, save_file

    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.engines.protocols import GenerationError
    from dreamshell.line.parser import parse_request
    from dreamshell.run.resolve import resolve_request
    from dreamshell.weights.library import Folders, Library
    from dreamshell.weights.models import builtin_models_dir, demo_spec
    folders = Folders.under(tmp_path)
    folders.loras.mkdir(parents=True)
    weights = load_file(str(builtin_models_dir() / "loras" / "demo_cross.safetensors"))
    save_file({k: torch.full_like(v, float("nan")) for k, v in weights.items()}, str(folders.loras / "bad.safetensors"))
    gen = DiffusersGenerator(device="cpu")
    gen.load(demo_spec())
    request = resolve_request(parse_request("a red circle <lora:bad:1> -S 1 -s 3"), demo_spec(), [])
    with pytest.raises(GenerationError, match="NaN .* LoRA bad"):
        gen.generate(request, files=Library(folders).files_for(request.prompt, None))


def test_ctrl_c_stops_inside_the_vae_decode(demo_generator):
    from dreamshell.engines.protocols import Interrupted
    from dreamshell.line.parser import parse_request
    from dreamshell.run.resolve import resolve_request
    asked = []

    def should_stop():      # no during the 3 steps; yes once the decode asks
        asked.append(1)
        return len(asked) > 3
    request = resolve_request(parse_request("a red circle -S 1 -s 3"), demo_generator.spec, [])
    with pytest.raises(Interrupted):
        demo_generator.generate(request, should_stop=should_stop)
    assert len(asked) > 3


def test_ctrl_c_stops_an_upscale_between_tiles():
    import torch

    from dreamshell.engines.protocols import Interrupted
    from dreamshell.engines.upscaler import run_tiled
    calls = []

    def model(x):
        calls.append(1)
        return torch.nn.functional.interpolate(x, scale_factor=2)
    with pytest.raises(Interrupted):
        run_tiled(model, torch.zeros(1, 3, 64, 64), 2, tile=16, pad=2, should_stop=lambda: len(calls) >= 2)
    assert len(calls) == 2


# ----- 18: Ctrl-C between Enter and the next prompt never ends the shell

def test_sigint_while_a_line_is_planned_does_not_end_the_shell(tmp_path):
    """The shell in a real terminal (a pty): a line whose planning takes seconds (a recipe of 1 MB), SIGINT
    sent while it is planned, then Ctrl-D. Before the fix the KeyboardInterrupt ended the shell."""
    import pty
    import select
    import signal
    import sys
    import time

    from PIL import PngImagePlugin
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", "a cat, " * 140_000 + "\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64")
    Image.new("RGB", (8, 8)).save(tmp_path / "big.png", pnginfo=info)
    env = dict(os.environ, DREAMSHELL_DATA_DIR=str(tmp_path / "home"), TERM="xterm",
               PROMPT_TOOLKIT_NO_CPR="1")   # this pty answers no cursor-position requests
    pid, fd = pty.fork()
    if pid == 0:
        os.chdir(tmp_path)
        os.execvpe(sys.executable, [sys.executable, "-m", "dreamshell", "--preview", "off"], env)
    seen = b""

    def read_until(text: bytes, timeout: float) -> bool:
        nonlocal seen
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            ready, _, _ = select.select([fd], [], [], 0.2)
            if ready:
                try:
                    seen += os.read(fd, 65536)
                except OSError:       # the shell has ended and closed the terminal
                    return text in seen
                if text in seen:
                    return True
        return False

    def shown() -> str:
        import re
        return re.sub(r"\x1b\[[0-9;?]*[a-zA-Z]", "", seen.decode(errors="replace"))[-800:]
    try:
        assert read_until(b"dream>", 60), shown()
        os.write(fd, b"!fetch big.png\r")
        time.sleep(0.3)
        os.kill(pid, signal.SIGINT)            # while the recipe is being read
        time.sleep(0.3)
        os.kill(pid, signal.SIGINT)
        assert read_until(b"a line may hold", 60), shown()   # the recipe is read whole, then refused
        os.write(fd, b"!help\r")
        assert read_until(b"Switches:", 30), shown()
        start = len(seen)
        end = time.monotonic() + 30
        while b"dream>" not in seen[start:] and time.monotonic() < end:   # the next prompt reads keys
            read_until(b"\0", 0.5)
        os.write(fd, b"\x04")
        assert read_until(b"bye", 30), shown()
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        _, status = os.waitpid(pid, 0)
        os.close(fd)
    assert b"Traceback" not in seen and b"KeyboardInterrupt" not in seen


# ----- 12: after Ctrl-C no blank rows stay under the prompt: the live picture is printed, not dropped

def test_ctrl_c_prints_the_live_picture_where_the_toolbar_had_it(drive_shell, fake_session):
    s = fake_session()
    s.fake.gate.clear()
    d = drive_shell(s, preview="blocks")
    d.type("one -S 1\r")
    d.wait_for(lambda: d.shell.jobs.running is not None)
    d.shell.live_preview = Image.new("RGB", (8, 8), (200, 10, 10))
    d.shell._stop_running()
    assert d.shell.live_preview is None
    s.fake.gate.set()
    d.wait_output("was not finished")
    at = d.out.index("stopping #1 within a step")
    assert "\u2580" in d.out[at + 1] and d.out[at + 1].count("\n") == 8 - 1   # the 8 rows it had
    assert d.finish() == 0
