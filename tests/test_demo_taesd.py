"""The shipped tiny decoder for the demo model loads and has the layouts it claims.

models/taesd/: a tiny decoder (and encoder) for the demo model, as a diffusers AutoencoderTiny folder
(demo-taesd/) and as single files in madebyollin's TAESD layout (taesd_demo_decoder.safetensors,
taesd_demo_encoder.safetensors); scripts/train_demo_taesd.py made them. Each is used once on a tiny input.
"""

import hashlib
import json
import random
from pathlib import Path

import pytest

from dreamshell.demo import shapes

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "demo"
TAESD = ROOT / "models" / "taesd"
TINY = TAESD / "demo-taesd"
DECODER = TAESD / "taesd_demo_decoder.safetensors"
ENCODER = TAESD / "taesd_demo_encoder.safetensors"

torch = pytest.importorskip("torch")
pytest.importorskip("diffusers")
from safetensors.torch import load_file  # noqa: E402

# madebyollin/taesd taesd.py: Decoder = nn.Sequential(Clamp(), conv(4, C), ReLU(), Block x3, Upsample(),
# conv(C, C, bias=False), ...); a Block is conv.0/conv.2/conv.4 (3x3 with bias) and no skip when in == out
BLOCK = {f"conv.{i}.{p}" for i in (0, 2, 4) for p in ("weight", "bias")}


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tiny():
    from diffusers import AutoencoderTiny
    return AutoencoderTiny.from_pretrained(TINY, local_files_only=True, dtype=torch.float32).eval()


def test_the_tiny_decoder_folder_is_an_autoencoder_tiny_for_factor_4():
    cfg = json.loads((TINY / "config.json").read_text())
    assert cfg["_class_name"] == "AutoencoderTiny"
    assert cfg["latent_channels"] == 4 and cfg["scaling_factor"] == 1.0   # it decodes the UNet's latents
    assert len(cfg["num_decoder_blocks"]) == 3 and cfg["upsampling_scaling_factor"] == 2   # 2 x 2 = factor 4
    assert "block_out_channels" not in cfg    # AutoencoderTiny sets it itself and warns when given it
    tiny = _tiny()
    files = load_file(str(TINY / "diffusion_pytorch_model.safetensors"))
    assert set(files) == set(tiny.state_dict())
    assert all(v.dtype == torch.float16 for v in files.values())


def test_the_single_files_are_madebyollins_layout_and_equal_the_folder():
    dec, enc = load_file(str(DECODER)), load_file(str(ENCODER))
    width = dec["1.weight"].shape[0]
    assert dec["1.weight"].shape == (width, 4, 3, 3)
    # decoder: 0 Clamp, 1 conv, 2 ReLU, 3-5 Blocks, 6 Upsample, 7 conv, 8-10 Blocks, 11 Upsample, 12 conv,
    # 13 Block, 14 conv(C, 3): SD's layout with one upsampling stage (index 16-17) fewer
    want = {"1.weight", "1.bias", "7.weight", "12.weight", "14.weight", "14.bias"}
    want |= {f"{i}.{k}" for i in (3, 4, 5, 8, 9, 10, 13) for k in BLOCK}
    assert set(dec) == want
    assert dec["14.weight"].shape == (3, width, 3, 3)
    # encoder: 0 conv(3, C), 1 Block, 2 conv stride 2, 3-5 Blocks, 6 conv stride 2, 7-9 Blocks, 10 conv(C, 4)
    want = {"0.weight", "0.bias", "2.weight", "6.weight", "10.weight", "10.bias"}
    want |= {f"{i}.{k}" for i in (1, 3, 4, 5, 7, 8, 9) for k in BLOCK}
    assert set(enc) == want
    folder = _tiny().state_dict()
    for key, w in dec.items():
        index, rest = key.split(".", 1)
        assert torch.equal(w.float(), folder[f"decoder.layers.{int(index) - 1}.{rest}"]), key
    for key, w in enc.items():
        assert torch.equal(w.float(), folder[f"encoder.layers.{key}"]), key
    assert len(dec) + len(enc) == len(folder)


def test_the_tiny_decoder_draws_what_the_demo_vae_draws():
    from diffusers import AutoencoderKL
    vae = AutoencoderKL.from_pretrained(DEMO / "vae", local_files_only=True, dtype=torch.float32).eval()
    tiny = _tiny()
    scene = shapes.random_scene(random.Random(5), colour="red", shape="circle", background="blue")
    img = shapes.render(scene)
    x = torch.from_numpy(__import__("numpy").asarray(img, dtype="float32")).permute(2, 0, 1)[None] / 127.5 - 1
    with torch.no_grad():
        z = vae.encode(x).latent_dist.mean * vae.config.scaling_factor   # the latents the UNet sees
        out = tiny.decode(z).sample                                     # AutoencoderTiny: scaling factor 1
        z_tiny = tiny.encode(x).latents
    assert out.shape == (1, 3, 64, 64)
    from PIL import Image
    pixels = ((out[0].clamp(-1, 1) + 1) * 127.5).round().byte().permute(1, 2, 0).numpy()
    r = shapes.read_image(Image.fromarray(pixels))
    assert (r.colour, r.shape, r.background) == ("red", "circle", "blue")
    assert float((z_tiny - z).abs().mean()) < 0.2


def test_the_tiny_decoder_numbers_are_recorded():
    numbers = json.loads((TAESD / "demo-taesd.json").read_text())
    vae, tiny = numbers["demo_vae"], numbers["tiny_decoder"]
    assert abs(vae["colour"] - tiny["colour"]) <= 0.01
    assert numbers["files"]["single_files_equal_folder"] is True
    assert numbers["training"]["cpu_minutes"] > 0
