"""Generation on a real (tiny) diffusers pipeline on the CPU: seeds, replay, modes, interrupts."""

from pathlib import Path

import pytest
from conftest import PRECISIONS
from conftest import run_line as run
from PIL import Image

from dreamshell.line.errors import UserError
from dreamshell.line.parser import parse_request
from dreamshell.run.dispatch import Dispatcher
from dreamshell.run.types import Control, Listener
from dreamshell.store.dreamlog import read_commands
from dreamshell.store.pngmeta import read_recipe


def pixels(path):
    return Image.open(path).convert("RGB").tobytes()


def test_same_line_gives_the_same_bytes(make_session):
    s = make_session()
    a = run(s, "a red circle on a blue background -S 42").records[0]
    b = run(s, "a red circle on a blue background -S 42").records[0]
    assert a.path != b.path
    assert Path(a.path).read_bytes() == Path(b.path).read_bytes()


def test_iterations_use_consecutive_seeds_and_each_image_can_be_remade_alone(make_session):
    s = make_session()
    batch = run(s, "a green square -n 3 -S 7").records
    assert [r.seed for r in batch] == [7, 8, 9]
    assert [Path(r.path).name.split(".")[1] for r in batch] == ["7", "8", "9"]
    alone = run(s, "a green square -S 8").records[0]
    assert Path(alone.path).read_bytes() == Path(batch[1].path).read_bytes()
    assert pixels(batch[0].path) != pixels(batch[1].path)


def test_every_image_is_logged_with_a_canonical_line_and_echoed(make_session, tmp_path):
    s = make_session()
    records = run(s, "a white circle -n 2 -S 3").records
    log = (tmp_path / "out" / "dream_log.txt").read_text().splitlines()
    assert len(log) == 2
    assert log[0].endswith(': "a white circle" -s 4 -S 3 -W 64 -H 64 -C 5 -A k_euler --model tiny')
    assert "-n" not in log[1] and "-S 4" in log[1]
    shown = [line for line in s.echoed if ".png: " in line]
    assert shown == [f"{r.path}: {r.command}" for r in records]   # each image's line is its log line
    assert [line.split(": ", 1)[1] for line in shown] == [line.split(": ", 1)[1] for line in log]
    assert read_recipe(Path(records[1].path)) == parse_request(records[1].command)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_replaying_the_log_reproduces_every_image_byte_for_byte(make_session, tmp_path, precision):
    s = make_session(outdir=tmp_path / "first", precision=precision)
    originals = run(s, "a red circle [green] -n 2 -S 11 -A ddim").records
    originals += run(s, "a:0.3 blue square:0.7 -S 5 -C 3 -s 6").records
    s2 = make_session(outdir=tmp_path / "second", precision=precision)
    d = Dispatcher(s2, echo=lambda _: None)
    outcome = d.execute(f"!replay {tmp_path / 'first' / 'dream_log.txt'}")
    assert not outcome.failed
    replayed = sorted((tmp_path / "second").glob("*.png"))
    assert len(replayed) == 3
    for old, new in zip(originals, replayed):
        assert Path(old.path).read_bytes() == new.read_bytes()


def test_seed_minus_one_is_the_last_seed_and_zero_is_a_seed(make_session):
    s = make_session()
    run(s, "x -S 0")
    assert s.seeds == [0]
    run(s, "x -S 99")
    assert run(s, "y -S -2").records[0].seed == 0
    with pytest.raises(UserError, match="refers to the seed 9 image"):
        run(s, "y -S -9")


def test_random_seed_is_recorded(make_session):
    s = make_session()
    rec = run(s, "a cat").records[0]
    assert f"-S {rec.seed} " in rec.command


