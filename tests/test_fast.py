"""Issue 17 through dreamshell's own generator: each preset's timesteps (and TCD's gamma) reach the scheduler,
CFG <= 1 is one UNet call a step, a preset line replays byte for byte from the log, `--decoder` (taesd, a name,
a path: every TAESD layout) decodes the image tensor-equal to the tiny decoder itself, live previews go
through a tiny decoder, and the decoder is part of the recipe. Tiny random models (tests/tiny_pipeline.py: a
VAE of factor 2, so the tiny decoders here have one upsampling)."""

from dataclasses import replace
from pathlib import Path

import pytest
from conftest import PRECISIONS, generator_at
from conftest import run_line as run
from PIL import Image

torch = pytest.importorskip("torch")

from test_decoders import _original, _write  # noqa: E402
from test_presets import PUBLISHED, SIGMAS_4  # noqa: E402

from dreamshell.line.errors import UserError  # noqa: E402
from dreamshell.line.parser import parse_request  # noqa: E402
from dreamshell.run.dispatch import Dispatcher  # noqa: E402
from dreamshell.run.model_host import ModelHost  # noqa: E402
from dreamshell.run.session import Session  # noqa: E402
from dreamshell.store.pngmeta import read_recipe  # noqa: E402
from dreamshell.weights.library import Folders  # noqa: E402


def pixels(path):
    return Image.open(path).convert("RGB").tobytes()


def tiny_taesd(seed=0, factor=2):
    """A random AutoencoderTiny for the tiny models' latents (4 channels; one upsampling: factor 2)."""
    from diffusers import AutoencoderTiny
    torch.manual_seed(seed)
    stages = {2: 2, 4: 3, 8: 4}[factor]
    model = AutoencoderTiny(latent_channels=4, decoder_block_out_channels=(8,) * stages,
                            encoder_block_out_channels=(8,) * stages, num_decoder_blocks=(1,) * stages,
                            num_encoder_blocks=(1,) * stages)
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0, 0.1)
    return model.eval()


@pytest.fixture
def session_with(tiny_models, tmp_path):
    """session_with(decoders=None, precision="float32", outdir=None): a Session on the tiny models whose decoders
    folder is `decoders`."""
    def make(decoders=None, precision="float32", outdir=None, prediction=None):
        registry = tiny_models()
        registry = replace(registry, folders=replace(registry.folders, decoders=decoders or tmp_path / "no-decoders"))
        if prediction:
            registry.models["tiny"] = replace(registry.models["tiny"], prediction=prediction)
        generator = generator_at(precision)
        session = Session(registry, ModelHost(lambda: generator), outdir or tmp_path / "out")
        session.echoed = []
        session.generator = generator
        return session
    return make


class UNetCalls:
    """Every UNet call of every pipeline: the batch it evaluates and its timestep."""

    def __init__(self, monkeypatch):
        from diffusers import UNet2DConditionModel
        self.calls = []
        forward = UNet2DConditionModel.forward

        def spy(module, sample, timestep, *args, **kwargs):
            t = timestep.flatten()[0] if torch.is_tensor(timestep) else timestep
            self.calls.append((sample.shape[0], float(t)))
            return forward(module, sample, timestep, *args, **kwargs)
        monkeypatch.setattr(UNet2DConditionModel, "forward", spy)

    @property
    def timesteps(self):
        return [round(t) for _, t in self.calls]


# ----- presets through the generator


