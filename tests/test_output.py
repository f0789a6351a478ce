"""The output folder: one owner of name, chunks and log line; crash-consistent; whole log lines on a full disk."""

import errno
import os
import random
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from PIL import Image

from dreamshell.store.dreamlog import read_commands
from dreamshell.store.naming import save_numbered
from dreamshell.store.output import OutputError, OutputFolder
from dreamshell.line.formatter import format_request
from dreamshell.line.parser import parse_request
from dreamshell.store.pngmeta import ImageMeta, png_bytes, read_recipe

REQUEST = parse_request('"a red circle" -s 20 -S 7 -W 64 -H 64 -C 5 -A k_euler --model demo')


def meta(seed=7):
    return ImageMeta(REQUEST.with_(seed=seed), "ab" * 32, "0.2.0")


def logged_names(folder: Path) -> list[str]:
    if not (folder / "dream_log.txt").exists():
        return []
    return [os.path.basename(line.split(": ", 1)[0])
            for line in (folder / "dream_log.txt").read_text().splitlines() if not line.startswith("#")]


def test_an_image_gets_its_chunks_and_its_log_line(tmp_path):
    out = OutputFolder(tmp_path / "out")
    path = out.save_image(Image.new("RGB", (64, 64), "red"), meta())
    assert path.name == "000000.7.png"
    assert read_recipe(path) == REQUEST
    assert logged_names(tmp_path / "out") == ["000000.7.png"]
    assert [c for _, c in read_commands(tmp_path / "out" / "dream_log.txt")] == [
        '"a red circle" -s 20 -S 7 -W 64 -H 64 -C 5 -A k_euler --model demo']


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def test_the_next_start_repairs_what_a_killed_run_left(tmp_path):
    folder = tmp_path / "out"
    out = OutputFolder(folder)
    out.save_image(Image.new("RGB", (64, 64), "red"), meta(1))
    # killed after the image was linked into place but before its log line
    unlogged = save_numbered(folder, 2, png_bytes(Image.new("RGB", (64, 64), "blue"), meta(2)))
    # killed in the middle of writing a log line, and while writing a temporary file
    with open(folder / "dream_log.txt", "a") as f:
        f.write("outputs/000009.9.png: \"a half writ")
    (folder / f".tmp-{dead_pid()}-123-0.part").write_bytes(b"half a png")
    alive = folder / f".tmp-{os.getpid()}-456-0.part"   # a live writer's file is left alone
    alive.write_bytes(b"being written")
    notes = OutputFolder(folder).open()
    assert logged_names(folder) == ["000000.1.png", unlogged.name]
    assert (folder / "dream_log.txt").read_text().endswith("\n")
    assert "half a" not in (folder / "dream_log.txt").read_text()
    assert [p.name for p in folder.glob("*.part")] == [alive.name]
    assert any("000001.2.png had no log line" in n and "logged again from its own recipe" in n for n in notes)
    assert any("removed 1 unfinished temporary file" in n for n in notes)
    assert OutputFolder(folder).open() == [], "nothing left to repair"


KILLED_RUN = textwrap.dedent("""
    import random, sys, time
    from pathlib import Path
    sys.path.insert(0, sys.argv[2])
    from fake_generator import FakeGenerator
    from dreamshell.run.model_host import ModelHost
    from dreamshell.weights.models import ModelSpec, Registry
    from dreamshell.line.parser import parse_request
    from dreamshell.run.session import Session
    import dreamshell.store.output as output
    real_append = output.append_log_line

    def slow_append(*args):   # a slow fsync: widens the moment between the PNG and its line
        time.sleep(0.01)
        return real_append(*args)
    output.append_log_line = slow_append
    folder = Path(sys.argv[1])
    spec = ModelSpec("fake", folder, "sd1", width=64, height=64, steps=2, cfg_scale=5.0, sampler="k_euler")
    session = Session(Registry({"fake": spec}), ModelHost(lambda: FakeGenerator(0.02)), folder)
    print("ready", flush=True)
    session.run(parse_request("a shape -S 100 -n 10"))
    print("done", flush=True)
""")


