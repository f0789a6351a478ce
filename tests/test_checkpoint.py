"""Kind from the weights (no torch): safetensors headers, zip checkpoints, diffusers folders, non-models."""

import json
import zipfile

import numpy as np
import pytest
from safetensors.numpy import save_file

from dreamshell.weights.checkpoint import NotAModel, ckpt_keys, detect, safetensors_header
from dreamshell.weights.models import ModelsFileError, Registry, load_registry

U = "model.diffusion_model."
K = U + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight"
VAE = {"first_stage_model.encoder.conv_in.weight": (128, 3, 3, 3)}


def ldm(channels=4, context=768, text=None):
    keys = {U + "input_blocks.0.0.weight": (320, channels, 3, 3), K: (640, context), **VAE}
    keys.update(text or {"cond_stage_model.transformer.text_model.embeddings.position_embedding.weight": (77, 768)})
    return keys


SD2_TEXT = {"cond_stage_model.model.token_embedding.weight": (8, 1024)}
XL_TEXT = {"conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight": (77, 768),
           "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": (1280,)}
REFINER_TEXT = {"conditioner.embedders.0.model.transformer.resblocks.9.mlp.c_proj.bias": (1280,)}


def write(path, shapes):
    """A real safetensors file with zero tensors of the given shapes (float16, small)."""
    save_file({k: np.zeros(s, np.float16) for k, s in shapes.items()}, str(path))
    return path


@pytest.mark.parametrize("shapes,kind,prediction", [
    (ldm(), "sd1", None),
    (ldm(9), "sd1-inpaint", None),
    (ldm(4, 1024, SD2_TEXT), "sd2", None),
    (ldm(9, 1024, SD2_TEXT), "sd2-inpaint", "epsilon"),
    (ldm(4, 2048, XL_TEXT), "sdxl", None),
    (ldm(9, 2048, XL_TEXT), "sdxl-inpaint", None),
    (ldm(4, 1280, REFINER_TEXT), "sdxl-refiner", None),
])
def test_kind_is_read_from_the_header(tmp_path, shapes, kind, prediction):
    found = detect(write(tmp_path / "m.safetensors", shapes))
    assert (found.kind, found.prediction) == (kind, prediction)


def test_header_gives_every_key_and_shape_without_reading_the_weights(tmp_path):
    path = write(tmp_path / "m.safetensors", ldm(9))
    with open(path, "r+b") as f:  # spoil the tensor data: only the header may be read
        f.seek(-64, 2)
        f.write(b"\xff" * 64)
    assert safetensors_header(path) == ldm(9)


@pytest.mark.parametrize("shapes,says", [
    ({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": (4, 320),
      "lora_te_text_model_encoder_layers_0_mlp_fc1.lora_up.weight": (3072, 4)}, "a LoRA (kohya layout, for SD 1.x/2.x)"),
    ({"lora_unet_x.lora_down.weight": (4, 320), "lora_te1_x.lora_up.weight": (3072, 4)}, "for SDXL"),
    ({"unet.down_blocks.0.attentions.0.proj_in.lora_A.weight": (4, 320)}, "a LoRA (diffusers/peft layout)"),
    ({"encoder.conv_in.weight": (128, 3, 3, 3), "decoder.conv_in.weight": (512, 4, 3, 3)}, "a VAE alone"),
    ({"first_stage_model.encoder.conv_in.weight": (128, 3, 3, 3)}, "a VAE alone"),
    ({"emb_params": (4, 768)}, "a textual-inversion embedding"),
    ({"clip_l": (2, 768), "clip_g": (2, 1280)}, "a textual-inversion embedding"),
    ({"conv_first.weight": (64, 3, 3, 3), "body.0.rdb1.conv1.weight": (32, 64, 3, 3)}, "a Real-ESRGAN upscaler"),
    ({"body.0.weight": (64, 3, 3, 3), "body.1.weight": (64,)}, "a Real-ESRGAN upscaler"),
    ({U + "joint_blocks.0.context_block.adaLN_modulation.1.bias": (9216,)}, "an SD 3-family model of a shape"),
    ({"double_blocks.0.img_attn.norm.key_norm.scale": (128,)}, "a FLUX.1-shaped model with 1 double and 0 single"),
    ({"something.else": (3,)}, "not a Stable Diffusion checkpoint dreamshell knows (keys like something.else)"),
])
def test_a_file_that_is_not_a_model_is_one_line_saying_what_it_is(tmp_path, shapes, says):
    path = write(tmp_path / "x.safetensors", shapes)
    with pytest.raises(NotAModel, match=says.replace("(", r"\(").replace(")", r"\)")):
        detect(path)
    with pytest.raises(ModelsFileError) as err:  # the same line when given to --model
        Registry({}).get(str(path))
    assert says in str(err.value) and "\n" not in str(err.value) and str(path) in str(err.value)


