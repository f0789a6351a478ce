"""Tiny decoders (TAESD): every layout people have on disk, built here from a random AutoencoderTiny (no
weights are downloaded), is detected by its keys, loaded, and tensor-equal to what was written; the family
comes from the latent channels and the name; a wrong family, an encoder, any other file are one line."""

import json

import pytest

torch = pytest.importorskip("torch")

from dreamshell.engines.decoders import DecoderError, decode, decode_to_pil, load_tiny_decoder  # noqa: E402
from dreamshell.weights.checkpoint import NotATinyDecoder, detect_tiny_decoder, tiny_decoder_refusal  # noqa: E402


def _tiny(channels=4, seed=0):
    from diffusers import AutoencoderTiny
    torch.manual_seed(seed)
    model = AutoencoderTiny(latent_channels=channels)
    with torch.no_grad():
        for p in model.parameters():   # a random init with visible scale, so a shift in keys would show
            p.normal_(0, 0.05)
    return model.eval()


def _original(model, part="decoder"):
    """madebyollin's numbered Sequential keys: decoder layer N of diffusers is N + 1 there (its Clamp is 0)."""
    shift = 1 if part == "decoder" else 0
    out = {}
    for key, value in model.state_dict().items():
        if key.startswith(f"{part}.layers."):
            index, _, rest = key[len(f"{part}.layers."):].partition(".")
            out[f"{int(index) + shift}.{rest}"] = value.clone()
    return out


def _write(tmp_path, model, layout, name):
    from safetensors.torch import save_file
    if layout == "folder":
        path = tmp_path / name
        model.save_pretrained(path, safe_serialization=True)
    elif layout == "pth":
        path = tmp_path / f"{name}.pth"
        torch.save(_original(model), path)
    elif layout == "safetensors":
        path = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in _original(model).items()}, str(path))
    elif layout == "comfy":
        path = tmp_path / f"{name}.safetensors"
        save_file({"taesd_decoder." + k: v.contiguous() for k, v in _original(model).items()}
                  | {"taesd_encoder." + k: v.contiguous() for k, v in _original(model, "encoder").items()}, str(path))
    else:   # a diffusers state dict in one file
        path = tmp_path / f"{name}.safetensors"
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(path))
    return path


LAYOUTS = [("folder", "diffusers folder"), ("pth", "original file"), ("safetensors", "original file"),
           ("comfy", "original file"), ("diffusers-file", "diffusers file")]
NAMES = [("taesdxl_decoder", 4, ("sdxl",)), ("my_tiny_vae", 4, ("sd1", "sdxl")), ("taesd3_decoder", 16, ("sd3",)),
         ("taef1_decoder", 16, ("flux",))]


@pytest.mark.parametrize("layout, shown, name, channels, families",
                         [(*layout, "taesd_decoder", 4, ("sd1",)) for layout in LAYOUTS]
                         + [("pth", "original file", *name) for name in NAMES]
                         + [("folder", "diffusers folder", "taesd3", 16, ("sd3",))])
def test_every_layout_is_detected_loaded_and_tensor_equal(tmp_path, layout, shown, name, channels, families):
    model = _tiny(channels)
    path = _write(tmp_path, model, layout, name)
    found = detect_tiny_decoder(path)
    assert (found.layout, found.latent_channels, found.families) == (shown, channels, families)
    loaded = load_tiny_decoder(path)
    want = {k: v for k, v in model.state_dict().items() if k.startswith("decoder.")}
    got = loaded.state_dict()
    assert all(torch.equal(got[k], v) for k, v in want.items())
    latents = torch.randn(1, channels, 8, 8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        expected = model.decode(latents).sample
    assert torch.equal(decode(loaded, latents), expected)


def test_decode_matches_madebyollins_decoder_on_unet_latents(tmp_path):
    """TAESD decodes the UNet's latents as they are: tanh clamp, the layers, [0, 1] -> [-1, 1]."""
    model = _tiny()
    loaded = load_tiny_decoder(_write(tmp_path, model, "pth", "taesd_decoder"))
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(4)) * 5
    x = torch.tanh(latents / 3) * 3
    with torch.no_grad():
        ours = model.decoder.layers(x)
    assert torch.allclose(decode(loaded, latents), ours * 2 - 1, atol=1e-6)
    images = decode_to_pil(loaded, latents)
    assert images[0].size == (64, 64) and images[0].mode == "RGB"