def test_kill_9_at_random_moments_leaves_no_png_without_its_log_line(tmp_path):
    rng = random.Random(8)
    tests_dir = str(Path(__file__).resolve().parent)
    folder = tmp_path / "out"
    kills = 0
    for trial in range(12):
        proc = subprocess.Popen([sys.executable, "-c", KILLED_RUN, str(folder), tests_dir],
                                stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "ready"
        time.sleep(rng.uniform(0.0, 0.25))
        proc.kill()
        proc.wait()
        kills += proc.returncode == -9
        OutputFolder(folder).open()   # the next start
        pngs = sorted(p.name for p in folder.glob("*.png"))
        assert sorted(logged_names(folder)) == pngs, f"trial {trial}"
        assert not list(folder.glob("*.part")), f"trial {trial}: a temporary file is left"
        for _, command in read_commands(folder / "dream_log.txt") if pngs else ():
            parse_request(command)   # every line whole
    assert kills >= 10, "most runs were killed mid-way"
    assert len(list(folder.glob("*.png"))) > 0


def test_a_log_line_that_cannot_be_written_takes_its_image_back_out(tmp_path, monkeypatch):
    folder = tmp_path / "out"
    out = OutputFolder(folder)
    out.save_image(Image.new("RGB", (64, 64)), meta(1))
    before = (folder / "dream_log.txt").read_bytes()
    import dreamshell.store.fileops as fileops
    real_write = os.write

    def half_then_full(fd, data):
        if os.fstat(fd).st_size == len(before) and b'"a red circle"' in bytes(data):
            real_write(fd, bytes(data)[:20])       # half a line, then the disk is full
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(fd, data)
    monkeypatch.setattr(fileops.os, "write", half_then_full)
    with pytest.raises(OutputError) as e:
        out.save_image(Image.new("RGB", (64, 64)), meta(2))
    monkeypatch.undo()
    message = str(e.value)
    assert "\n" not in message and "no space left" in message and "the image is not saved" in message
    assert (folder / "dream_log.txt").read_bytes() == before, "the log line is written whole or not at all"
    assert sorted(p.name for p in folder.glob("*.png")) == ["000000.1.png"], "no unlogged image"
    assert not list(folder.glob("*.part"))


@pytest.fixture
def tiny_disk(tmp_path):
    """A 96 KiB tmpfs (needs root, as CI runs); the monkeypatched test above covers other machines."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=96k", "tmpfs", str(mount)],
                      capture_output=True).returncode != 0:
        pytest.skip("cannot mount a tmpfs here (not root)")
    yield mount
    subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_is_one_line_and_nothing_is_torn(tiny_disk):
    out = OutputFolder(tiny_disk)
    noise = Image.effect_noise((96, 96), 100).convert("RGB")   # ~28 KB: does not compress
    saved, errors = [], []
    for seed in range(10):
        try:
            saved.append(out.save_image(noise, meta(seed)))
        except OutputError as e:
            errors.append(str(e))
    assert saved and errors, "some images fit, then the disk was full"
    assert all("no space left" in e and "\n" not in e for e in errors)
    assert sorted(logged_names(tiny_disk)) == sorted(p.name for p in saved)
    assert sorted(p.name for p in tiny_disk.glob("*.png")) == sorted(p.name for p in saved)
    assert not list(tiny_disk.glob("*.part"))


def test_a_folder_that_cannot_be_written_is_one_line(tmp_path):
    with pytest.raises(OutputError, match=r"^cannot write to /proc/forbidden: "):
        OutputFolder(Path("/proc/forbidden")).save_image(Image.new("RGB", (8, 8)), meta())
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(OutputError, match="it is not a folder"):
        OutputFolder(afile).save_image(Image.new("RGB", (8, 8)), meta())


# ----- one way to split a log line (issue 22, item 21)

@pytest.mark.parametrize("name", ["run: 2", "#1", "# notes", "a: b/#c: d"])
def test_a_folder_named_with_colons_or_hashes_is_not_logged_again_at_each_start(tmp_path, name):
    from dreamshell.batch.plan import LogIndex
    from dreamshell.store.dreamlog import read_commands
    folder = Path(name)                          # relative, as -o gives it (the test runs in its own folder)
    for start in range(3):
        out = OutputFolder(folder)
        assert out.open() == [], f"start {start}: nothing to repair"
        out.save_image(Image.new("RGB", (64, 64), "red"), meta(start))
    lines = (folder / "dream_log.txt").read_text().splitlines()
    assert len(lines) == 3
    assert [c for _, c in read_commands(folder / "dream_log.txt")] == [meta(s).command for s in range(3)]
    index = LogIndex(folder)
    assert index.take(meta(1).request) == str(folder / "000001.1.png")


def test_log_lines_split_at_the_image_name_whatever_the_folder():
    from dreamshell.line.logline import split_log_line
    from dreamshell.line.parser import strip_log_prefix
    for folder in ("out: x", "#1", "a/b: c/#d", "C:\\pics: new"):
        sep = "\\" if "\\" in folder else "/"
        for name in ("000012.345.png", "000012.345.upscale.png", "000012.345.upscale-01.png"):
            line = f'{folder}{sep}{name}: "a: b" -S 345 -o "x: y/000001.2.png: z"'
            assert split_log_line(line) == (f"{folder}{sep}{name}", '"a: b" -S 345 -o "x: y/000001.2.png: z"')
            assert strip_log_prefix(line) == '"a: b" -S 345 -o "x: y/000001.2.png: z"'
    assert split_log_line("# grid out/000001.5.grid.png of 2 images: a -n 2") is None
    assert split_log_line("000001.5.grid.png: a") is None and split_log_line("cat.png: a") is None


def test_an_image_in_a_folder_starting_with_a_hash_is_logged_so_it_never_reads_as_a_comment(tmp_path):
    out = OutputFolder(Path("# x"))
    out.save_image(Image.new("RGB", (64, 64), "red"), meta())
    assert (Path("# x") / "dream_log.txt").read_text().startswith("./# x/000000.7.png: ")


# ----- numbers and grids after a deletion or a kill (issue 22, item 26)

def test_the_number_of_a_deleted_image_is_not_given_again(tmp_path):
    first = tmp_path / "first"
    OutputFolder(first).save_image(Image.new("RGB", (64, 64), "red"), meta(0))
    (first / "000000.0.png").unlink()
    OutputFolder(first).save_image(Image.new("RGB", (64, 64), "red"), meta(0))   # the log remembers 000000
    assert sorted(p.name for p in first.glob("*.png")) == ["000001.0.png"]
    folder = tmp_path / "out"
    out = OutputFolder(folder)
    for seed in (1, 2, 3):
        out.save_image(Image.new("RGB", (64, 64), "red"), meta(seed))
    (folder / "000002.3.png").unlink()
    (folder / "000001.2.png").unlink()
    assert out.save_image(Image.new("RGB", (64, 64), "red"), meta(4)).name == "000003.4.png"
    assert OutputFolder(folder).save_image(Image.new("RGB", (64, 64), "red"), meta(5)).name == "000004.5.png"
    # another process appends to the log meanwhile: its numbers count too
    with open(folder / "dream_log.txt", "a") as f:
        f.write(f"{folder / '000041.9.png'}: \"gone\" -S 9\n")
    assert out.save_image(Image.new("RGB", (64, 64), "red"), meta(6)).name == "000042.6.png"


def test_a_grid_killed_before_its_comment_gets_it_back_at_the_next_start(tmp_path):
    from dreamshell.store.naming import save_derived
    folder = tmp_path / "out"
    out = OutputFolder(folder)
    first = out.save_image(Image.new("RGB", (64, 64), "red"), meta(1))
    out.save_image(Image.new("RGB", (64, 64), "red"), meta(2))
    grid_request = REQUEST.with_(seed=1, iterations=2, grid=False)
    out.save_grid(first, Image.new("RGB", (128, 64)), ImageMeta(grid_request, "ab" * 32), 2)
    log = (folder / "dream_log.txt").read_text()
    assert log.splitlines()[-1] == f"# grid {folder / '000000.1.grid.png'} of 2 images: {format_request(grid_request)}"
    # killed after the second grid was in place, before its comment
    killed = save_derived(first, "grid", png_bytes(Image.new("RGB", (128, 64)), ImageMeta(grid_request, "ab" * 32)))
    notes = OutputFolder(folder).open()
    assert notes == [f"{killed} had no '# grid' log line (the run that made it was stopped); it is noted again "
                     "from its own recipe"]
    assert (folder / "dream_log.txt").read_text() == \
        log + f"# grid {killed} of 2 images: {format_request(grid_request)}\n"
    assert OutputFolder(folder).open() == []