def _torch_checkpoint(path, state, **extra):
    """A .ckpt as torch.save writes it (Lightning layout: state_dict + global_step)."""
    import torch
    torch.save({"state_dict": {k: torch.zeros(s, dtype=torch.float16) for k, s in state.items()}, **extra}, path)
    return path


def test_ckpt_keys_and_shapes_come_from_its_pickle_without_running_it(tmp_path):
    path = _torch_checkpoint(tmp_path / "m.ckpt", ldm(4, 1024, SD2_TEXT), global_step=875000)
    keys = ckpt_keys(path)
    assert keys[U + "input_blocks.0.0.weight"] == (320, 4, 3, 3) and keys["global_step"] == 875000
    found = detect(path)
    assert (found.kind, found.prediction) == ("sd2", "epsilon")  # the 512 base: its training step says so
    path = _torch_checkpoint(tmp_path / "v.ckpt", ldm(4, 1024, SD2_TEXT), global_step=110000)
    assert detect(path).prediction == "v"
    assert detect(_torch_checkpoint(tmp_path / "i.ckpt", ldm(9))).kind == "sd1-inpaint"


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import os
        return (os.system, (f"touch {self.marker}",))


def test_reading_a_ckpt_runs_none_of_its_code(tmp_path):
    import pickle
    marker = tmp_path / "ran"
    path = tmp_path / "evil.ckpt"
    with zipfile.ZipFile(path, "w") as z:
        z.writestr("archive/data.pkl", pickle.dumps({"state_dict": {"x": _Evil(marker)}}))
    with pytest.raises(NotAModel, match="keys like x"):
        detect(path)
    assert not marker.exists()


def test_diffusers_folders_are_told_from_their_configs(tmp_path):
    def folder(name, index, unet, prediction="epsilon"):
        f = tmp_path / name
        (f / "unet").mkdir(parents=True)
        (f / "scheduler").mkdir()
        (f / "model_index.json").write_text(json.dumps(index))
        (f / "unet" / "config.json").write_text(json.dumps(unet))
        (f / "scheduler" / "scheduler_config.json").write_text(json.dumps({"prediction_type": prediction}))
        return f
    sd = {"text_encoder": ["transformers", "CLIPTextModel"]}
    xl = dict(sd, text_encoder_2=["transformers", "CLIPTextModelWithProjection"])
    assert detect(folder("a", sd, {"in_channels": 9, "cross_attention_dim": 768})).kind == "sd1-inpaint"
    found = detect(folder("b", sd, {"in_channels": 4, "cross_attention_dim": 1024}, "v_prediction"))
    assert (found.kind, found.prediction) == ("sd2", "v")
    assert detect(folder("c", xl, {"in_channels": 9})).kind == "sdxl-inpaint"
    assert detect(folder("d", dict(xl, text_encoder=[None, None]), {"in_channels": 4})).kind == "sdxl-refiner"


def test_kind_is_optional_in_the_models_file_and_read_from_the_weights(tmp_path):
    write(tmp_path / "xl.safetensors", ldm(4, 2048, XL_TEXT))
    write(tmp_path / "v2.safetensors", ldm(4, 1024, SD2_TEXT))
    write(tmp_path / "lora.safetensors", {"lora_unet_a.lora_down.weight": (4, 320)})
    f = tmp_path / "models.yaml"
    f.write_text("xl:\n  weights: xl.safetensors\nbase2:\n  weights: v2.safetensors\n  prediction: epsilon\n"
                 "v2:\n  weights: v2.safetensors\n  prediction: v\nlater:\n  weights: missing.safetensors\n")
    reg = load_registry(f)
    assert (reg.models["xl"].kind, reg.models["xl"].width) == ("sdxl", 1024)
    assert (reg.models["base2"].kind, reg.models["base2"].prediction, reg.models["base2"].width) == ("sd2", "epsilon", 512)
    assert (reg.models["v2"].prediction, reg.models["v2"].width) == ("v", 768)
    assert reg.models["later"].kind == ""  # read when it is loaded
    f.write_text("l:\n  weights: lora.safetensors\n")
    with pytest.raises(ModelsFileError, match=r"model 'l': .*lora.safetensors is a LoRA"):
        load_registry(f)
    f.write_text("l:\n  weights: xl.safetensors\n  prediction: x\n")
    with pytest.raises(ModelsFileError, match="prediction 'x'; use v, epsilon or sample"):
        load_registry(f)
