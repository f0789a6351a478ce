"""Every way a line runs goes through one plan and one image step (issue 18): the cases where the local
run and the Ray path drifted apart, run on both paths. The Ray path here is the real driver, planner,
ordered writer and ImageWorker, with the workers in this process instead of Ray actors (tests/test_ray.py
runs real Ray); the dry run is checked against the run."""

import io
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from dreamshell.batch.driver import BatchRun, OrderedWriter
from dreamshell.batch.plan import plan_lines
from dreamshell.batch.worker import ImageWorker
from dreamshell.cli import main
from dreamshell.run.dryrun import DryRun
from dreamshell.run.types import Control
from dreamshell.store.pngmeta import read_chunks
from dreamshell.weights.models import load_registry


class InProcessPool:
    """WorkerPool's interface over ImageWorker objects in this process (one at a time, in order)."""

    def __init__(self, registry, workers: int = 1):
        self.actors = [ImageWorker(registry, "cpu", "auto") for _ in range(workers)]
        self.model = [None] * workers
        self.load = [0] * workers
        self.down: dict = {}
        self.gone: set = set()
        self.done: list = []

    @property
    def alive(self):
        return len(self.actors)

    def free(self):
        return [a for a in range(len(self.actors)) if self.load[a] < 1]

    def submit(self, actor, index, task, payload, notes):
        request, init, mask = payload
        reply = self.actors[actor].run(request, task.spec, task.plan.files, init, mask, notes)
        self.model[actor] = task.spec.name
        self.load[actor] += 1
        self.done.append((actor, index, reply))

    def wait(self, timeout):
        events = []
        for actor, index, reply in self.done:
            self.load[actor] -= 1
            events.append(("error", index, reply.error) if reply.error else ("ok", index, reply.result))
        self.done = []
        return events


def run_local(lines: list[str], out: Path) -> tuple[int, list[str]]:
    """The file run as `dreamshell --from_file FILE -o out` runs it: (exit status, what it printed)."""
    path = out.parent / f"{out.name}.txt"
    path.write_text("\n".join(lines) + "\n")
    printed = io.StringIO()
    from contextlib import redirect_stderr, redirect_stdout
    with redirect_stdout(printed), redirect_stderr(printed):
        code = main(["--from_file", str(path), "-o", str(out)])
    return code, printed.getvalue().splitlines()


def run_ray_path(lines: list[str], out: Path) -> tuple[int, list[str]]:
    """The same file through the Ray driver's code: plan every line first, then the workers."""
    registry = load_registry(None)
    printed: list[str] = []
    plan = plan_lines(list(enumerate(lines, 1)), registry, registry.default, None, "f.txt")
    if plan.errors:
        return 2, [f"error: {e}" for e in plan.errors]
    writer = OrderedWriter(out, True, printed.append)
    batch = BatchRun(plan, InProcessPool(registry), writer, Control(), "f.txt", lambda e: printed.append(f"error: {e}"),
                     resume=False)
    end = batch.run()
    return (0 if end == "done" and not batch.bad_lines else 1), printed


PATHS = {"local": run_local, "ray": run_ray_path}


@pytest.fixture
def pictures(tmp_path):
    folder = tmp_path / "pics"
    folder.mkdir()
    Image.new("RGB", (16, 16), (200, 0, 0)).save(folder / "tiny.png")
    Image.new("RGB", (9000, 64), (0, 0, 200)).save(folder / "wide.png")
    Image.new("RGB", (64, 64), (0, 200, 0)).save(folder / "square.png")
    Image.new("L", (32, 32), 255).save(folder / "half-size-mask.png")
    Image.new("RGB", (96, 80), (100, 100, 0)).save(folder / "96x80.png")
    return folder


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("picture, size", [("tiny.png", "16x16"), ("wide.png", "9000x64")])
def test_an_init_image_outside_the_sizes_is_refused_on_both_paths(path, picture, size, pictures, tmp_path):
    code, printed = PATHS[path]([f"a red circle -S 1 -I {pictures / picture}"], tmp_path / "out")
    assert code != 0
    assert any(f"-I {size} image: without -W/-H the image's own size is used, and sizes go from 64 to 8192"
               in line for line in printed), printed


