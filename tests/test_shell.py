"""The dream> shell driven through prompt_toolkit's pipe input, typed into while jobs run."""

from fake_generator import FakeGenerator
from PIL import Image

from dreamshell.run.dispatch import Dispatcher
from dreamshell.weights.models import ModelSpec
from dreamshell.run.session import Session


def image_lines(out):
    """The lines that name a made image: `#N outputs/NNNNNN.SEED.png: command`."""
    return [line for line in out if line.startswith("#") and ".png: " in line]


def made(n: int) -> str:
    """The text of the n-th image's line in a test's fresh output folder (file NNNNNN = n - 1)."""
    return f"{n - 1:06d}."


def test_a_whole_session(drive_shell, tmp_path):
    d = drive_shell()
    d.type("a red circle on a blue background -S 5\r")
    d.wait_output(made(1))
    d.type("a cat -s abc\r")          # a bad line: one error, the shell goes on
    d.type("half typed line\x03")     # Ctrl-C at the prompt clears the line
    d.type("a blue square -S -1\r")   # the last seed
    d.wait_output(made(2))
    d.type("!history\r!bogus\r")
    d.wait_output("unknown command")
    assert d.finish() == 0
    text = "\n".join(d.out)
    assert "error: -s: 'abc' is not a whole number; steps are a whole number >= 1" in d.out
    assert "half typed line" not in text
    assert d.session.seeds == [5, 5]
    history = [line for line in d.out if line[:4].strip().isdigit()]
    assert [h.split(None, 1)[1] for h in history] == [
        "a red circle on a blue background -S 5", "a cat -s abc", "a blue square -S -1", "!history"]
    assert any(line.startswith("error: unknown command '!bogus'") for line in d.out)
    assert d.out[-1] == "bye"
    assert len((tmp_path / "out" / "dream_log.txt").read_text().splitlines()) == 2


def test_fetch_puts_the_recipe_on_the_next_input_line(drive_shell):
    d = drive_shell()
    d.type("a white triangle -S 9\r")
    d.wait_output(made(1))
    d.type("!fetch ../out/000000.9.png\r -n 2\r")
    d.wait_for(lambda: len(d.session.seeds) == 3)
    d.finish()
    # the fetched command came back as the next line's text; " -n 2" was typed after it
    assert d.session.seeds == [9, 9, 10]


def test_quit_words_leave(drive_shell):
    for word in ("q", "quit", "exit"):
        d = drive_shell()
        d.type(f"{word}\r")
        d.thread.join(30)
        assert d.code == 0 and d.out[-1] == "bye"


def test_unexpected_errors_are_one_line_and_a_logged_traceback(drive_shell, monkeypatch, tmp_path):
    def boom(self, request, listener=None, control=None):
        raise RuntimeError("kaboom")
    monkeypatch.setattr(Session, "run", boom)
    d = drive_shell()
    d.type("a red circle\r")
    line = d.wait_output("kaboom")
    d.type("!help\r")
    d.wait_output("Switches:")
    d.finish()
    assert line.startswith("error: #1: unexpected RuntimeError: kaboom (traceback in ")   # the job it was
    log = tmp_path / "home" / "errors.log"
    assert "Traceback" in log.read_text() and "kaboom" in log.read_text()


def test_help_comes_from_the_switch_table(make_session):
    from dreamshell.line.switches import SWITCHES
    d = Dispatcher(make_session(), echo=lambda _: None)
    text = d.help_text()
    for sw in SWITCHES:
        assert sw.long in text and sw.help in text
    for name in ("!fetch", "!replay", "!history", "!search", "!models", "!switch"):
        assert name in text


# ----- the queue behind the live prompt (issue 8)