def test_img2img_and_inpainting_run_and_differ_from_txt2img(make_session, tmp_path):
    s = make_session()
    base = run(s, "a yellow triangle -S 5").records[0]
    img2img = run(s, "a yellow triangle -S 5 -I -1 -f 0.5").records[0]
    mask = tmp_path / "mask.png"
    m = Image.new("L", (64, 64), 0)
    m.paste(255, (16, 16, 48, 48))
    m.save(mask)
    inpaint = run(s, f"a yellow circle -S 5 -I {base.path} -M {mask} -f 1").records[0]
    assert len({pixels(base.path), pixels(img2img.path), pixels(inpaint.path)}) == 3
    assert f"-I {base.path} -f 0.5" in img2img.command
    # inpainting keeps every unmasked pixel exactly (the mask covers 16..48 only)
    a, b = Image.open(base.path).convert("RGB"), Image.open(inpaint.path).convert("RGB")
    for box in ((0, 0, 64, 16), (0, 48, 64, 64), (0, 0, 16, 64), (48, 0, 64, 64)):
        assert a.crop(box).tobytes() == b.crop(box).tobytes()
    assert a.crop((16, 16, 48, 48)).tobytes() != b.crop((16, 16, 48, 48)).tobytes()


def test_init_image_of_another_size_needs_fit(make_session, tmp_path):
    s = make_session()
    big = tmp_path / "big.png"
    Image.new("RGB", (128, 96), "red").save(big)
    with pytest.raises(UserError, match="add --fit"):
        run(s, f"x -I {big} -W 64 -H 64")
    rec = run(s, f"x -I {big} -W 64 -H 64 --fit -S 1").records[0]
    assert Image.open(rec.path).size == (64, 64)
    rec = run(s, f"x -I {big} -S 1").records[0]
    assert Image.open(rec.path).size == (128, 96) and "-W 128 -H 96" in rec.command


class StopAt(Listener):
    """Presses Ctrl-C (sets the stop flag) at a given step of a given image; records the steps seen."""

    def __init__(self, control, image, step):
        self.control, self.image, self.at_step = control, image, step
        self.steps_seen = []

    def image_started(self, index, total, seed, steps):
        self.index = index

    def step(self, done, total):
        self.steps_seen.append((self.index, done))
        if self.index == self.image and done == self.at_step:
            self.control.stop.set()


def test_interrupt_keeps_finished_images_and_saves_nothing_partial(make_session, tmp_path):
    s = make_session()
    control = Control()
    listener = StopAt(control, image=2, step=2)
    result = run(s, "a black square -n 3 -S 1", control=control, listener=listener)
    assert result.stopped is not None and (result.stopped.index, result.stopped.kept) == (2, 1)
    assert [r.seed for r in result.records] == [1]
    assert sorted(p.name for p in (tmp_path / "out").glob("*.png")) == ["000000.1.png"]
    assert len((tmp_path / "out" / "dream_log.txt").read_text().splitlines()) == 1
    assert (2, 2) in listener.steps_seen and (2, 3) not in listener.steps_seen
    assert not [p for p in (tmp_path / "out").iterdir() if p.name.endswith(".part")]
    # the model stays loaded and the next line runs
    assert run(s, "a black square -S 2").records


def test_switching_models_and_back_gives_the_same_bytes(make_session):
    s = make_session()
    a = run(s, "a red circle -S 3").records[0]
    b = run(s, "a red circle -S 3 --model tiny2").records[0]
    assert s.spec.name == "tiny2" and "--model tiny2" in b.command
    c = run(s, "a red circle -S 3 --model tiny").records[0]
    assert pixels(a.path) != pixels(b.path)
    assert Path(a.path).read_bytes() == Path(c.path).read_bytes()


def test_missing_weights_are_one_clear_line(make_session, tmp_path):
    from dreamshell.weights.models import ModelSpec
    s = make_session()
    s.registry.models["gone"] = ModelSpec("gone", tmp_path / "nowhere", "sd1")
    with pytest.raises(UserError, match="does not exist"):
        run(s, "x --model gone")


def test_long_prompts_are_chunked_with_a_visible_note(make_session):
    s = make_session()
    long_prompt = " ".join(["red circle blue square"] * 30)
    run(s, f"{long_prompt} -S 1")
    assert any("tokens; CLIP reads 75 at a time" in line for line in s.echoed)
    run(s, f"{long_prompt} -S 1 -t")
    assert any("past 75:" in line for line in s.echoed)


