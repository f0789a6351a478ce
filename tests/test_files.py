"""Output names and dream_log.txt under two processes at once; reading a log back."""

import re
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dreamshell.store.dreamlog import append_log_line, read_commands
from dreamshell.store.naming import next_number, save_derived, save_numbered

WRITER = textwrap.dedent("""
    import sys
    from pathlib import Path
    from dreamshell.store.naming import save_numbered
    from dreamshell.store.dreamlog import append_log_line
    folder, tag = Path(sys.argv[1]), sys.argv[2]
    for i in range(200):
        body = (f"{tag}-{i}-" * 300).encode()
        path = save_numbered(folder, 1000 + i, body)
        append_log_line(folder / "dream_log.txt", path, f'"{tag} image {i} ' + "x" * 2000 + f'" -S {1000 + i}')
""")


def test_two_processes_claim_distinct_names_and_write_whole_log_lines(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    procs = [subprocess.Popen([sys.executable, "-c", WRITER, str(folder), tag]) for tag in ("A", "B")]
    assert [p.wait(timeout=120) for p in procs] == [0, 0]

    images = sorted(p for p in folder.iterdir() if p.suffix == ".png")
    numbers = [int(p.name.split(".")[0]) for p in images]
    assert len(images) == 400
    assert sorted(numbers) == list(range(400)), "every number used once, none skipped or reused"
    bodies = set()
    for p in images:
        data = p.read_bytes().decode()
        tag, i = data.split("-")[:2]
        assert data == f"{tag}-{i}-" * 300, f"{p.name} is not whole"
        assert p.name.endswith(f".{1000 + int(i)}.png")
        bodies.add((tag, i))
    assert len(bodies) == 400
    assert not [p for p in folder.iterdir() if p.name.endswith(".part")], "no temporary file left"

    lines = (folder / "dream_log.txt").read_text().splitlines()
    assert len(lines) == 400
    pattern = re.compile(r'^.*/?(\d{6})\.(\d+)\.png: "([AB]) image (\d+) x{2000}" -S (\d+)$')
    seen = set()
    for line in lines:
        m = pattern.match(line)
        assert m, f"torn or interleaved line: {line[:80]}..."
        assert m.group(2) == m.group(5)
        seen.add((m.group(3), m.group(4)))
    assert len(seen) == 400


def test_numbers_continue_after_the_highest_present(tmp_path):
    (tmp_path / "000041.7.png").write_bytes(b"x")
    (tmp_path / "notes.txt").write_text("x")
    assert next_number(tmp_path) == 42
    path = save_numbered(tmp_path, 5, b"png")
    assert path.name == "000042.5.png"


def test_existing_files_are_never_overwritten(tmp_path, monkeypatch):
    import dreamshell.store.naming as naming
    first = save_numbered(tmp_path, 9, b"one")
    # a number chosen that is already taken (another writer's file, a stale count): the file is kept
    # and the next number is used, never a replace
    monkeypatch.setattr(naming, "next_number", lambda folder: 0)
    second = save_numbered(tmp_path, 9, b"two")
    assert (first.name, second.name) == ("000000.9.png", "000001.9.png")
    assert first.read_bytes() == b"one" and second.read_bytes() == b"two"


def test_placing_a_file_refuses_an_existing_target(tmp_path):
    from dreamshell.store.fileops import place_without_overwrite
    tmp, final = tmp_path / "new.part", tmp_path / "000000.1.png"
    tmp.write_bytes(b"new")
    final.write_bytes(b"old")
    with pytest.raises(FileExistsError):
        place_without_overwrite(tmp, final)
    assert final.read_bytes() == b"old"


def test_derived_names_count_up(tmp_path):
    original = save_numbered(tmp_path, 3, b"orig")
    names = [save_derived(original, "upscale", f"u{i}".encode()).name for i in range(3)]
    assert names == ["000000.3.upscale.png", "000000.3.upscale-01.png", "000000.3.upscale-02.png"]
    assert original.read_bytes() == b"orig"


def test_log_reader_skips_comments_and_strips_paths(tmp_path):
    log = tmp_path / "dream_log.txt"
    log.write_text('# 2026-11-23 session\n\noutputs/000001.5.png: "a cat" -S 5\n"a dog" -S 6\n!fetch x.png\n')
    append_log_line(log, tmp_path / "000002.7.png", '"a cow" -S 7')
    assert [c for _, c in read_commands(log)] == ['"a cat" -S 5', '"a dog" -S 6', "!fetch x.png", '"a cow" -S 7']


def test_example_log_replays_in_a_dry_run(tmp_path):
    from dreamshell.cli import main
    example = Path(__file__).resolve().parent.parent / "dream_log.txt.example"
    assert main(["--dry_run", "--from_file", str(example)]) == 0