def test_lines_typed_while_a_job_runs_are_queued_and_run_in_order(drive_shell, fake_session, tmp_path):
    s = fake_session()
    s.fake.gate.clear()                           # the first image holds at its first step
    d = drive_shell(s)
    d.type("a red circle -S 1 -n 2\r")
    d.wait_for(lambda: d.shell.jobs.running is not None, what="job 1 to start")
    d.type("a blue square -S 20\r")
    d.type("a cat -s abc\r")                      # a bad line is answered at once, queued nowhere
    d.type("a green triangle -S -1\r")            # looks back in queue order: the seed before it
    d.wait_output("'abc' is not a whole number")
    d.type("!queue\r")
    d.wait_output("waiting #3")
    assert s.seeds == [] and s.fake.generated == [], "nothing ran past the gate yet"
    assert [line for line in d.out if line.startswith(("running", "waiting"))] == [
        "running #1: a red circle -S 1 -n 2", "waiting #2: a blue square -S 20",
        "waiting #3: a green triangle -S -1"]
    s.fake.gate.set()
    assert d.finish() == 0
    assert s.seeds == [1, 2, 20, 20]
    # each image's line: its job, then the image's own log line (the file names its number)
    out = tmp_path / "out"
    assert [line.split()[:2] for line in image_lines(d.out)] == [
        ["#1", f"{out / '000000.1.png'}:"], ["#1", f"{out / '000001.2.png'}:"], ["#2", f"{out / '000002.20.png'}:"],
        ["#3", f"{out / '000003.20.png'}:"]]
    assert image_lines(d.out)[2].endswith("-S 20 -W 64 -H 64 -C 5 -A k_euler --model fake")


def test_cancel_next_pause_and_resume(drive_shell, fake_session):
    s = fake_session()
    s.fake.gate.clear()
    d = drive_shell(s)
    d.type("first -S 1 -n 3\r")
    d.wait_for(lambda: d.shell.jobs.running is not None)
    for seed in (10, 20, 30, 40):
        d.type(f"line -S {seed}\r")
    d.wait_for(lambda: len(d.shell.jobs.waiting()) == 4)
    d.type("!next 5\r")       # #5 (seed 40) to the front
    d.type("!cancel 3\r")     # drop seed 20
    d.type("!cancel 9\r")     # not a waiting job: one line
    d.type("!pause\r")        # the running job stops after its current image
    d.wait_output("paused:")
    d.wait_output("no waiting job #9")
    assert [j.number for j in d.shell.jobs.waiting()] == [5, 2, 4]
    s.fake.gate.set()
    d.wait_for(lambda: s.seeds == [1], what="the current image to finish")
    import time
    time.sleep(0.3)
    assert s.seeds == [1], "paused after the current image"
    d.type("!resume\r")
    d.wait_for(lambda: len(s.seeds) == 6)
    assert d.finish() == 0
    assert s.seeds == [1, 2, 3, 40, 10, 30]
    d2 = drive_shell(fake_session())
    d2.type("!cancel all\r!cancel x\r")
    d2.wait_output("!cancel takes a job number")
    assert "no job is waiting" in d2.out
    d2.finish()


def test_ctrl_c_stops_only_the_running_image(drive_shell, fake_session, tmp_path):
    s = fake_session()
    s.fake.gate.clear()
    d = drive_shell(s)
    d.type("stopped line -S 1 -n 3\r")
    d.wait_for(lambda: d.shell.jobs.running is not None)
    d.type("next line -S 7\r")
    d.wait_for(lambda: len(d.shell.jobs.waiting()) == 1)
    d.type("typed but not sent")
    d.type("\x03")
    line = d.wait_output("stopping #1")
    assert "1 waiting job(s) go on" in line and "!cancel all" in line
    d.wait_output("stopped: image 1 of 3 was not finished")
    s.fake.gate.set()
    d.wait_for(lambda: s.seeds == [7], what="the waiting job to run")
    d.type("\x15")            # clear what was typed
    assert d.finish() == 0
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["000000.7.png"]


