"""The driver of a distributed batch without Ray or a model: planning, writing in the file's order
whatever order results come back in, --resume, a lost worker, a failing line (issue 13)."""

import signal
from pathlib import Path

import pytest
from PIL import Image

from dreamshell.batch.plan import plan_lines
from dreamshell.batch.driver import BatchRun, OrderedWriter
from dreamshell.weights.models import Registry, demo_spec
from dreamshell.run.types import Control, ImageResult

LINES = [(1, "a red circle -S 7 -n 3"), (2, "a blue square -S -1"), (4, "a green square -S 30 -n 2"),
         (5, "a pink circle -I -1 -f 0.5 -S 40")]


def plan(lines=LINES):
    spec = demo_spec()
    return plan_lines(lines, Registry({spec.name: spec}), spec, None, "f.txt")


class FakePool:
    """Workers that finish their images last-submitted first; `lose` names images whose worker dies
    once; `fail` images that fail as the worker's GenerationError would."""

    def __init__(self, tasks, workers=2, lose=(), fail=()):
        self.tasks, self.lose, self.fail = tasks, set(lose), set(fail)
        self.actors = list(range(workers))
        self.model = [None] * workers
        self.load = [0] * workers
        self.down: dict = {}
        self.queued: list = []
        self.made: list[int] = []

    @property
    def alive(self):
        return len(self.actors)

    def close(self):
        pass

    def free(self):
        return [a for a in self.actors if self.load[a] < 2]

    def submit(self, actor, index, task, payload, notes):
        self.queued.append((index, actor, payload[0]))
        self.load[actor] += 1
        self.model[actor] = task.spec.name

    def wait(self, timeout):
        assert self.queued, "the driver waits on nothing: it stalled"
        events = []
        while self.queued:
            index, actor, request = self.queued.pop()   # newest first: out of the file's order
            self.load[actor] -= 1
            if index in self.lose:
                self.lose.discard(index)
                events.append(("lost", index, None))
            elif index in self.fail:
                events.append(("error", index, "the prompt is cursed"))
            else:
                self.made.append(index)
                colour = (request.seed % 256, len(request.prompt), 9)
                events.append(("ok", index, ImageResult(Image.new("RGB", (64, 64), colour), request, "txt2img",
                                                        "ab" * 32)))
        return events


def run(p, out, pool, resume=False, control=None, echo=None):
    errors = []
    writer = OrderedWriter(out, True, echo or (lambda text: None))
    batch = BatchRun(p, pool, writer, control or Control(), "f.txt", errors.append, resume)
    return batch, batch.run(), errors


def log_lines(out: Path) -> list[str]:
    return (out / "dream_log.txt").read_text().splitlines()


def test_the_plan_resolves_seeds_and_splits_lines_into_images():
    p = plan()
    assert not p.errors
    assert [t.request.seed for t in p.tasks] == [7, 8, 9, 9, 30, 31, 40]
    assert [t.number for t in p.tasks] == [1, 1, 1, 2, 4, 4, 5]
    assert p.tasks[-1].request.init_img == "-1" and p.tasks[-1].line_start == 6


def test_seeds_a_file_leaves_open_are_the_same_on_a_rerun():
    lines = [(1, "a red circle -n 2"), (2, "a blue square")]
    assert [t.request.seed for t in plan(lines).tasks] == [t.request.seed for t in plan(lines).tasks]


def test_results_out_of_order_are_written_in_the_files_order(tmp_path):
    out = tmp_path / "out"
    shown = []
    batch, end, errors = run(plan(), out, FakePool(plan().tasks), echo=shown.append)
    assert end == "done" and not errors and batch.written == 7
    names = sorted(p.name for p in out.glob("*.png"))
    assert names == ["000000.7.png", "000001.8.png", "000002.9.png", "000003.9.png", "000004.30.png",
                     "000005.31.png", "000006.40.png"]
    assert [line.split(": ")[0] for line in log_lines(out)] == [str(out / n) for n in names]
    assert f"-I {out / '000005.31.png'} -f 0.5" in log_lines(out)[-1]   # -I -1: the image before it
    assert shown[0].startswith(f"{out / '000000.7.png'}: ")


