"""Real-ESRGAN: official key names, output sizes, tiling without seams, -U and !fix through the shell."""

from pathlib import Path

import pytest
import torch
from PIL import Image

from dreamshell.engines.esrgan import RRDBNet, SRVGGNetCompact, build_from_state_dict
from dreamshell.engines.upscaler import RealESRGANUpscaler, run_tiled

# a few of the official files' keys, as published
RRDB_KEYS = ["conv_first.weight", "body.0.rdb1.conv1.weight", "body.0.rdb3.conv5.bias", "conv_body.weight",
             "conv_up1.weight", "conv_up2.weight", "conv_hr.weight", "conv_last.bias"]
SRVGG_KEYS = ["body.0.weight", "body.1.weight", "body.2.weight", "body.65.weight", "body.66.weight", "body.66.bias"]


@pytest.mark.parametrize("scale,blocks", [(4, 2), (2, 1)])
def test_rrdbnet_loads_official_keys_and_scales(tmp_path, scale, blocks):
    torch.manual_seed(0)
    net = RRDBNet(scale=scale, num_feat=16, num_block=blocks, num_grow_ch=8)
    state = net.state_dict()
    assert set(RRDB_KEYS) <= set(state)
    path = tmp_path / f"x{scale}.pth"
    torch.save({"params_ema": state}, path)  # the official files wrap the weights like this
    model = build_from_state_dict(torch.load(path, weights_only=True))
    assert isinstance(model, RRDBNet) and model.scale == scale
    x = torch.rand(1, 3, 12, 16)
    assert model(x).shape == (1, 3, 12 * scale, 16 * scale)
    assert torch.equal(model(x), net.eval()(x))


def test_compact_net_loads_official_keys_of_general_x4v3():
    net = SRVGGNetCompact(num_feat=64, num_conv=32, upscale=4)  # realesr-general-x4v3's layout
    assert set(SRVGG_KEYS) <= set(net.state_dict())
    model = build_from_state_dict({"params": net.state_dict()})
    assert isinstance(model, SRVGGNetCompact) and model.scale == 4
    assert model(torch.rand(1, 3, 8, 8)).shape == (1, 3, 32, 32)


def test_not_an_esrgan_file_is_a_clear_error():
    with pytest.raises(ValueError, match="not a Real-ESRGAN weight file"):
        build_from_state_dict({"foo.weight": torch.zeros(1)})


def test_tiled_equals_untiled_within_a_small_error():
    torch.manual_seed(1)
    for model in (SRVGGNetCompact(num_feat=16, num_conv=4, upscale=4).eval(),
                  RRDBNet(scale=4, num_feat=16, num_block=1, num_grow_ch=8).eval()):
        x = torch.rand(1, 3, 70, 90)
        with torch.no_grad():
            whole = model(x)
            tiled = run_tiled(model, x, 4, tile=32, pad=24)  # pad covers the nets' receptive fields
        assert tiled.shape == whole.shape
        assert (tiled - whole).abs().max().item() < 1e-3


def _upscaler(tmp_path, scale=4):
    torch.manual_seed(2)
    path = tmp_path / f"x{scale}.safetensors"
    from safetensors.torch import save_file
    save_file(SRVGGNetCompact(num_feat=8, num_conv=2, upscale=scale).state_dict(), str(path))
    return RealESRGANUpscaler({str(scale): path}, device="cpu", tile=32)


def test_any_factor_and_strength(tmp_path):
    up = _upscaler(tmp_path)
    img = Image.new("RGB", (20, 10), (200, 30, 30))
    assert up.upscale(img, 4).size == (80, 40)
    assert up.upscale(img, 3).size == (60, 30)
    assert up.upscale(img, 2.5, 0.5).size == (50, 25)
    plain = img.resize((80, 40), Image.LANCZOS)
    assert up.upscale(img, 4, 0).tobytes() == plain.tobytes()


def test_out_of_memory_halves_the_tile(tmp_path, monkeypatch):
    up = _upscaler(tmp_path)
    import dreamshell.engines.upscaler as mod
    tiles = []
    real = mod.run_tiled

    def fake(model, x, scale, tile, pad, should_stop=None):
        tiles.append(tile)
        if tile > 64:
            raise RuntimeError("CUDA out of memory. Tried to allocate 2 GiB")
        return real(model, x, scale, tile, pad, should_stop)
    monkeypatch.setattr(mod, "run_tiled", fake)
    up.tile = 256
    assert up.upscale(Image.new("RGB", (40, 40)), 4, 1).size == (160, 160)
    assert tiles == [256, 128, 64]


def test_missing_weights_name_the_path_and_the_download(tmp_path):
    from dreamshell.engines.protocols import GenerationError
    up = RealESRGANUpscaler({"4": tmp_path / "RealESRGAN_x4plus.pth"}, device="cpu")
    with pytest.raises(GenerationError, match=r"RealESRGAN_x4plus.pth do not exist \(download RealESRGAN_x4plus"):
        up.upscale(Image.new("RGB", (8, 8)), 4, 1)