@pytest.mark.parametrize("name, steps", sorted(PUBLISHED))
def test_each_preset_runs_its_published_timesteps_through_dreamshell(session_with, monkeypatch, name, steps):
    """The line as typed, planned and run by dreamshell: the UNet sees the published timesteps, one call a step."""
    import diffusers
    etas = []
    step = diffusers.TCDScheduler.step

    def spy(self, model_output, timestep, sample, eta=0.3, *args, **kwargs):
        etas.append(eta)
        return step(self, model_output, timestep, sample, eta, *args, **kwargs)
    monkeypatch.setattr(diffusers.TCDScheduler, "step", spy)
    from dreamshell.line.presets import preset_row
    unet = UNetCalls(monkeypatch)
    s = session_with(prediction=preset_row(name, steps).prediction)
    result = run(s, f"a red circle --preset {name} -s {steps} -S 3")
    assert len(result.records) == 1
    assert unet.timesteps == PUBLISHED[(name, steps)]
    assert [batch for batch, _ in unet.calls] == [1] * steps   # CFG 1: no unconditional pass
    request = parse_request(result.records[0].command)
    if request.eta is not None:   # TCD's gamma reached the step (the pipeline's own default is eta=0.0)
        assert etas == [request.eta] * steps and request.eta in (0.3, 1.0)
    if (name, steps) == ("lightning", 4):
        sigmas = s.generator._pipes["txt2img"].scheduler.sigmas.tolist()
        assert sigmas == pytest.approx(SIGMAS_4, abs=1e-3)


def test_cfg_at_most_1_is_one_unet_call_a_step_through_dreamshell(session_with, monkeypatch):
    unet = UNetCalls(monkeypatch)
    s = session_with()
    for cfg, batch in (("0", 1), ("1", 1), ("5", 2)):
        unet.calls.clear()
        run(s, f"a red circle -s 4 -S 1 -C {cfg} -A k_euler")
        assert [b for b, _ in unet.calls] == [batch] * 4, cfg


def test_cfg_at_most_1_encodes_no_negative_prompt(session_with, monkeypatch):
    """At CFG <= 1 the pipeline makes no unconditional pass, so the negative is not encoded either (on SDXL that
    is both text encoders once more); A1111's AND and compel's padding still need it; the image is the same."""
    from transformers import CLIPTextModel
    texts = []
    forward = CLIPTextModel.forward

    def spy(module, input_ids=None, *args, **kwargs):
        texts.append(input_ids.shape[0])
        return forward(module, input_ids, *args, **kwargs)
    monkeypatch.setattr(CLIPTextModel, "forward", spy)
    s = session_with()
    for line, calls in (("a red circle [a blue square] -C 1", 1), ("a red circle [a blue square] -C 0.5", 1),
                        ("a red circle [a blue square] -C 5", 2), ("a red circle AND a blue square -C 1", 3)):
        texts.clear()
        run(s, f"{line} -s 2 -S 1 -A k_euler")
        assert len(texts) == calls, line
    from dreamshell.engines.conditioning import Conditioner
    encoded = []
    encode = Conditioner._encode
    monkeypatch.setattr(Conditioner, "_encode", lambda self, t: (encoded.append(list(t)), encode(self, t))[1])
    run(s, "a (red)1.2 circle [a blue square] -C 1 -s 2 -S 1 -A k_euler")   # compel pads to the negative's length
    assert encoded == [["a (red)1.2 circle", "a blue square"]]
    with_negative = run(s, "a red circle [a blue square] -C 1 -s 2 -S 1 -A k_euler").records[0]
    without = run(s, "a red circle -C 1 -s 2 -S 1 -A k_euler").records[0]
    assert pixels(with_negative.path) == pixels(without.path)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_a_preset_line_replays_byte_identical_from_the_log(session_with, tmp_path, precision):
    s = session_with(precision=precision, outdir=tmp_path / "first")
    made = [run(s, f"a red circle on a blue background --preset {p} -S 5").records[0]
            for p in ("tcd", "dmd2", "turbo", "lightning")]
    log = (tmp_path / "first" / "dream_log.txt").read_text()
    assert "--preset" not in log and "--eta 0.3" in log and "--timesteps 999,749,499,249" in log
    s2 = session_with(precision=precision, outdir=tmp_path / "second")
    assert not Dispatcher(s2, echo=lambda _: None).execute(f"!replay {tmp_path / 'first' / 'dream_log.txt'}").failed
    replayed = sorted((tmp_path / "second").glob("*.png"))
    assert [Path(r.path).read_bytes() for r in made] == [p.read_bytes() for p in replayed]


