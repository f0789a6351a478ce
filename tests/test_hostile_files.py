"""Files that are not what their names say (issue 22, items 19, 20, 22, 25): FIFOs and links to /dev/zero,
damaged and hostile weights, models files that are bombs or hold values a line would refuse, deeply
nested JSON in image chunks, names too long for the file system. Each is one line (a UserError), never
a hang or a traceback.

A case that used to hang runs in a child interpreter with a timeout and a memory cap, so a regression
fails here instead of stopping the suite."""

import contextlib
import io
import os
import pickle
import resource
import signal
import struct
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import pytest
from PIL import Image, PngImagePlugin

from dreamshell.line.errors import UserError
from dreamshell.line.parser import parse_request
from dreamshell.store.formats import fetch_recipe
from dreamshell.store.output import OutputFolder
from dreamshell.store.pngmeta import ImageMeta, MetadataError, png_bytes
from dreamshell.weights.checkpoint import NotAModel, ckpt_keys
from dreamshell.weights.library import Folders, Library
from dreamshell.weights.models import ModelsFileError, Registry, load_registry

ROOT = Path(__file__).resolve().parent.parent


def finishes(code: str, timeout: float = 60) -> str:
    """Run code in a fresh interpreter (in the test's working folder) and return what it printed; a
    hang fails the test. Memory is capped at 2 GB, so reading /dev/zero whole cannot eat the machine."""
    def cap():
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    try:
        done = subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True,
                              timeout=timeout, preexec_fn=cap, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"did not finish in {timeout} s (it waits on a FIFO or reads without end):\n{code}")
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


@contextlib.contextmanager
def deadline(seconds: int = 20):
    """For in-process steps near a FIFO: a regression that waits on one fails here (SIGALRM interrupts
    the blocked open) instead of hanging the suite."""
    def hung(signum, frame):
        raise TimeoutError(f"waited {seconds} s: something opened a FIFO")
    old = signal.signal(signal.SIGALRM, hung)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


def fifo(path: Path) -> Path:
    os.mkfifo(path)
    return path


def zero_link(path: Path) -> Path:
    path.symlink_to("/dev/zero")
    return path


def png_with(chunks: dict[str, str]) -> bytes:
    info = PngImagePlugin.PngInfo()
    for k, v in chunks.items():
        info.add_text(k, v)
    buf = io.BytesIO()
    Image.new("RGB", (8, 8), (1, 2, 3)).save(buf, "PNG", pnginfo=info)
    return buf.getvalue()


# ----- item 19: FIFOs and endless files

def test_fetch_of_a_fifo_or_dev_zero_is_one_line(tmp_path):
    pipe, zero = fifo(tmp_path / "pipe.png"), zero_link(tmp_path / "zero.png")
    out = finishes(f"""
        from dreamshell.store.formats import fetch_recipe, MetadataError
        for path in ({str(pipe)!r}, {str(zero)!r}):
            try:
                fetch_recipe(path)
            except MetadataError as e:
                print(e)
    """)
    lines = out.splitlines()
    assert len(lines) == 2 and all("not a regular file" in line for line in lines), out


@pytest.mark.parametrize("name", ["model.ckpt", "model.safetensors", "model"])
def test_model_that_is_a_fifo_is_refused_at_launch(tmp_path, name):
    pipe = fifo(tmp_path / name)
    out = finishes(f"""
        from dreamshell.weights.models import Registry, ModelsFileError
        try:
            Registry({{}}).get({str(pipe)!r})
        except ModelsFileError as e:
            print(e)
    """)
    assert "not a regular file" in out and "--model" in out, out


def test_ckpt_that_links_to_dev_zero_is_refused(tmp_path):
    zero = zero_link(tmp_path / "zero.ckpt")
    out = finishes(f"""
        from dreamshell.weights.checkpoint import ckpt_keys, NotAModel
        try:
            ckpt_keys({str(zero)!r})
        except NotAModel as e:
            print(e)
    """)
    assert "not a regular file" in out, out