def test_ctrl_d_with_jobs_waiting_asks_first(drive_shell, fake_session):
    s = fake_session()
    s.fake.gate.clear()
    d = drive_shell(s)
    d.type("one -S 1\r")
    d.wait_for(lambda: d.shell.jobs.running is not None)
    d.type("two -S 2\r")
    d.wait_for(lambda: len(d.shell.jobs.waiting()) == 1)
    d.type("\x04")
    d.wait_output("Ctrl-D again leaves")
    assert d.thread.is_alive(), "the first Ctrl-D did not leave"
    d.type("\x04")
    d.thread.join(30)
    assert d.code == 0 and d.out[-1] == "bye"
    assert 2 not in s.fake.generated


def test_switch_typed_while_the_model_loads_loads_once(drive_shell, fake_session):
    s = fake_session()
    s.fake.load_gate.clear()                 # the first load holds
    FakeGenerator.built = 0
    d = drive_shell(s)
    s.host.preload(s.model)
    d.wait_for(lambda: s.host.loading is not None, what="the load to start")
    d.type("!switch fake\r")
    d.type("a line -S 3\r")
    d.type("!switch other\r!switch other\r")
    d.wait_for(lambda: len(d.shell.jobs.waiting()) >= 3)
    s.fake.load_gate.set()
    d.wait_for(lambda: len([o for o in d.out if o == "model other loaded"]) == 2)
    assert d.finish() == 0
    assert s.fake.loads == ["fake", "other"], "each model loaded once"
    assert s.host.loads == 2 and FakeGenerator.built == 0, "one generator, built before the shell"
    assert s.seeds == [3]


def test_a_failed_switch_keeps_the_model_that_was_loaded(drive_shell, fake_session, tmp_path):
    s = fake_session()
    s.registry.models["gone"] = ModelSpec("gone", tmp_path / "nowhere", "sd1")
    s.registry.models["broken"] = ModelSpec("broken", tmp_path, "sd1")     # there, but it does not load
    d = drive_shell(s)
    d.type("one -S 1\r")
    d.wait_output(made(1))
    d.type("!switch gone\r")          # weights that are not there: answered at once, nothing loads
    gone = d.wait_output("does not exist")
    d.type("!switch broken\r")
    broken = d.wait_output("cannot load")
    d.type("two -S 2\r")
    d.wait_output(made(2))
    assert d.finish() == 0
    assert gone.startswith("error: model 'gone': ")
    assert "fake is still the loaded model" in broken
    assert s.spec.name == "fake" and s.seeds == [1, 2] and s.fake.loads == ["fake", "fake"]


def test_a_line_typed_before_the_model_loads_waits_for_it(drive_shell, fake_session):
    s = fake_session()
    d = drive_shell(s, first_prompt_delay=5)   # the background load has not even started
    d.type("at once -S 4\r")
    d.wait_output(made(1))
    assert d.finish() == 0
    assert not any("no model is loaded" in line for line in d.out)


def test_an_unwritable_history_file_is_one_warning(drive_shell, fake_session, tmp_path):
    from dreamshell.shell.repl import open_history
    warnings = []
    path = tmp_path / "hist" / "history"
    history = open_history(path, warnings.append)
    d = drive_shell(fake_session(), history=history)
    d.type("one -S 1\r")
    d.wait_output(made(1))
    path.unlink()
    path.mkdir()                      # the history file can no longer be written
    d.type("two -S 2\r")
    d.wait_output(made(2))
    d.type("three -S 3\r")
    d.wait_output(made(3))
    assert d.finish() == 0
    assert len(warnings) == 1 and warnings[0].startswith("warning: history is no longer saved")
    assert not any("Traceback" in line for line in d.out)