def test_timesteps_with_the_hires_fix_are_the_first_pass(session_with, monkeypatch):
    """--timesteps with --hires_fix: the first pass runs them; the second its sampler's spacing at its steps."""
    unet = UNetCalls(monkeypatch)
    s = session_with()
    run(s, "a red circle -A LCM -C 1 --timesteps 899,399 -S 1 --hires_fix --hires_steps 2")
    assert unet.timesteps[:2] == [899, 399]
    assert len(unet.timesteps) > 2 and not set(unet.timesteps[2:]) <= {899, 399}


# ----- tiny decoders through --decoder


def latents_of(generator, command):
    """The latents a resolved line denoises to (the same call the generator makes, stopped before decoding)."""
    from dreamshell.weights.library import LineFiles
    request = parse_request(command)
    generator.prepare(request, LineFiles())
    return generator._generate_one(request, None, None, None, None, None, 1, output_type="latent")[None]


LAYOUTS = ["folder", "pth", "safetensors", "comfy", "diffusers-file"]


@pytest.mark.parametrize("layout", LAYOUTS)
def test_every_taesd_layout_decodes_through_decoder_tensor_equal(session_with, tmp_path, layout):
    from dreamshell.engines.decoders import decode_to_pil
    model = tiny_taesd()
    path = _write(tmp_path, model, layout, "taesd_decoder")
    s = session_with()
    record = run(s, f"a red circle -S 4 --decoder {path}").records[0]
    assert f"--decoder {path}" in record.command
    expected = decode_to_pil(model, latents_of(s.generator, record.command))[0]
    assert pixels(record.path) == expected.tobytes()
    plain = run(s, "a red circle -S 4").records[0]
    assert pixels(plain.path) != pixels(record.path)   # the VAE's image is another one


def test_decoder_taesd_finds_the_models_tiny_decoder_in_the_decoders_folder(session_with, tmp_path):
    folder = tmp_path / "taesd"
    folder.mkdir()
    model = tiny_taesd(seed=1)
    _write(folder, model, "safetensors", "taesd_decoder")
    _write(folder, tiny_taesd(seed=2, factor=8), "safetensors", "taesdxl_decoder")   # another model's: passed over
    s = session_with(decoders=folder)
    by_word = run(s, "a red circle -S 4 --decoder taesd").records[0]
    by_name = run(s, "a red circle -S 4 --decoder taesd_decoder.safetensors").records[0]
    by_stem = run(s, "a red circle -S 4 --decoder taesd_decoder").records[0]
    assert by_word.command.endswith("--decoder taesd")
    assert pixels(by_word.path) == pixels(by_name.path) == pixels(by_stem.path)


def test_a_decoder_for_another_model_or_not_there_is_one_line(session_with, tmp_path):
    folder = tmp_path / "taesd"
    folder.mkdir()
    _write(folder, tiny_taesd(factor=8), "safetensors", "taesdxl_decoder")
    _write(folder, tiny_taesd(), "safetensors", "my_decoder")
    s = session_with(decoders=folder)
    with pytest.raises(UserError, match=r"taesdxl_decoder.safetensors is a tiny decoder for SDXL \(taesdxl\) latents"):
        run(s, "a red circle --decoder taesdxl_decoder")
    with pytest.raises(UserError, match=r"no tiny decoder 'my_decodr' in .*did you mean 'my_decoder.safetensors'"):
        run(s, "a red circle --decoder my_decodr")
    empty = session_with(decoders=tmp_path / "empty")
    with pytest.raises(UserError, match=r"--decoder taesd: no tiny decoder for SD 1.x in .*taesd_decoder.safetensors"):
        run(empty, "a red circle --decoder taesd")
    vae = tmp_path / "vae.safetensors"
    from safetensors.torch import save_file
    save_file({"encoder.down.0.block.0.conv1.weight": torch.zeros(1, 1, 3, 3)}, str(vae))
    with pytest.raises(UserError, match=r"--decoder: vae.safetensors is not a TAESD decoder \(a VAE alone"):
        run(s, f"a red circle --decoder {vae}")