def test_models_file_naming_a_fifo_as_weights_is_one_line(tmp_path):
    fifo(tmp_path / "pipe.safetensors")
    for kind in ("", "  kind: sd1\n"):
        (tmp_path / "models.yaml").write_text(f"m:\n  weights: pipe.safetensors\n{kind}")
        out = finishes(f"""
            from pathlib import Path
            from dreamshell.weights.models import load_registry, ModelsFileError
            try:
                load_registry(Path({str(tmp_path / "models.yaml")!r}))
            except ModelsFileError as e:
                print(e)
        """)
        assert "model 'm'" in out and "not a regular file" in out, out


def test_diffusers_folder_whose_config_is_a_fifo_is_one_line(tmp_path):
    folder = tmp_path / "pipe"
    folder.mkdir()
    fifo(folder / "model_index.json")
    out = finishes(f"""
        from dreamshell.weights.models import Registry, ModelsFileError
        try:
            Registry({{}}).get({str(folder)!r})
        except ModelsFileError as e:
            print(e)
    """)
    assert "model_index.json cannot be read" in out and "not a regular file" in out, out


def test_a_checkpoints_pickle_is_read_with_a_size_bound(tmp_path, monkeypatch):
    path = tmp_path / "big.ckpt"
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("archive/data.pkl", pickle.dumps({"a": 1}) + b"\0" * 4096)
    monkeypatch.setattr("dreamshell.weights.checkpoint.MAX_PICKLE", 1024)
    with pytest.raises(NotAModel, match="data.pkl is 4,1.. bytes, over the 1,024"):
        ckpt_keys(path)


def test_fetched_recipe_naming_loras_and_embeddings_that_are_fifos_is_checked_without_waiting(tmp_path):
    lib = tmp_path / "lib"
    for folder in ("loras", "embeddings", "vae"):
        (lib / folder).mkdir(parents=True)
    fifo(lib / "loras" / "cross.safetensors")
    zero_link(lib / "embeddings" / "yolk.safetensors")
    (lib / "loras" / "tree").mkdir()
    fifo(lib / "loras" / "tree" / "pytorch_lora_weights.safetensors")
    fifo(lib / "vae" / "v.safetensors")
    text = ("a yolk <lora:cross:0.5> <lora:tree:1>\nSteps: 20, Sampler: Euler, CFG scale: 7, Seed: 1, Size: 64x64, "
            'Lora hashes: "cross: 0123456789ab, tree: 0123456789ab", TI hashes: "yolk: 0123456789ab", '
            "VAE: v.safetensors, VAE hash: 0123456789")
    image = tmp_path / "a.png"
    image.write_bytes(png_with({"parameters": text}))
    out = finishes(f"""
        from pathlib import Path
        from dreamshell.store.formats import fetch_recipe
        from dreamshell.weights.library import Folders, Library
        recipe = fetch_recipe({str(image)!r}, Library(Folders.under(Path({str(lib)!r}))))
        for note in recipe.notes:
            print(note)
    """)
    assert "LoRA cross is not in the LoRA folder" in out and "LoRA tree is not in the LoRA folder" in out, out
    assert "embedding yolk is not in the embeddings folder" in out, out


# ----- item 20: nested JSON and malformed chunks

DEEP = "[" * 100_000 + "]" * 100_000
NESTED = '{"a": ' * 200 + "1" + "}" * 200      # parses, but deeper than any recipe


@pytest.mark.parametrize("chunks", [
    {"sd-metadata": DEEP},
    {"sd-metadata": NESTED},
    {"Dream": '"a cat" -s 10 -S 1', "sd-metadata": DEEP},
    {"invokeai_metadata": DEEP},
    {"prompt": DEEP},
    {"parameters": "a cat\nSteps: 20, Seed: 1, Size: 64x64", "sd-metadata": DEEP},
])
def test_deeply_nested_json_in_a_chunk_is_one_line_or_ignored(tmp_path, chunks):
    path = tmp_path / "x.png"
    path.write_bytes(png_with(chunks))
    try:
        recipe = fetch_recipe(path)
    except MetadataError as e:
        assert "nested deeper than 64 levels" in str(e)
    else:
        assert recipe.request.prompt == "a cat"