def test_resume_makes_only_what_the_log_lacks(tmp_path):
    out = tmp_path / "out"
    control = Control()

    def stop_after_three(text):
        if text.startswith(str(out / "000002.")):     # the third image
            control.stop.set()
    batch, end, _ = run(plan(), out, FakePool(plan().tasks), control=control, echo=stop_after_three)
    kept = batch.written   # the finished images are written, the rest dropped
    assert end == "stopped" and 3 <= kept < 7 and len(log_lines(out)) == kept
    pool = FakePool(plan().tasks)
    batch, end, errors = run(plan(), out, pool, resume=True)
    assert end == "done" and not errors and (batch.written, batch.skipped) == (7 - kept, kept)
    assert sorted(pool.made) == list(range(kept, 7))
    assert len(log_lines(out)) == 7 and len(set(log_lines(out))) == 7
    assert len(list(out.glob("*.png"))) == 7


def test_an_image_whose_worker_died_is_made_again_and_written_once(tmp_path):
    out = tmp_path / "out"
    pool = FakePool(plan().tasks, lose={1, 4})
    batch, end, errors = run(plan(), out, pool)
    assert end == "done" and not errors and batch.retried == 2
    assert len(log_lines(out)) == 7 and len(list(out.glob("*.png"))) == 7


def test_a_failing_image_keeps_the_lines_earlier_images_and_drops_the_rest(tmp_path):
    out = tmp_path / "out"
    batch, end, errors = run(plan(), out, FakePool(plan().tasks, fail={1}))
    assert errors == ["f.txt:1: the prompt is cursed"]
    assert batch.bad_lines == 1
    assert sorted(p.name for p in out.glob("*.png"))[:2] == ["000000.7.png", "000001.9.png"]
    assert len(log_lines(out)) == 5


def test_bad_lines_are_all_reported_with_their_numbers():
    p = plan([(1, "a -S -1"), (2, "!fetch x.png"), (3, "b -I nofile.png"), (4, "c -Z"), (5, "ok -S 1"),
              (6, "!switch nope")])
    assert [e.split(":")[1] for e in p.errors] == ["1", "2", "3", "4", "6"]
    assert p.errors[1] == "f.txt:2: !fetch is not run with --ray (only prompt lines and !switch NAME are)"


def test_resume_with_an_absolute_outdir_under_the_working_folder_remakes_nothing():
    """The log names the images relative to the working folder; -I -1 after a skipped image must name it
    as the writer did (the folder's own, absolute form), or its line looks new (issue 22, item 23)."""
    out = Path.cwd() / "out"
    batch, end, errors = run(plan(), out, FakePool(plan().tasks))
    assert end == "done" and batch.written == 7
    assert log_lines(out)[0].startswith("out/000000.7.png: ")          # as the log shows paths
    assert f"-I {out / '000005.31.png'} -f 0.5" in log_lines(out)[-1]    # as the writer named it
    pool = FakePool(plan().tasks)
    batch, end, errors = run(plan(), out, pool, resume=True)
    assert end == "done" and not errors and (batch.written, batch.skipped) == (0, 7) and pool.made == []
    assert len(log_lines(out)) == 7


# ----- Ctrl-C under --ray: run_ray with a fake Ray and the fake pool, real SIGINTs (issue 22, item 23)