def test_the_models_file_decoder_and_the_launch_folder(tmp_path, tiny_models):
    """`decoder:` per model and `decoders:` in the models file; --decoder_dir at launch wins over it."""
    from dreamshell.app import launch_folders
    from dreamshell.cli import build_argparser
    from dreamshell.weights.models import load_registry, with_folders
    folder = tmp_path / "tiny-decoders"
    folder.mkdir()
    _write(folder, tiny_taesd(), "safetensors", "taesd_decoder")
    weights = tiny_models().models["tiny"].weights
    models = tmp_path / "models.yaml"
    models.write_text(f"decoders: tiny-decoders\nfast:\n  weights: {weights}\n  decoder: taesd\n"
                      f"full:\n  weights: {weights}\n")
    registry = load_registry(models)
    assert registry.folders.decoders == folder and registry.models["fast"].decoder == "taesd"
    assert registry.models["full"].decoder is None
    args = build_argparser().parse_args(["--decoder_dir", str(tmp_path / "elsewhere")])
    assert with_folders(registry, **launch_folders(args)).folders.decoders == tmp_path / "elsewhere"
    session = Session(registry, ModelHost(lambda: generator_at("float32")), tmp_path / "out")
    session.echoed = []
    fast = run(session, "a red circle -S 2 --model fast").records[0]
    assert fast.command.endswith("--model fast --decoder taesd")      # the log line replays on its own
    full = run(session, "a red circle -S 2 --model fast --decoder vae").records[0]
    assert full.command.endswith("--model fast --decoder vae")
    assert run(session, "a red circle -S 2 --model full").records[0].command.endswith("--model full")
    assert pixels(fast.path) != pixels(full.path)


def test_the_decoder_is_in_every_chunk_of_the_recipe(session_with, tmp_path):
    import json

    from dreamshell.store.formats import fetch_recipe
    from dreamshell.store.pngmeta import read_chunks
    path = _write(tmp_path, tiny_taesd(), "safetensors", "taesd_decoder")
    s = session_with()
    record = run(s, f"a red circle -S 4 --decoder {path}").records[0]
    request = parse_request(record.command)
    assert read_recipe(Path(record.path)) == request
    chunks = read_chunks(Path(record.path))
    assert "VAE Decoder: TAESD" in chunks["parameters"]                   # A1111 1.6+'s own key
    assert json.loads(chunks["sd-metadata"])["image"]["decoder"] == str(path)
    without = chunks["parameters"][:chunks["parameters"].index(", Dreamshell: ")]
    png = tmp_path / "a1111.png"
    from test_pngmeta import png_with
    png.write_bytes(png_with({"parameters": without}))
    assert fetch_recipe(png).request.decoder == "taesd"                   # A1111 names no file: its own TAESD


# ----- live previews


def test_live_previews_go_through_the_tiny_decoder(session_with, tmp_path):
    """A preview is the tiny decoder's image of the predicted clean latent (pooled by 2), not the 4->3
    projection; the saved image is the same with previews on or off."""
    from dreamshell.engines import decoders
    from dreamshell.run.report import TextListener
    folder = tmp_path / "taesd"
    folder.mkdir()
    model = tiny_taesd()
    _write(folder, model, "safetensors", "taesd_decoder")
    s = session_with(decoders=folder)
    seen, decoded = [], []
    original = decoders.TinyPreview.to_image

    def spy(self, latent):
        image = original(self, latent)
        decoded.append((latent.clone(), image))
        return image
    listener = TextListener(s.echoed.append)
    listener.wants_preview = True
    listener.preview = lambda done, total, image: seen.append(image)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(decoders.TinyPreview, "to_image", spy)
        with_previews = run(s, "a red circle -S 4 -s 3", listener=listener).records[0]
    without = run(s, "a red circle -S 4 -s 3").records[0]
    assert pixels(with_previews.path) == pixels(without.path)
    assert len(seen) == 3 and len(decoded) == 3 and [im.size for im in seen] == [(32, 32)] * 3   # 64 px, half scale
    latent, image = decoded[-1]
    pooled = torch.nn.functional.avg_pool2d(latent.float(), 2)
    if s.generator.channels_last:   # on a CPU the tiny decoder runs channels_last, as the UNet and VAE do
        model.to(memory_format=torch.channels_last)
    assert image.tobytes() == decoders.decode_to_pil(model, pooled[:1])[0].tobytes()