@pytest.mark.parametrize("name, family, message", [
    ("taesdxl_decoder", "sd1", "taesdxl_decoder.pth is a tiny decoder for SDXL (taesdxl) latents (4 channels); "
                               "this model is SD 1.x: use taesd for it"),
    ("taesd_decoder", "sdxl", "taesd_decoder.pth is a tiny decoder for SD 1.x/2.x (taesd) latents (4 channels); "
                              "this model is SDXL: use taesdxl for it"),
    ("taef1_decoder", "sd1", "is a tiny decoder for FLUX.1 (taef1) latents (16 channels); this model is SD 1.x"),
])
def test_a_decoder_for_another_family_is_one_line(tmp_path, name, family, message):
    path = _write(tmp_path, _tiny(16 if "taef1" in name else 4), "pth", name)
    with pytest.raises(DecoderError, match=message.replace("(", r"\(").replace(")", r"\)").replace(".", r"\.")) as e:
        load_tiny_decoder(path, family)
    assert "\n" not in str(e.value)
    assert tiny_decoder_refusal(detect_tiny_decoder(path), "sd2" if name == "taesd_decoder" else family) is not None \
        or name == "taesd_decoder"
    assert load_tiny_decoder(_write(tmp_path, _tiny(), "pth", "plain"), family if family != "sd1" else "sd2")


def test_an_encoder_a_vae_and_a_missing_path_are_one_line(tmp_path):
    from safetensors.torch import save_file
    enc = tmp_path / "taesd_encoder.safetensors"
    save_file({k: v.contiguous() for k, v in _original(_tiny(), "encoder").items()}, str(enc))
    with pytest.raises(NotATinyDecoder, match="is a TAESD encoder .* the decoder is the file named \\*_decoder"):
        detect_tiny_decoder(enc)
    vae = tmp_path / "vae.safetensors"
    save_file({"encoder.conv_in.weight": torch.zeros(128, 3, 3, 3), "decoder.conv_in.weight": torch.zeros(512, 4, 3, 3)},
              str(vae))   # an AutoencoderKL's first layers, as a VAE file has them
    with pytest.raises(DecoderError, match="vae.safetensors is not a TAESD decoder \\(a VAE alone"):
        load_tiny_decoder(vae)
    with pytest.raises(DecoderError, match="no tiny decoder at"):
        load_tiny_decoder(tmp_path / "nothing.pth")
    folder = tmp_path / "kl"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKL"}))
    with pytest.raises(DecoderError, match="holds a AutoencoderKL, not an AutoencoderTiny"):
        load_tiny_decoder(folder)


def test_a_file_with_other_shapes_is_named(tmp_path):
    state = _original(_tiny())
    state["7.weight"] = torch.zeros(64, 64, 1, 1)
    path = tmp_path / "taesd_decoder.pth"
    torch.save(state, path)
    with pytest.raises(DecoderError, match="decoder.layers.6.weight has shape \\(64, 64, 1, 1\\)"):
        load_tiny_decoder(path)


def test_the_live_preview_decodes_through_the_tiny_decoder(tmp_path):
    """PreviewTap with a TinyPreview: each preview is the TAESD image of the scheduler's predicted clean latent."""
    import diffusers
    from dreamshell.engines.decoders import TinyPreview
    from dreamshell.engines.preview import PreviewTap
    tiny = load_tiny_decoder(_write(tmp_path, _tiny(), "pth", "taesd_decoder"), "sd1")
    seen = []
    tap = PreviewTap(TinyPreview(tiny, scale=0.5), lambda step, total, image: seen.append((step, total, image)))
    sched = diffusers.EulerDiscreteScheduler(beta_schedule="scaled_linear", beta_start=0.00085, beta_end=0.012,
                                             timestep_spacing="trailing")
    sched.set_timesteps(2)
    x = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(5)) * sched.init_noise_sigma
    with tap.attached(sched):
        for i, t in enumerate(sched.timesteps):
            eps = torch.randn(1, 4, 16, 16, generator=torch.Generator().manual_seed(i))
            x = sched.step(eps, t, x).prev_sample
            predicted = tap.predicted
            tap(i + 1, 2, x)
            want = decode_to_pil(tiny, torch.nn.functional.avg_pool2d(predicted, 2))[0]
            assert seen[-1][2].tobytes() == want.tobytes()
    assert [(s, t, im.size) for s, t, im in seen] == [(1, 2, (64, 64)), (2, 2, (64, 64))]
    with pytest.raises(ValueError, match="the preview scale is 0.25, 0.5 or 1"):
        TinyPreview(tiny, scale=0.3)