def test_replay_of_the_log_reads_back_every_command(make_session, tmp_path):
    s = make_session()
    run(s, "a red circle -S 1 -n 2")
    commands = [c for _, c in read_commands(tmp_path / "out" / "dream_log.txt")]
    assert [parse_request(c).seed for c in commands] == [1, 2]


def test_one_ctrl_c_ends_a_whole_batch(make_session, tmp_path):
    s = make_session()
    out = []
    control = Control()

    class StopInLineTwo(Listener):
        def image_started(self, index, total, seed, steps):
            if seed == 2:
                control.stop.set()

    d = Dispatcher(s, echo=out.append, listener=StopInLineTwo)
    batch = tmp_path / "batch.txt"
    batch.write_text("".join(f"a red circle -S {i}\n" for i in range(1, 5)))
    outcome = d.run_lines(read_commands(batch), label="batch.txt", control=control)
    assert outcome.interrupted
    assert s.seeds == [1]
    assert "batch.txt: batch stopped at line 2" in out


def test_replaying_the_log_being_written_runs_each_line_once(make_session, tmp_path):
    s = make_session()
    run(s, "a red circle -S 1 -n 2")
    log = tmp_path / "out" / "dream_log.txt"
    d = Dispatcher(s, echo=lambda _: None)
    assert not d.execute(f"!replay {log}").failed
    assert s.seeds == [1, 2, 1, 2]
    assert len(log.read_text().splitlines()) == 4


def test_variations_with_n_are_variations_of_the_one_seed(make_session):
    s = make_session()
    result = run(s, "a red circle -S 5 -n 3 -v 0.3")
    assert [r.seed for r in result.records] == [5, 5, 5]
    variation_seeds = []
    for r in result.records:
        assert "-S 5 " in r.command and "-v" not in r.command
        request = parse_request(r.command)
        [(vseed, weight)] = request.with_variations
        assert weight == 0.3
        variation_seeds.append(vseed)
    assert len(set(variation_seeds)) == 3
    again = run(s, result.records[1].command).records[0]
    assert Path(again.path).read_bytes() == Path(result.records[1].path).read_bytes()
    assert pixels(result.records[0].path) != pixels(result.records[1].path)


def test_a_corrupt_model_file_keeps_the_loaded_model(make_session, tmp_path):
    s = make_session()
    run(s, "a red circle -S 1")
    bad = tmp_path / "broken.safetensors"
    bad.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json at all}")
    with pytest.raises(UserError, match="is not a safetensors file"):   # told before anything is unloaded
        run(s, f"a red circle -S 1 --model {bad}")
    assert s.spec.name == "tiny"
    assert run(s, "a red circle -S 2").records[0].command.endswith("--model tiny")


def test_batch_size_makes_the_images_each_seed_makes_alone(make_session, shared_generator):
    s = make_session()
    alone = [Path(r.path).read_bytes() for r in run(s, "a red circle -S 40 -n 3").records]
    shared_generator.batch_size = 2
    groups = []
    real = shared_generator.generate_batch

    def recording(requests, **kw):
        groups.append([r.seed for r in requests])
        return real(requests, **kw)
    shared_generator.generate_batch = recording
    try:
        together = run(s, "a red circle -S 40 -n 3").records
    finally:
        shared_generator.batch_size = 1
        del shared_generator.generate_batch
    assert groups == [[40, 41]], "the first two images were made as one batch"
    import io
    assert [r.seed for r in together] == [40, 41, 42]
    for r, data in zip(together, alone):   # batched: the same image up to float error (issue 9)
        a, b = pixels(r.path), Image.open(io.BytesIO(data)).convert("RGB").tobytes()
        assert max(abs(x - y) for x, y in zip(a, b)) <= 2
    assert pixels(together[0].path) != pixels(together[1].path)


def test_the_stopped_line_says_the_images_after_it_were_not_made():
    from dreamshell.run.report import stopped_line
    from dreamshell.run.types import Stopped
    assert stopped_line(Stopped(1, 5, 0)) == ("stopped: image 1 of 5 was not finished and is not saved; the 4 after "
                                             "it were not made; 0 finished image(s) kept")
    assert "after it" not in stopped_line(Stopped(3, 3, 2))
