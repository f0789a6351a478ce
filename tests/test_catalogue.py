"""A catalogue of bad input at the line, file and dry-run level: each gets ONE clear line that teaches.

The session-level cases (init images, masks, full disks, checkpoints) are in the session's tests.
"""

import pytest

from dreamshell.cli import main
from dreamshell.store.dreamlog import CommandFileError, read_commands
from dreamshell.line.limits import MAX_COMMAND_FILE_BYTES, MAX_LINE_CHARS
from dreamshell.weights.models import ModelsFileError, load_registry
from dreamshell.line.parser import ParseError, parse_line
from dreamshell.line.safetext import MESSAGE_LIMIT, first_unsafe

LINES = [
    # (line, words the one-line message must contain)
    ("a cat -W 500", ["'500'", "multiples of 8"]),
    ("a cat -H 0", ["'0'", "multiples of 8 from 64 to 8192"]),
    ("a cat -W 99999", ["'99999'", "from 64 to 8192"]),
    ("a cat -n 0", ["'0' is too small", "the count is a whole number >= 1"]),
    ("a cat -s 0", ["'0' is too small", "steps are a whole number >= 1"]),
    ("a cat -s -5", ["'-5' is too small"]),
    ("a cat -C nan", ["'nan' is not a finite number", "from 0 to 100"]),
    ("a cat -C inf", ["not a finite number"]),
    ("a cat -C -1", ["'-1' is out of range", "from 0 to 100"]),
    ("a cat -f -0.5", ["out of range", "above 0 and at most 1"]),
    ("a cat -v nan", ["not a finite number", "from 0 to 1"]),
    ("a cat -U nan", ["not a finite number"]),
    ("a cat -A euler_b", ["unknown sampler 'euler_b'", "samplers: ddim"]),
    ("a cat -A k_eulr", ["did you mean 'k_euler'"]),
    ('a cat -o "nl\nx"', ["control character (\\n", "one line of plain text"]),
    ('"a\nb" -S 1', ["control character (\\n"]),
    ("a cat -o 'tab\x1b[2J'", ["control character (\\x1b"]),
    ('a cat -o "Bob"s pics"', ["cannot read the switches", "No closing quotation"]),
    ('"a "quoted" cat" -S 1', ["text right after the closing quote", "put a space"]),
    ('"a cat -S 1', ["never closed", '\\"']),
    ("a (red cat -S 1", ["unbalanced '('", "\\("]),
    ("a red) cat -S 1", ["unbalanced ')'", "\\)"]),
    ("a (a (a (a (a (a", ["nested 4 deep", "at most 3"]),
    ("a [dark cat", ["'[' without ']'"]),
    ("a cat -n 100000", ["-n 100000 is too many", "the most is 1000"]),
    ("a cat -n 4294967295", ["the most is 1000"]),
    ("a cat -s 100000", ["-s 100000", "at most 1000"]),
    ("a cat -s 1001 -A ddim", ["the ddim sampler", "at most 1000"]),
    ("a cat -s " + "9" * 5000, ["is not a whole number"]),
    ("a cat -S " + "9" * 30, ["too large", "from 0 to 4294967295"]),
    ("p" * 3000, ["3000 characters", "the most is 2000"]),
    ("x" * (MAX_LINE_CHARS + 1), [f"at most {MAX_LINE_CHARS}"]),
    ("a cat [/bold] -Z[red]", ["unknown switch '-Z[red]'"]),
]


@pytest.mark.parametrize("line,words", LINES, ids=[repr(line)[:40] for line, _ in LINES])
def test_bad_lines_get_one_clear_line(line, words):
    with pytest.raises(ParseError) as info:
        parse_line(line)
    text = str(info.value)
    for w in words:
        assert w in text
    assert "\n" not in text and len(text) <= MESSAGE_LIMIT and first_unsafe(text) is None


def test_quotes_inside_quoted_values_are_written_with_a_backslash():
    from dreamshell.line.parser import parse_request
    assert parse_request('a cat -o "say \\"hi\\""').outdir == 'say "hi"'
    assert parse_request('a cat -o "Bob\'s pics"').outdir == "Bob's pics"


def _file_error(path) -> str:
    with pytest.raises(CommandFileError) as info:
        read_commands(path)
    text = str(info.value)
    assert "\n" not in text and len(text) <= MESSAGE_LIMIT and first_unsafe(text) is None
    return text