def test_thumbnails_follow_each_image_and_the_toolbar_shows_the_live_preview(drive_shell, fake_session):
    s = fake_session()
    s.fake.gate.clear()
    d = drive_shell(s, preview="blocks")
    d.type("a shape -S 3\r")
    d.wait_for(lambda: d.shell.jobs.running is not None and d.shell.jobs.running.step == 0)
    s.fake.gate.set()
    d.wait_output(made(1))
    r, g, b = FakeGenerator.colour(3)
    thumbnail = d.out[d.out.index(next(o for o in d.out if o.startswith("#1 ") and ".png: " in o)) + 1]
    assert thumbnail.count("\n") == 12 - 1 and "\u2580" in thumbnail
    assert f"\x1b[38;2;{r};{g};{b};48;2;{r};{g};{b}m" in thumbnail
    # while an image draws, the toolbar carries the picture above its status line
    d.shell.live_preview = Image.new("RGB", (8, 8), (10, 20, 30))
    d.shell.jobs.running = object.__new__(type("J", (), {"number": 1, "images": 0}))
    fragments = d.shell.toolbar()
    d.shell.jobs.running = None
    assert ("noreverse fg:#0a141e bg:#0a141e", "\u2580" * 16) in fragments
    assert sum(text.count("\n") for _, text in fragments) == 8
    d.type("!preview off\r")
    d.wait_output("preview: off")
    d.type("another -S 4\r")
    d.wait_output(made(2))
    assert d.finish() == 0
    after = d.out[d.out.index(d.wait_output(made(2))):]
    assert not any("\u2580" in o for o in after), "no thumbnail once previews are off"


def test_no_pictures_when_the_output_is_not_a_terminal(drive_shell, fake_session):
    d = drive_shell(fake_session())          # preview auto, output is not a terminal
    d.type("a shape -S 3\r")
    d.wait_output(made(1))
    assert d.finish() == 0
    assert d.shell.protocol == "off" and not any("\x1b" in o for o in d.out)


def test_completion_offers_schedules_after_schedule():
    from prompt_toolkit.document import Document

    from dreamshell.shell.completer import DreamCompleter
    completer = DreamCompleter(lambda: [], lambda: {})
    texts = [c.text for c in completer.get_completions(Document("a cat -A k_euler --schedule k"), None)]
    assert "karras" in texts and all(t.lower().startswith(("k", '"k')) for t in texts)


def test_replay_typed_at_the_prompt_runs_as_one_job_with_its_pictures(drive_shell, fake_session, tmp_path):
    s = fake_session()
    log = tmp_path / "cmds.txt"
    log.write_text('"one" -S 11\n"two" -S 12\n')
    made = []

    def no_batch_listener():   # a batch's listener (a rich progress bar) would garble the prompt
        made.append(1)
        raise AssertionError("the batch listener was used inside the shell")
    d = drive_shell(s, dispatcher=Dispatcher(s, echo=None, listener=no_batch_listener), preview="blocks")
    d.dispatcher.echo = d.out.append
    d.type(f"!replay {log}\r")
    d.wait_output("2 line(s) run, 0 with errors")
    assert d.finish() == 0
    assert s.seeds == [11, 12] and made == []
    assert sum(1 for o in d.out if "\u2580" in o) == 2, "a thumbnail after each replayed image"


def test_the_toolbar_shows_the_seconds_the_last_image_took(drive_shell, fake_session):
    """Issue 17: how long an image takes is in the toolbar (from its start to its file), until the next one."""
    d = drive_shell(fake_session(step_delay=0.1, steps=3))
    assert "last image" not in d.shell._status(width=200)
    d.type("a shape -S 3\r")
    line = d.wait_output(made(1))
    path, seconds = d.shell.last_image
    assert line.startswith(f"#1 {path}: ") and 0.3 <= seconds < 10
    assert f"last image {seconds:.1f}s" in d.shell._status(width=200)
    narrow = d.shell._status(width=45)     # a narrow terminal drops it after the device, before the seed
    assert "last image" not in narrow and "last seed: 3" in narrow
    assert d.finish() == 0