@pytest.mark.parametrize("path", PATHS)
def test_a_mask_of_another_size_is_resized_with_a_note_on_both_paths(path, pictures, tmp_path):
    line = f"a yellow circle -S 2 -s 4 -I {pictures / 'square.png'} -M {pictures / 'half-size-mask.png'}"
    code, printed = PATHS[path]([line], tmp_path / "out")
    assert code == 0, printed
    assert any("is 32x32; it is resized to the image's 64x64" in p for p in printed), printed


def test_the_dry_run_shows_the_size_the_run_writes(pictures, tmp_path):
    line = f"a red circle -S 3 -s 3 -I {pictures / '96x80.png'} --fit"
    ok, text = DryRun(load_registry(None)).describe(line)
    assert ok and "-W 96 -H 80" in text
    code, _ = run_local([line], tmp_path / "out")
    assert code == 0
    assert Image.open(next((tmp_path / "out").glob("*.png"))).size == (96, 80)


@pytest.mark.parametrize("line", ["x -A ddim --schedule karras", "x -S -1", "x --lora_dir_is_not_a_switch",
                                  "x <lora:nope:1>", "x --vae nowhere.safetensors", "x -s 1001"])
def test_the_dry_run_refuses_what_the_run_refuses_with_the_same_words(line, tmp_path):
    ok, text = DryRun(load_registry(None)).describe(line)
    code, printed = run_local([line], tmp_path / "out")
    errors = [p for p in printed if p.startswith("error: ")]
    assert not ok and code != 0 and errors
    assert text == errors[0], (text, errors)


def test_the_dry_run_uses_the_launchs_folders(tmp_path):
    loras = tmp_path / "my-loras"
    loras.mkdir()
    (tmp_path / "f.txt").write_text("a cat <lora:mine:1>\n")
    printed = io.StringIO()
    from contextlib import redirect_stdout
    with redirect_stdout(printed):
        assert main(["--dry_run", "--from_file", str(tmp_path / "f.txt")]) == 1
        (loras / "mine.safetensors").write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
        assert main(["--dry_run", "--from_file", str(tmp_path / "f.txt"), "--lora_dir", str(loras)]) == 0


FILE = [
    "a red circle on a blue background -S 11 -s 4 -n 2 -g",
    "a blue square -S 12 -s 4 -U 2 0.5 --save_original",
    "a red cross on a blue background <lora:demo_cross:0.8> -S 13 -s 4",
    "a yellow circle -S 14 -s 4 -I -1 -f 0.6",
]


def test_a_file_with_grids_upscales_masks_and_loras_writes_the_same_files_on_both_paths(pictures, tmp_path):
    lines = FILE + [f"a green circle -S 15 -s 4 -I {pictures / 'square.png'} -M {pictures / 'half-size-mask.png'}"]
    local_code, _ = run_local(lines, tmp_path / "local")
    ray_code, printed = run_ray_path(lines, tmp_path / "ray")
    assert local_code == 0 and ray_code == 0, printed
    local, ray = tmp_path / "local", tmp_path / "ray"
    names = sorted(p.name for p in local.glob("*.png"))
    assert names == sorted(p.name for p in ray.glob("*.png"))
    assert any(".grid." in n for n in names) and any(".original." in n for n in names) and len(names) == 8
    for name in names:
        assert (np.asarray(Image.open(local / name)) == np.asarray(Image.open(ray / name))).all(), name
        if str(local) not in read_chunks(local / name)["Dream"]:          # -I -1 names its own folder
            assert (local / name).read_bytes() == (ray / name).read_bytes(), name
    logs = [(d / "dream_log.txt").read_text().replace(str(d), "OUT") for d in (local, ray)]
    assert logs[0] == logs[1]


def test_a_rerun_in_a_fresh_process_plans_the_same_seeds(tmp_path):
    """Ray plans the seeds a file leaves open from the file's text, so --resume finds the same images."""
    code = ("import sys\nfrom dreamshell.batch.plan import plan_lines\nfrom dreamshell.weights.models import "
            "load_registry\nr = load_registry(None)\nlines = [(1, 'a red circle -n 3'), (2, 'a blue square')]\n"
            "print([t.request.seed for t in plan_lines(lines, r, r.default, None, 'f').tasks])\n")
    runs = [subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                           cwd=Path(__file__).resolve().parent.parent).stdout for _ in range(2)]
    assert runs[0] == runs[1] and len(eval(runs[0])) == 4