def test_command_files_that_are_not_text_are_refused_before_running(tmp_path):
    binary = tmp_path / "image.png"
    binary.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)) * 40)
    assert "is binary (a NUL byte on line 3)" in _file_error(binary)
    latin = tmp_path / "latin1.txt"
    latin.write_bytes('"a caf\xe9" -S 1\n'.encode("latin-1"))
    assert "not UTF-8 text (byte 0xe9 on line 1)" in _file_error(latin)
    assert "is a folder" in _file_error(tmp_path)
    assert "no such file" in _file_error(tmp_path / "missing.txt")
    assert "not a regular file" in _file_error("/dev/zero")


def test_huge_command_files_and_lines_are_refused(tmp_path):
    huge = tmp_path / "huge.txt"
    with open(huge, "wb") as f:
        f.truncate(MAX_COMMAND_FILE_BYTES + 1)  # sparse: no disk used
    assert "a command file is at most 64 MB" in _file_error(huge)
    long_line = tmp_path / "long.txt"
    long_line.write_text("a cat -S 1\n" + "x" * (MAX_LINE_CHARS + 1) + "\n")
    assert f"line 2 is {MAX_LINE_CHARS + 1} characters long" in _file_error(long_line)


def test_a_windows_log_with_a_bom_and_crlf_reads(tmp_path):
    f = tmp_path / "log.txt"
    f.write_bytes('\ufeffout/000001.5.png: "a cat" -S 5\r\n"a dog" -S 6\r\n'.encode("utf-8"))
    assert read_commands(f) == [(1, '"a cat" -S 5'), (2, '"a dog" -S 6')]


@pytest.mark.parametrize("content,words", [
    (b"\x00\x01\x02" * 1000, ["is binary"]),
    (b"a cat -S 1\n\xff\xfe garbage\n", ["not UTF-8 text", "line 2"]),
])
def test_the_dry_run_refuses_a_bad_command_file_in_one_line(tmp_path, capsys, content, words):
    f = tmp_path / "cmds.txt"
    f.write_bytes(content)
    assert main(["--dry_run", "--from_file", str(f)]) == 2
    out = capsys.readouterr().out.strip()
    assert len(out.splitlines()) == 1 and out.startswith("error: ")
    for w in words:
        assert w in out


def test_the_dry_run_goes_on_after_a_bad_line(tmp_path, capsys):
    f = tmp_path / "cmds.txt"
    f.write_text("a cat -n 0\na (dog -S 1\na red circle -S 3\n")
    assert main(["--dry_run", "--from_file", str(f)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("line 1: error: -n: '0' is too small")
    assert out[1].startswith("line 2: error: prompt: unbalanced '('")
    assert out[2].startswith('line 3: "a red circle" -s 20 -S 3')
    assert out[3] == "2 bad line(s)"


MODELS_FILES = [
    ("m: [1, 2\n", ["not valid YAML", "at line 2"]),
    ("m:\n  weights: !!python/object/apply:os.system [\"touch pwned\"]\n",
     ["python/object/apply:os.system", "is not allowed", "plain YAML", "never Python objects"]),
    ("m: !!python/object:os.system\n  x: 1\n", ["python/object:os.system", "is not allowed"]),
    ("m:\n  kind: sd1\n", ["has no 'weights'"]),
    ("'[red]x\u202e':\n  weights: x\n  kind: sd9\n",
     ["model '[red]x\\u202e' has kind 'sd9'", "kinds are sd1, "]),
    ("'\x1b]0;t\x07':\n  weights: x\n", ["not valid YAML", "#x001b"]),
    ("upscalers: [1, 2]\n", ["'upscalers' maps factors"]),
]


@pytest.mark.parametrize("text,words", MODELS_FILES)
def test_bad_models_files_are_one_line(tmp_path, text, words):
    f = tmp_path / "models.yaml"
    f.write_text(text)
    with pytest.raises(ModelsFileError) as info:
        load_registry(f)
    message = str(info.value)
    for w in words:
        assert w in message
    assert "\n" not in message and first_unsafe(message) is None
    assert not (tmp_path / "pwned").exists() and not (tmp_path.parent / "pwned").exists()


def test_models_files_that_are_not_files_are_one_line(tmp_path):
    from pathlib import Path
    for path in (tmp_path, Path("/dev/zero")):
        with pytest.raises(ModelsFileError, match="not a regular file"):
            load_registry(path)


def test_a_model_with_missing_weights_is_named_by_the_dry_run(tmp_path, capsys):
    models = tmp_path / "models.yaml"
    models.write_text("gone:\n  weights: nowhere/w.safetensors\n")
    cmds = tmp_path / "cmds.txt"
    cmds.write_text("a cat -S 1\n")
    assert main(["--config", str(models), "--dry_run", "--from_file", str(cmds)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert "model 'gone': " in out[0] and "does not exist" in out[0]   # the words a run gives