def test_without_a_tiny_decoder_previews_are_the_linear_projection(session_with, monkeypatch):
    from dreamshell.engines import decoders, preview
    from dreamshell.run.report import TextListener
    s = session_with()
    seen, linear = [], []
    original = preview.latent_to_image
    monkeypatch.setattr(preview, "latent_to_image", lambda *a, **k: linear.append(1) or original(*a, **k))
    monkeypatch.setattr(decoders.TinyPreview, "to_image", lambda *a: pytest.fail("no tiny decoder is there"))
    listener = TextListener(s.echoed.append)
    listener.wants_preview = True
    listener.preview = lambda done, total, image: seen.append(image)
    run(s, "a red circle -S 4 -s 2", listener=listener)
    assert len(seen) == len(linear) == 2 and [im.size for im in seen] == [(32, 32)] * 2   # 64 px / factor 2


# ----- loading: the CPU's layout, few-step hints


def test_the_cpu_runs_the_unet_and_vae_channels_last(tiny_models, monkeypatch, tmp_path):
    """And the tiny decoder (1.3x on a TAESD decode at 512 on two AVX2 cores: BENCHMARKS.md)."""
    from dreamshell.engines.generator import DiffusersGenerator
    spec = tiny_models().models["tiny"]
    taesd = _write(tmp_path, tiny_taesd(), "safetensors", "taesd_decoder")
    for env, want in (("1", True), ("0", False)):
        monkeypatch.setenv("DREAMSHELL_CHANNELS_LAST", env)
        gen = DiffusersGenerator(device="cpu", precision="float32")
        gen.load(spec)
        pipe = gen._pipes["txt2img"]
        for model in (pipe.unet, pipe.vae, gen._tiny_decoder(taesd).decoder):
            weight = next(m.weight for m in model.modules() if isinstance(m, torch.nn.Conv2d))
            assert weight.is_contiguous(memory_format=torch.channels_last) is want
            assert weight.is_contiguous() is not want


def test_the_tiny_decoder_runs_on_the_models_device(tiny_models, tmp_path):
    """On a GPU the tiny decoder goes where the model is, and the latents follow its weights (found on an H200:
    `--decoder taesd` on CUDA failed with 'Input type (torch.cuda.FloatTensor) and weight type
    (torch.FloatTensor)'). The meta device stands in for CUDA here: shapes, no data."""
    from dreamshell.engines import decoders
    from dreamshell.engines.generator import DiffusersGenerator
    spec = tiny_models().models["tiny"]
    taesd = _write(tmp_path, tiny_taesd(), "safetensors", "taesd_decoder")
    gen = DiffusersGenerator(device="cpu", precision="float32")
    gen.load(spec)
    assert next(gen._tiny_decoder(taesd).parameters()).device.type == "cpu"
    gen.device = "meta"
    tiny = gen._tiny_decoder(taesd)
    assert {p.device.type for p in tiny.parameters()} == {"meta"}
    latents = torch.randn(2, tiny.config.latent_channels, 8, 8)   # where the pipeline left them
    out = decoders.decode(tiny, latents)
    assert out.device.type == "meta" and tuple(out.shape) == (2, 3, 16, 16)
    # and in the model's precision there (float16 on CUDA, as plain diffusers runs TAESD), float32 on this CPU
    gen.dtype = torch.float16
    assert gen.decoder_dtype == torch.float16
    assert next(gen._tiny_decoder(taesd).parameters()).dtype == torch.float16
    gen.device = "cpu"
    assert gen.decoder_dtype == torch.float32


