"""`--from_file FILE --ray`: the demo model on a local Ray with two CPU workers gives the local run's
files, names and log lines; --resume, a killed worker and a bad line (issue 13)."""

import logging
import os
import signal
import sys
from pathlib import Path

import pytest
import ray

from dreamshell.cli import build_argparser, main
from dreamshell.weights.models import Registry, demo_spec
from dreamshell.batch.cluster import local_runtime_env, run_ray
from dreamshell.run.types import Control

STEPS = ["-s", "3"]
LINES = [
    "a red circle -S 11 -n 2",
    "a blue square -S 12",
    "a green triangle on a yellow background -S 13 -n 2",
    "a purple circle -S -1",
    "# a comment line is skipped",
    "a white square [red] -S 15 -C 7",
    "a yellow triangle -S 16 -A ddim",
    "an orange circle -S 17 -n 2",
    "a red square -I -1 -f 0.6 -S 18",
    "a blue circle -S 19 -V 5:0.3",
    "a green square -S 20",
    "a black triangle -S 21 -n 2",
    "a pink circle -S 22",
]
TOTAL = 16

pytestmark = pytest.mark.slow   # full size / Ray: minutes; CI runs it


@pytest.fixture(scope="module")
def local_ray():
    ray.init(num_cpus=2, runtime_env=local_runtime_env(), include_dashboard=False, log_to_driver=False,
             logging_level=logging.ERROR)
    yield ray
    ray.shutdown()


@pytest.fixture(scope="module")
def commands(tmp_path_factory):
    path = tmp_path_factory.mktemp("file") / "batch.txt"
    path.write_text("\n".join(LINES) + "\n")
    return path


@pytest.fixture(scope="module")
def local_run(commands, tmp_path_factory):
    """The reference: the same file run locally (no Ray), into `out` below its own working folder
    (as each Ray run below: `-I -1` names `out/NNNNNN.SEED.png` in both). On one thread, as each
    1-core worker runs: on CPU another thread count may move a few pixel values by one."""
    import torch
    where = tmp_path_factory.mktemp("local")
    back, threads = os.getcwd(), torch.get_num_threads()
    omp = os.environ.get("OMP_NUM_THREADS")
    os.chdir(where)
    os.environ["OMP_NUM_THREADS"] = "1"   # the generator keeps a thread count the user set, as Ray sets it
    torch.set_num_threads(1)
    try:
        assert main(["--from_file", str(commands), "-o", "out", *STEPS]) == 0
    finally:
        os.chdir(back)
        torch.set_num_threads(threads)
        if omp is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = omp
    return where / "out"


def ray_argv(commands, *more):
    return ["--from_file", str(commands), "-o", "out", *STEPS, "--ray", "--ray_cpus_per_worker", "1", *more]


def pngs(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("*.png"))}


def logged(folder: Path) -> list[str]:
    """The log's commands with the image's file name (the folder differs between runs)."""
    lines = (folder / "dream_log.txt").read_text().splitlines()
    return [f"{Path(head).name}: {command}" for head, _, command in (ln.partition(": ") for ln in lines)]


def assert_same_as_local(out: Path, local: Path) -> None:
    assert sorted(pngs(out)) == sorted(pngs(local))   # NNNNNN.SEED.png: the same numbers and seeds
    assert logged(out) == logged(local)               # one line per image, in the same order
    for name, data in pngs(local).items():            # pixels and all three chunks
        assert pngs(out)[name] == data, name


def busy_worker_pids() -> list[int]:
    """Ray worker processes making an image now (Ray titles them ray::ImageWorker.run)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if (entry / "cmdline").read_bytes().startswith(b"ray::ImageWorker.run"):
                    pids.append(int(entry.name))
            except OSError:
                continue
    return pids


def run_direct(commands, echo, control, *more):
    """run_ray as app.py calls it, with this test's echo and Control (Ctrl-C is control.stop)."""
    ap = build_argparser()
    args = ap.parse_args(ray_argv(commands, *more))
    spec = demo_spec()
    from dreamshell.cli import session_defaults
    errors = []
    code = run_ray(args, Registry({spec.name: spec}), spec, session_defaults(args, ap), echo, errors.append,
                   control)
    return code, errors


def test_a_ray_run_writes_the_local_runs_files_names_and_log(local_ray, commands, local_run, tmp_path, capsys):
    out = Path.cwd() / "out"
    assert main(ray_argv(commands)) == 0
    text = capsys.readouterr().out
    assert f"{TOTAL} image(s) on 2 Ray worker(s) (cpu)" in text
    assert f"{TOTAL} image(s) written, 0 already in the log" in text
    assert len(pngs(local_run)) == TOTAL
    assert_same_as_local(out, local_run)
    assert "000015." in text and "000016." not in text   # 16 images: 000000 to 000015


def test_resume_after_a_stop_makes_only_the_missing_images(local_ray, commands, local_run, tmp_path, capsys):
    out = Path.cwd() / "out"
    control = Control()
    shown = []

    def echo(text):
        shown.append(text)
        if "/000004." in text.split(": ")[0]:   # the fifth image
            control.stop.set()   # Ctrl-C after the fifth image
    code, errors = run_direct(commands, echo, control)
    assert code == 130 and not errors
    first = sorted(pngs(out))
    assert 5 <= len(first) < TOTAL
    assert first == sorted(pngs(local_run))[:len(first)]   # a prefix of the file's images, nothing torn

    assert main(ray_argv(commands, "--resume")) == 0
    text = capsys.readouterr().out
    assert f"{TOTAL - len(first)} image(s) written, {len(first)} already in the log" in text
    assert_same_as_local(out, local_run)                    # each image once, numbered as locally

    assert main(ray_argv(commands, "--resume")) == 0   # nothing left: nothing made again
    assert f"0 image(s) written, {TOTAL} already in the log" in capsys.readouterr().out
    assert_same_as_local(out, local_run)


def test_a_worker_killed_mid_run_loses_and_duplicates_nothing(local_ray, commands, local_run, tmp_path):
    out = Path.cwd() / "out"
    shown = []
    killed = []

    def echo(text):
        shown.append(text)
        if "/000000." in text.split(": ")[0] and not killed:
            pids = busy_worker_pids()
            os.kill(pids[0], signal.SIGKILL)   # it has images queued: they go to the other worker
            killed.append(pids[0])
    code, errors = run_direct(commands, echo, Control())
    assert code == 0 and not errors and killed
    assert any("handed to another worker after a worker died" in line for line in shown)
    assert_same_as_local(out, local_run)


def test_a_bad_line_is_reported_before_any_work_starts(commands, tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    lines = LINES[:6] + ["a circle -Z 3", "!fetch some.png"] + LINES[6:]
    bad.write_text("\n".join(lines) + "\n")
    out = Path.cwd() / "out"
    assert main(ray_argv(bad)) == 2
    err = capsys.readouterr().err
    assert f"{bad}:7: unknown switch '-Z'" in err
    assert f"{bad}:8: !fetch is not run with --ray" in err
    assert "2 bad line(s): nothing was run" in err
    assert not out.exists()


def test_without_ray_installed_ray_says_how_to_install_it(commands, tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "ray", None)   # import ray fails as if it were not installed
    assert main(ray_argv(commands)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ['error: --ray needs Ray, an optional extra: pip install "dreamshell[ray]"']
