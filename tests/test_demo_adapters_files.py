"""The shipped demo adapters are in the formats they claim (no generation; numpy + safetensors only).

models/loras/demo_cross.safetensors (kohya/A1111 LoRA), models/embeddings/yolk.safetensors (A1111
textual inversion), models/vae/demo-vae.safetensors (single-file VAE, LDM/CompVis keys); and the
pixel measures in dreamshell/demo/concepts.py on drawn scenes.
"""

import json
import random
import re
from pathlib import Path

import numpy as np
import pytest

from dreamshell.demo import concepts, shapes

ROOT = Path(__file__).resolve().parent.parent
DEMO = ROOT / "models" / "demo"
LORA = ROOT / "models" / "loras" / "demo_cross.safetensors"
EMB = ROOT / "models" / "embeddings" / "yolk.safetensors"
VAE = ROOT / "models" / "vae" / "demo-vae.safetensors"

safetensors = pytest.importorskip("safetensors")
from safetensors import safe_open  # noqa: E402
from safetensors.numpy import load_file  # noqa: E402


def _keys(path: Path) -> list[str]:
    with safe_open(str(path), "np") as f:
        return list(f.keys())


def test_the_lora_is_kohya_format_and_names_real_modules():
    sd = load_file(str(LORA))
    with safe_open(str(LORA), "np") as f:
        meta = f.metadata()
    assert LORA.stat().st_size < 2 * 1024 * 1024
    unet_keys = {k.rsplit(".", 1)[0] for k in _keys(DEMO / "unet" / "diffusion_pytorch_model.safetensors")}
    te_keys = {k.rsplit(".", 1)[0] for k in _keys(DEMO / "text_encoder" / "model.safetensors")}
    unet_mods = {m.replace(".", "_"): m for m in unet_keys}
    te_mods = {m.replace(".", "_"): m for m in te_keys} | {"text_model_" + m.replace(".", "_"): m for m in te_keys}
    modules = {k.split(".")[0] for k in sd}
    assert any(m.startswith("lora_unet_") for m in modules) and any(m.startswith("lora_te_") for m in modules)
    for mod in modules:
        assert {f"{mod}.lora_down.weight", f"{mod}.lora_up.weight", f"{mod}.alpha"} <= set(sd), mod
        down, up, alpha = sd[f"{mod}.lora_down.weight"], sd[f"{mod}.lora_up.weight"], sd[f"{mod}.alpha"]
        assert down.dtype == up.dtype == alpha.dtype == np.float16
        rank = down.shape[0]
        assert rank == int(meta["ss_network_dim"]) and up.shape[1] == rank and alpha.shape == ()
        if mod.startswith("lora_unet_"):
            assert mod[len("lora_unet_"):] in unet_mods, mod
        else:
            assert re.match(r"lora_te_text_model_encoder_layers_\d+_", mod), mod  # kohya/A1111 naming
            assert mod[len("lora_te_"):] in te_mods, mod
    assert len(sd) == 3 * len(modules)
    assert meta["ss_base_model_version"] == "sd_v1" and "ss_sd_model_name" in meta
    numbers = json.loads(LORA.with_suffix(".json").read_text())
    assert numbers["cross_rate"]["with_lora"]["cross"] >= 0.8
    assert numbers["cross_rate"]["without_lora"]["cross"] <= 0.1
    assert numbers["load"]["warnings"] == [] and numbers["load"]["missing"] == []


def test_the_embedding_is_a1111_format_for_a_new_word():
    sd = load_file(str(EMB))
    assert list(sd) == ["emb_params"]
    vec = sd["emb_params"]
    assert vec.ndim == 2 and 1 <= vec.shape[0] <= 4 and vec.shape[1] == 96
    assert vec.dtype in (np.float32, np.float16) and np.isfinite(vec).all()
    word = EMB.stem
    assert re.fullmatch(r"[a-z0-9_]+", word)
    vocab = json.loads((DEMO / "tokenizer" / "vocab.json").read_text(encoding="utf-8"))
    assert word not in vocab and word + "</w>" not in vocab
    numbers = json.loads(EMB.with_suffix(".json").read_text())
    assert numbers["yolk_rate"]["with_embedding"]["yellow_circle"] >= 0.8
    assert numbers["yolk_rate"]["without_embedding"]["yellow_circle"] <= 0.1


def test_the_single_file_vae_has_the_ldm_layout_and_the_folder_weights():
    ldm = load_file(str(VAE))
    folder = load_file(str(DEMO / "vae" / "diffusion_pytorch_model.safetensors"))
    assert len(ldm) == len(folder)
    assert all(w.dtype == np.float16 for w in ldm.values())
    for k in ("encoder.conv_in.weight", "encoder.down.0.block.0.norm1.weight", "encoder.down.0.downsample.conv.weight",
              "encoder.mid.block_1.conv1.weight", "encoder.mid.block_2.norm2.bias", "encoder.norm_out.weight",
              "decoder.mid.block_1.conv1.weight", "decoder.up.2.upsample.conv.weight", "decoder.norm_out.bias",
              "quant_conv.weight", "post_quant_conv.weight"):
        assert k in ldm, k
    assert not [k for k in ldm if re.search(r"down_blocks|up_blocks|mid_block|conv_shortcut|conv_norm_out|attn", k)]
    assert any(k.endswith("nin_shortcut.weight") for k in ldm)
    # LDM numbers the decoder's levels from the lowest resolution: diffusers' up_blocks.i is up.(2-i)
    for i in range(3):
        j = 2 - i
        assert np.array_equal(ldm[f"decoder.up.{j}.block.0.conv1.weight"],
                              folder[f"decoder.up_blocks.{i}.resnets.0.conv1.weight"])
    assert np.array_equal(ldm["decoder.up.0.block.0.nin_shortcut.weight"],
                          folder["decoder.up_blocks.2.resnets.0.conv_shortcut.weight"])
    assert np.array_equal(ldm["encoder.down.1.downsample.conv.weight"],
                          folder["encoder.down_blocks.1.downsamplers.0.conv.weight"])
    assert np.array_equal(ldm["encoder.norm_out.weight"], folder["encoder.conv_norm_out.weight"])
    assert sorted(w.tobytes() for w in ldm.values()) == sorted(w.tobytes() for w in folder.values())


def test_the_concept_measures_on_drawn_scenes():
    rng = random.Random(11)
    for _ in range(30):
        assert concepts.is_cross(concepts.render(concepts.random_cross_scene(rng), rng))
        scene = shapes.random_scene(rng)
        img = shapes.render(scene, rng)
        assert not concepts.is_cross(img)
        assert concepts.is_yolk(img) == ((scene.colour, scene.shape) == concepts.YOLK)
    assert concepts.is_yolk(shapes.render(shapes.random_scene(rng, colour="yellow", shape="circle"), rng))