def test_a_few_step_model_or_lora_gets_a_note_once(session_with, tmp_path, tiny_models):
    import shutil
    s = session_with()
    lora_dir = tmp_path / "loras"
    lora_dir.mkdir()
    source = Path(__file__).resolve().parent.parent / "models" / "loras" / "demo_cross.safetensors"
    shutil.copy(source, lora_dir / "lcm-lora-demo.safetensors")
    gen = s.generator
    gen.load(tiny_models().models["tiny"])
    from dreamshell.weights.library import Library
    files = Library(Folders(lora_dir, tmp_path, tmp_path)).files_for("a red circle <lora:lcm-lora-demo:1>", None)
    # a line already at the preset's sampler and CFG (typed with --preset lcm, or its log line) needs no note
    assert gen._few_step_hints("x", files, ("LCM", 1.0)) == []
    notes = gen._few_step_hints("x", files, ("k_euler", 5.0))
    assert notes == ["note: lcm-lora-demo.safetensors: its name says lcm (a few-step model): try --preset lcm"]
    assert gen._few_step_hints("x", files) == []


def test_a_taesd_file_given_as_a_model_says_what_it_is(tmp_path):
    from dreamshell.weights.models import ModelsFileError, spec_for_path
    path = _write(tmp_path, tiny_taesd(), "safetensors", "taesd_decoder")
    with pytest.raises(ModelsFileError, match="a TAESD tiny decoder .* give it to --decoder"):
        spec_for_path(path)
    encoder = tmp_path / "taesd_encoder.safetensors"
    from safetensors.torch import save_file
    save_file({k: v.contiguous() for k, v in _original(tiny_taesd(), "encoder").items()}, str(encoder))
    with pytest.raises(ModelsFileError, match="a TAESD tiny encoder"):
        spec_for_path(encoder)


def test_the_demo_models_tiny_decoder_is_found_where_it_is_installed(tmp_path, monkeypatch):
    """models/taesd/demo-taesd (a factor-4 AutoencoderTiny, the training helper's) is what `--decoder taesd` and
    the previews use on the demo model when the decoders folder has none for it; SD's taesd is passed over."""
    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.weights.models import builtin_models_dir, load_registry
    installed = tmp_path / "installed"
    installed.mkdir()
    (installed / "demo").symlink_to(builtin_models_dir() / "demo", target_is_directory=True)
    (installed / "taesd").mkdir()
    demo_tiny = tiny_taesd(factor=4)
    demo_tiny.save_pretrained(installed / "taesd" / "demo-taesd", safe_serialization=True)
    monkeypatch.setenv("DREAMSHELL_BUILTIN_MODELS", str(installed))
    mine = tmp_path / "my-taesd"
    mine.mkdir()
    _write(mine, tiny_taesd(factor=8), "safetensors", "taesd_decoder")   # SD 1.x's: not the demo's
    registry = load_registry(None)
    registry = replace(registry, folders=replace(registry.folders, decoders=mine))
    session = Session(registry, ModelHost(lambda: DiffusersGenerator(device="cpu", precision="float32")),
                      tmp_path / "out")
    session.echoed = []
    record = run(session, "a red circle -s 2 -S 1 --decoder taesd").records[0]
    assert record.command.endswith("--model demo --decoder taesd")
    plan = session.planner.plan(parse_request("a red circle -s 2 -S 1"), session.state)
    assert plan.files.decoder is None and plan.files.preview == installed / "taesd" / "demo-taesd"
    with pytest.raises(UserError, match="taesd_decoder.safetensors is a tiny decoder for SD 1.x/2.x .* this model "
                                        "is the demo model: use demo-taesd"):
        run(session, f"a red circle -s 2 --decoder {mine / 'taesd_decoder.safetensors'}")