@pytest.fixture
def upscaling_session(make_session, tmp_path):
    def make(weights_ok=True):
        up = _upscaler(tmp_path) if weights_ok else RealESRGANUpscaler({"4": tmp_path / "missing.pth"}, "cpu")
        return make_session(upscaler_factory=lambda: up)
    return make


def test_dash_U_through_the_session(upscaling_session, tmp_path):
    from conftest import run_line
    from dreamshell.store.pngmeta import read_chunks, read_recipe
    s = upscaling_session()
    r2 = run_line(s, "a red circle -S 1 -U 2").records[0]
    assert Image.open(r2.path).size == (128, 128)
    assert r2.command.endswith("-U 2") and read_recipe(Path(r2.path)).upscale.factor == 2
    assert '"postprocessing": [{"type": "esrgan", "scale": 2.0' in read_chunks(Path(r2.path))["sd-metadata"]
    r4 = run_line(s, "a red circle -S 1 -U 4 0.5 --save_original").records[0]
    assert Image.open(r4.path).size == (256, 256)
    assert "-U 4 0.5 --save_original" in r4.command
    original = Path(r4.path).with_name(Path(r4.path).name[:-4] + ".original.png")
    assert Image.open(original).size == (64, 64)


def test_missing_upscaler_weights_still_save_the_image(upscaling_session, tmp_path):
    from conftest import run_line
    s = upscaling_session(weights_ok=False)
    result = run_line(s, "a red circle -S 1 -U 4")
    rec = result.records[0]
    assert Image.open(rec.path).size == (64, 64)
    assert "-U" not in rec.command
    assert any("missing.pth do not exist" in line and "saved without upscaling" in line for line in result.notes)
    assert any("saved without upscaling" in line for line in s.echoed)


def test_fix_writes_a_new_file_and_never_overwrites(upscaling_session, tmp_path):
    from conftest import run_line
    from dreamshell.run.dispatch import Dispatcher
    from dreamshell.line.parser import parse_request
    from dreamshell.run.postprocess import register_fix
    from dreamshell.store.pngmeta import read_recipe
    s = upscaling_session()
    rec = run_line(s, "a blue square -S 4").records[0]
    before = Path(rec.path).read_bytes()
    d = Dispatcher(s, echo=s.echoed.append)
    register_fix(d)
    assert not d.execute(f"!fix {rec.path} -U 4").failed
    assert not d.execute(f"!fix {rec.path} -U 2 0.5").failed
    first = Path(rec.path).with_name("000000.4.upscale.png")
    second = Path(rec.path).with_name("000000.4.upscale-01.png")
    assert Image.open(first).size == (256, 256) and Image.open(second).size == (128, 128)
    assert Path(rec.path).read_bytes() == before
    assert read_recipe(second) == parse_request(rec.command).with_(upscale=parse_request("x -U 2 0.5").upscale)
    log = (tmp_path / "out" / "dream_log.txt").read_text().splitlines()
    assert log[-1].startswith(str(second)) or "000000.4.upscale-01.png" in log[-1]
    errors = []
    d.error = errors.append
    d.execute(f"!fix {rec.path}")
    d.execute("!fix nowhere.png -U 2")
    assert errors == ["!fix needs something to do: !fix PATH -U 4 (factor, then an optional strength), or "
                      "!fix PATH --outcrop right 64",
                      "!fix nowhere.png: no such file"]


def test_dash_U_typed_at_the_dream_prompt(upscaling_session, drive_shell, tmp_path):
    from dreamshell.store.pngmeta import read_chunks
    from dreamshell.run.postprocess import register_fix
    s = upscaling_session()
    d = drive_shell(s, register=register_fix)
    d.type("a red circle -S 1 -U 2\ra red circle -S 1 -U 4 0.5\r!fix ../out/000000.1.png -U 4\r")
    d.wait_output("000000.1.upscale.png")
    assert d.finish() == 0
    first, second = tmp_path / "out" / "000000.1.png", tmp_path / "out" / "000001.1.png"
    assert Image.open(first).size == (128, 128) and Image.open(second).size == (256, 256)
    assert "-U 4 0.5" in read_chunks(second)["Dream"]   # then InvokeAI 2.2's --karras_max
    assert "Postprocess upscale by: 4" in read_chunks(second)["parameters"]
    assert Image.open(tmp_path / "out" / "000000.1.upscale.png").size == (512, 512)


def test_the_demo_upscaler_beats_bicubic():
    from safetensors.torch import load_file

    from dreamshell.demo.upscaler_eval import evaluate
    from dreamshell.weights.models import builtin_models_dir
    model = build_from_state_dict(load_file(str(builtin_models_dir() / "upscaler" / "demo-x4.safetensors")))
    figures = evaluate(model, n=12)
    assert figures["gain_db"] >= 1.0, figures
