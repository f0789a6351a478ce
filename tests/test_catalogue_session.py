"""Bad inputs that only show when a line runs: each is one clear line, the shell goes on, and nothing
written before is changed (issue 12's catalogue, the session's half; tests/test_catalogue.py has the
line-level half)."""


import pytest
from conftest import fake_session_at
from PIL import Image

from dreamshell.run.dispatch import Dispatcher
from dreamshell.run.model_host import ModelHost
from dreamshell.run.postprocess import register_fix


@pytest.fixture
def shell_like(tmp_path):
    """A dispatcher on the fake model, as a batch or the shell runs lines; one good image made first."""
    session = fake_session_at(tmp_path, steps=2)
    out, errors = [], []
    d = Dispatcher(session, echo=out.append, error=errors.append)
    register_fix(d)
    assert not d.execute("first image -S 1").failed
    before = {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}
    return d, out, errors, before


def _files(tmp_path):
    return {p.name: p.read_bytes() for p in (tmp_path / "out").iterdir() if p.is_file()}


def make_files(tmp_path):
    Image.new("RGB", (64, 64), "red").save(tmp_path / "init.png")
    (tmp_path / "notimage.png").write_text("hello, not a picture")
    good = (tmp_path / "init.png").read_bytes()
    (tmp_path / "corrupt.png").write_bytes(good[:60])
    Image.new("RGB", (9000, 64), "red").save(tmp_path / "wide.png")
    Image.new("L", (32, 32), 255).save(tmp_path / "smallmask.png")


CASES = [
    ("x -I {tmp}/missing.png", "-I {tmp}/missing.png: no such file"),
    ("x -I {tmp}/notimage.png", "not a readable image"),
    ("x -I {tmp}/corrupt.png", "not a readable image"),
    ("x -I {tmp}/wide.png", "without -W/-H the image's own size is used, and sizes go from 64 to 8192"),
    ("x -I {tmp}/init.png -W 128 -H 128", "add --fit to resize it, or drop -W/-H"),
    ("x -S -5", "-S -5 refers to the seed 5 image(s) back"),
    ("x -o /proc/forbidden/out", "cannot write to /proc/forbidden/out"),
    ("x --model nothere", "no model 'nothere'"),
    ("!fix {tmp}/missing.png -U 2", "no such file"),
    ("!replay {tmp}", "is a folder"),
]


@pytest.mark.parametrize("line,message", CASES, ids=[c[0].split(" ", 1)[-1][:30] for c in CASES])
def test_bad_inputs_at_run_time_are_one_line_and_change_nothing(shell_like, tmp_path, line, message):
    d, out, errors, before = shell_like
    make_files(tmp_path)
    outcome = d.execute(line.format(tmp=tmp_path))
    assert outcome.failed
    assert len(errors) == 1 and "\n" not in errors[0] and len(errors[0]) <= 400
    assert message.format(tmp=tmp_path) in errors[0], errors[0]
    assert not errors[0].startswith("unexpected")
    assert _files(tmp_path) == before, "nothing written before is changed"
    assert not d.execute("next image -S 2").failed, "the shell goes on with the model loaded"


def test_a_mask_of_another_size_is_resized_with_a_note(shell_like, tmp_path):
    d, out, errors, before = shell_like
    make_files(tmp_path)
    assert not d.execute(f"x -I {tmp_path}/init.png -M {tmp_path}/smallmask.png -S 3").failed
    assert any("-M" in line and "is 32x32; it is resized to the image's 64x64" in line for line in out)
    assert errors == []


def test_a_binary_command_file_is_one_line_before_anything_loads(tmp_path, capsys, monkeypatch):
    from dreamshell.cli import main
    preloads = []
    monkeypatch.setattr(ModelHost, "preload", lambda self, spec: preloads.append(spec))
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 4)
    assert main(["--from_file", str(binary), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "is binary" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists()
    assert preloads == [], "no model load was started"