@pytest.fixture
def fake_ray(monkeypatch):
    import sys
    import types

    from dreamshell.batch import cluster
    calls = []

    def shutdown():
        calls.append("shutdown")
        if "quiet" not in calls:
            signal.raise_signal(signal.SIGINT)      # and one more Ctrl-C while Ray shuts down
    monkeypatch.setitem(sys.modules, "ray", types.SimpleNamespace(shutdown=shutdown))
    monkeypatch.setattr(cluster, "connect", lambda ray, address: True)
    monkeypatch.setattr(cluster, "worker_layout", lambda *a: (2, {}, "cpu"))
    return calls


def ray_run(tmp_path, monkeypatch, pool):
    from dreamshell.app import InterruptibleRun
    from dreamshell.batch import cluster
    from dreamshell.cli import build_argparser
    commands = tmp_path / "f.txt"
    commands.write_text("".join(text + "\n" for _, text in LINES))
    args = build_argparser().parse_args(["--from_file", str(commands), "--ray", "-o", str(tmp_path / "out")])
    monkeypatch.setattr(cluster, "WorkerPool", lambda *a: pool)
    spec = demo_spec()
    said, errors = [], []
    try:
        with InterruptibleRun(control := Control()):
            code = cluster.run_ray(args, Registry({spec.name: spec}), spec, None, said.append, errors.append,
                                   control)
    except KeyboardInterrupt:   # caught here, so that a regression fails this test, not the whole run
        pytest.fail(f"a Ctrl-C escaped run_ray as a traceback; the summary was lost ({said[-1:]})")
    return code, said, errors


class CtrlCPool(FakePool):
    """Ctrl-C twice once three images are made: the first stops the batch, the second forces it."""

    def wait(self, timeout):
        events = super().wait(timeout)
        if len(self.made) >= 3:
            signal.raise_signal(signal.SIGINT)
            signal.raise_signal(signal.SIGINT)
        return events


def test_two_ctrl_c_under_ray_end_cleanly_with_the_summary(tmp_path, monkeypatch, fake_ray):
    code, said, errors = ray_run(tmp_path, monkeypatch, CtrlCPool([]))
    assert code == 130 and not errors and fake_ray == ["shutdown"]
    assert said[-1].startswith(f"{tmp_path / 'f.txt'}: stopped; ") and "not made (run the same command with --resume" \
        in said[-1], said


def test_two_ctrl_c_while_the_file_is_planned_end_cleanly(tmp_path, monkeypatch, fake_ray):
    from dreamshell.batch import cluster
    real = cluster.plan_lines

    def interrupted(*a, **k):
        signal.raise_signal(signal.SIGINT)
        signal.raise_signal(signal.SIGINT)
        return real(*a, **k)
    monkeypatch.setattr(cluster, "plan_lines", interrupted)
    code, said, errors = ray_run(tmp_path, monkeypatch, CtrlCPool([]))
    assert code == 130 and not errors and fake_ray == []
    assert said == [f"{tmp_path / 'f.txt'}: stopped before any image was made"]


def test_resume_with_a_log_that_is_a_fifo_is_one_line(tmp_path, monkeypatch, fake_ray):
    import os
    (tmp_path / "out").mkdir()
    os.mkfifo(tmp_path / "out" / "dream_log.txt")
    from dreamshell.batch import cluster
    from dreamshell.cli import build_argparser
    commands = tmp_path / "f.txt"
    commands.write_text("a red circle -S 7\n")
    fake_ray.append("quiet")
    args = build_argparser().parse_args(["--from_file", str(commands), "--ray", "--resume", "--no_log",
                                         "-o", str(tmp_path / "out")])
    monkeypatch.setattr(cluster, "WorkerPool", lambda *a: FakePool([]))
    spec = demo_spec()
    said, errors = [], []

    def hung(signum, frame):
        raise TimeoutError("waited 20 s on the FIFO")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(20)                           # a regression fails here instead of hanging the suite
    try:
        code = cluster.run_ray(args, Registry({spec.name: spec}), spec, None, said.append, errors.append, Control())
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)
    assert code == 1 and len(errors) == 1 and "dream_log.txt cannot be read" in errors[0], errors