def test_a_copied_png_named_like_ours_with_nested_json_never_stops_the_folder(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "000000.5.png").write_bytes(png_with({"sd-metadata": DEEP}))
    (folder / "000001.6.png").mkdir()        # a folder named like an image
    os.mkfifo(folder / "000002.7.png")       # and a FIFO
    out = OutputFolder(folder)
    with deadline():
        notes = out.open()
        assert len(notes) == 3 and all("left as it is" in n for n in notes), notes
        meta = ImageMeta(parse_request('"a red circle" -s 20 -S 7 -W 64 -H 64 -C 5 -A k_euler --model demo'),
                         "ab" * 32)
        path = out.save_image(Image.new("RGB", (64, 64), "red"), meta)
        assert path.name == "000003.7.png"
        assert (folder / "000000.5.png").exists()          # left as it is
        assert OutputFolder(folder).open() == notes        # the same note at the next start, nothing more


def test_malformed_chunks_are_one_line_never_an_unexpected_error(tmp_path):
    """Chunk bodies cut, corrupt or of the wrong kind, for every chunk a recipe is read from."""
    import random
    rng = random.Random(5)
    good = png_bytes(Image.new("RGB", (8, 8)), ImageMeta(
        parse_request('"a cat" -s 20 -S 7 -W 64 -H 64 -C 5 -A k_euler --model demo'), "ab" * 32, "0.2.0"))
    pieces = ['{"image": {"prompt": [[1]], "seed": "x", "steps": {"a": 1}}}', '{"image": []}', "[]", "null",
              '{"1": {"class_type": "KSampler", "inputs": []}}', '{"app_version": [], "positive_prompt": {}}',
              "Steps: 1e999, Seed: -5, Size: 0x0", "Steps: , Sampler: , Size: x", '"a" -s 1e999 -W 1e400',
              '{"image": {"prompt": "a", "seed": 1e400, "width": 1e400, "cfg_scale": "nan"}}']
    for i in range(300):
        chunks = {}
        for key in rng.sample(["Dream", "sd-metadata", "parameters", "invokeai_metadata", "prompt"], rng.randint(1, 3)):
            text = rng.choice(pieces)
            if rng.random() < 0.5:
                text = text[:rng.randint(0, len(text))]
            chunks[key] = text
        path = tmp_path / f"{i}.png"
        path.write_bytes(png_with(chunks))
        try:
            fetch_recipe(path)
        except UserError:
            pass
    cut = tmp_path / "cut.png"
    for end in range(8, len(good), max(1, len(good) // 200)):
        cut.write_bytes(good[:end])
        try:
            fetch_recipe(cut)
        except UserError:
            pass


# ----- item 22: hostile weights and models files

def _zip_ckpt(path: Path, payload: bytes, compression=zipfile.ZIP_STORED) -> Path:
    with zipfile.ZipFile(path, "w", compression=compression) as z:
        z.writestr("archive/data.pkl", payload)
    return path


def _encrypted(path: Path) -> Path:
    data = bytearray(_zip_ckpt(path, pickle.dumps({"a": 1})).read_bytes())
    data[data.find(b"PK\x03\x04") + 6] |= 1      # the "encrypted" flag, in the local and the central header
    data[data.find(b"PK\x01\x02") + 8] |= 1
    path.write_bytes(bytes(data))
    return path


def _unknown_compression(path: Path) -> Path:
    data = bytearray(_zip_ckpt(path, pickle.dumps({"a": 1}) * 50, zipfile.ZIP_DEFLATED).read_bytes())
    data[data.find(b"PK\x03\x04") + 8] = 99
    data[data.find(b"PK\x01\x02") + 10] = 99
    path.write_bytes(bytes(data))
    return path


def _st(path: Path, header: bytes, length: int | None = None) -> Path:
    path.write_bytes(struct.pack("<Q", len(header) if length is None else length) + header)
    return path


HOSTILE = {
    "encrypted.ckpt": _encrypted,
    "compression.ckpt": _unknown_compression,
    "truncated.ckpt": lambda p: p.write_bytes(_zip_ckpt(p, pickle.dumps({"a": 1})).read_bytes()[:-30]) and p,
    "list.ckpt": lambda p: _zip_ckpt(p, pickle.dumps([1, 2])),
    "garbage.ckpt": lambda p: _zip_ckpt(p, b"\x80\x02\x95 this is no pickle"),
    "bad-key.ckpt": lambda p: _zip_ckpt(p, b"\x80\x02}](X\x01\x00\x00\x00aK\x01u."),  # a dict keyed by a list
    "nested.safetensors": lambda p: _st(p, b"[" * 50_000 + b"]" * 50_000),
    "deep-object.safetensors": lambda p: _st(p, b'{"a":' * 100 + b"1" + b"}" * 100),
    "short.safetensors": lambda p: p.write_bytes(b"\x01\x02") and p,
    "huge-length.safetensors": lambda p: _st(p, b"{}", 2**63),
    "past-the-end.safetensors": lambda p: _st(p, b"{}", 10**7),
    "not-utf8.safetensors": lambda p: _st(p, b"\xff\xfe{}"),
    "bad-shape.safetensors": lambda p: _st(p, b'{"a": {"shape": [1.5]}}'),
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_weights_are_one_line_at_launch(tmp_path, name):
    path = HOSTILE[name](tmp_path / name)
    with pytest.raises(ModelsFileError, match=r"--model .*" + name.replace(".", r"\.")):
        Registry({}).get(str(path))
    (tmp_path / "models.yaml").write_text(f"m:\n  weights: {name}\n")
    with pytest.raises(ModelsFileError, match="model 'm'"):
        load_registry(tmp_path / "models.yaml")


def test_a_yaml_alias_bomb_is_refused_before_it_grows(tmp_path):
    text = "a: &a [x, x, x, x, x, x, x, x, x]\n"
    for i, name in enumerate("bcdef"):
        prev = "abcdef"[i]
        text += f"{name}: &{name} [*{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}, *{prev}]\n"
    text += "m:\n  weights: builtin:demo\n  description: *f\n"
    assert len(text) < 1024
    (tmp_path / "models.yaml").write_text(text)
    with pytest.raises(ModelsFileError, match=r"anchors and aliases \(&name, \*name\) at line 1 are not allowed"):
        load_registry(tmp_path / "models.yaml")


def test_deeply_nested_yaml_is_one_line(tmp_path):
    (tmp_path / "models.yaml").write_text("m: " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(ModelsFileError, match="nested more than 8 levels deep"):
        load_registry(tmp_path / "models.yaml")


@pytest.mark.parametrize("entry,message", [
    ("width: .inf", r"width: 'inf' is not a whole number; width and height are multiples of 8 from 64 to 8192"),
    ("width: 99999", r"width: '99999' is not allowed; width and height are multiples of 8"),
    ("height: 100", r"height: '100' is not allowed; width and height are multiples of 8"),
    ("steps: 0", r"steps: '0' is too small; steps are a whole number >= 1"),
    ("steps: 5000", r"steps: -s 5000 is more steps than the k_euler sampler can take: at most 1000"),
    ("steps: 2.5", r"steps: '2.5' is not a whole number"),
    ("cfg: .nan", r"cfg: 'nan' is not a finite number; the guidance scale goes from 0 to 100"),
    ("cfg_scale: 500", r"cfg_scale: '500' is out of range; the guidance scale goes from 0 to 100"),
    ("sampler: k_bogus", r"sampler: unknown sampler 'k_bogus'"),
    ("clip_skip: 13", r"clip_skip: '13' is out of range; --clip_skip goes from 1"),
    ("clip_skip: yes", r"clip_skip: 'true' is not a whole number"),
    ("default: maybe", r"default is yes or no \(true/false\), not 'maybe'"),
    ("vae: [a, b]", r"vae is a list or mapping; it takes one value"),
    ("description: {a: 1}", r"description is a list or mapping"),
    ("config: [x]", r"config is a path \(a text value\), not a list"),
])
def test_models_file_values_are_checked_as_a_line_checks_them(tmp_path, entry, message):
    (tmp_path / "models.yaml").write_text(f"m:\n  weights: builtin:demo\n  sampler: k_euler\n  {entry}\n"
                                          .replace("  sampler: k_euler\n  sampler", "  sampler"))
    with pytest.raises(ModelsFileError, match=r"models\.yaml: model 'm': " + message):
        load_registry(tmp_path / "models.yaml")


def test_good_models_file_values_keep_their_meaning(tmp_path):
    (tmp_path / "models.yaml").write_text("m:\n  weights: builtin:demo\n  width: 128\n  height: 96.0\n  steps: 25\n"
                                          "  cfg: 7\n  sampler: euler a\n  clip_skip: 2\n  default: true\n")
    spec = load_registry(tmp_path / "models.yaml").models["m"]
    assert (spec.width, spec.height, spec.steps, spec.cfg_scale, spec.sampler, spec.clip_skip, spec.default) == \
        (128, 96, 25, 7.0, "k_euler_a", 2, True)


def test_upscaler_paths_must_be_text(tmp_path):
    (tmp_path / "models.yaml").write_text("upscalers:\n  '4': [a, b]\n")
    with pytest.raises(ModelsFileError, match="upscalers: 4: the weights is a path"):
        load_registry(tmp_path / "models.yaml")


# ----- item 25: names too long for the file system

LONG = "x" * 300 + ".png"


@pytest.fixture
def dispatcher(tmp_path):
    from fake_generator import FakeGenerator

    from dreamshell.run.dispatch import Dispatcher
    from dreamshell.run.model_host import ModelHost
    from dreamshell.run.postprocess import register_fix
    from dreamshell.run.session import Session
    from dreamshell.weights.models import ModelSpec
    weights = tmp_path / "weights"
    weights.mkdir()
    spec = ModelSpec("fake", weights, "sd1", width=64, height=64, steps=3, cfg_scale=5.0, sampler="k_euler",
                     default=True)
    session = Session(Registry({"fake": spec}, folders=Folders.under(tmp_path / "lib")),
                      ModelHost(lambda: FakeGenerator()), tmp_path / "out")
    said = []
    d = Dispatcher(session, said.append)
    register_fix(d)
    d.said = said
    return d


@pytest.mark.parametrize("line,start", [
    (f"a cat -I {LONG}", "-I xxx"),
    (f"a cat -S 1 -I {LONG[:-4]}.jpg -f 0.5", "-I xxx"),
    (f"a cat -I $FIRST -M {LONG}", "-M xxx"),
    (f"!fix {LONG} -U 2", "!fix xxx"),
    (f"a cat --model {'m' * 300}", "no model 'mmm"),
    (f"a cat -o {'o' * 300}", "cannot write to ooo"),
    (f"!fetch {LONG}", "xxx"),
])
def test_a_name_too_long_for_the_file_system_is_one_line(dispatcher, tmp_path, line, start):
    if "$FIRST" in line:
        assert not dispatcher.execute("a cat -S 1").failed
        line = line.replace("$FIRST", str(next((tmp_path / "out").glob("*.png"))))
    dispatcher.said.clear()
    assert dispatcher.execute(line).failed
    errors = [text for text in dispatcher.said if text.startswith("error: ")]
    assert len(errors) == 1, dispatcher.said
    said = errors[0]
    assert said.startswith("error: " + start) and "unexpected" not in said and "too long" in said, said
    assert len(said) < 400


def test_a_models_file_name_too_long_is_one_line(capsys):
    from dreamshell.cli import main
    assert main(["--config", "c" * 300 + ".yaml", "a cat"]) == 2
    err = capsys.readouterr().err
    assert "too long" in err and len(err.splitlines()) == 1


def test_models_file_naming_a_fifo_as_an_upscaler_is_one_line(tmp_path):
    fifo(tmp_path / "x4.pth")
    (tmp_path / "models.yaml").write_text("upscalers:\n  '4': x4.pth\n")
    with deadline(), pytest.raises(ModelsFileError, match=r"upscalers: 4: .*x4\.pth is not a regular file"):
        load_registry(tmp_path / "models.yaml")


def test_a_vae_or_lora_folder_name_too_long_is_one_line():
    from dreamshell.weights.library import ExtraError
    library = Library(Folders(Path("l" * 300), Path("e" * 300), Path("v" * 300)))
    with pytest.raises(ExtraError, match="no VAE 'vvv"):
        library.find_vae("v" * 300)
    with pytest.raises(ExtraError, match="no LoRA 'x' in lll.*empty or missing"):
        library.files_for("a <lora:x:1>", None)
    assert library.files_for("a cat", None).embeddings == ()
