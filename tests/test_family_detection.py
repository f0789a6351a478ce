"""SDXL variants, SD 3 / 3.5 and FLUX.1 told from their headers (no torch, no weights read): the marker
keys A1111 and ComfyUI read, the ModelSpec header, the shapes diffusers' infer_diffusers_model_type
reads, GGUF headers, and the encoder/VAE files ComfyUI users keep beside them."""

import json

import pytest

from family_headers import gguf_file, header_only, layouts
from dreamshell.weights.checkpoint import (NotAModel, classify, detect, detect_part, gguf_header, same_model,
                                           safetensors_metadata)
from dreamshell.weights.models import ModelsFileError, Registry

U = "model.diffusion_model."
XL = {U + "input_blocks.0.0.weight": (320, 4, 3, 3),
      U + "input_blocks.4.1.transformer_blocks.0.attn2.to_k.weight": (640, 2048),
      "conditioner.embedders.0.transformer.text_model.embeddings.position_embedding.weight": (77, 768),
      "conditioner.embedders.1.model.transformer.resblocks.9.mlp.c_proj.bias": (1280,),
      "first_stage_model.encoder.conv_in.weight": (128, 3, 3, 3)}


# ----- SDXL variants

@pytest.mark.parametrize("markers,prediction,zero_snr", [
    ({}, None, False),
    ({"v_pred": (0,)}, "v", False),
    ({"v_pred": (0,), "ztsnr": (0,)}, "v", True),      # NoobAI-XL v-pred and the like (A1111 #16567/#16569)
    ({"ztsnr": (0,)}, None, True),                       # A1111/Forge read ztsnr on its own
])
def test_sdxl_v_prediction_and_zero_terminal_snr_come_from_marker_keys(tmp_path, markers, prediction, zero_snr):
    found = detect(header_only(tmp_path / "xl.safetensors", {**XL, **markers}))
    assert (found.kind, found.prediction, found.zero_snr) == ("sdxl", prediction, zero_snr)


def test_the_modelspec_header_gives_title_architecture_and_prediction(tmp_path):
    meta = {"modelspec.sai_model_spec": "1.0.0", "modelspec.architecture": "stable-diffusion-xl-v1-base",
            "modelspec.title": "My XL v-pred", "modelspec.prediction_type": "v"}
    path = header_only(tmp_path / "xl.safetensors", XL, meta)
    assert safetensors_metadata(path)["modelspec.title"] == "My XL v-pred"
    found = detect(path)
    assert (found.kind, found.prediction, found.title, found.architecture) == \
        ("sdxl", "v", "My XL v-pred", "stable-diffusion-xl-v1-base")
    # ComfyUI's checkpoint saver writes modelspec.predict_key
    found = detect(header_only(tmp_path / "c.safetensors", XL, {"modelspec.predict_key": "v"}))
    assert found.prediction == "v"


def test_playground_v25_is_sdxl_shaped_with_edm_keys(tmp_path):
    found = detect(header_only(tmp_path / "pg.safetensors", {**XL, "edm_mean": (1, 4, 1, 1), "edm_std": (1, 4, 1, 1)}))
    assert (found.kind, found.family, found.label) == ("sdxl-playground", "sdxl",
                                                        "Playground v2.5 (SDXL with an EDM schedule)")


def test_cosxl_style_v_prediction_edm_is_refused_by_name(tmp_path):
    with pytest.raises(NotAModel, match="CosXL"):
        detect(header_only(tmp_path / "c.safetensors", {**XL, "edm_vpred.sigma_max": ()}))


# ----- SD 3 / 3.5

@pytest.mark.parametrize("kind", ["sd3-medium", "sd35-medium", "sd35-large"])
def test_sd3_kinds_come_from_width_depth_and_dual_attention(tmp_path, kind):
    found = detect(header_only(tmp_path / "m.safetensors", layouts.sd3_single_file(kind, encoders=())))
    assert (found.kind, found.family, found.bundled) == (kind, "sd3", ("vae",))


def test_sd3_bundled_text_encoders_are_listed(tmp_path):
    path = header_only(tmp_path / "m.safetensors", layouts.sd3_single_file("sd35-medium", ("clip_l", "clip_g"), t5=True))
    assert detect(path).bundled == ("clip_l", "clip_g", "t5xxl", "vae")
    path = header_only(tmp_path / "n.safetensors", layouts.sd3_single_file("sd3-medium", ("clip_l", "clip_g")))
    assert detect(path).bundled == ("clip_l", "clip_g", "vae")


def test_sd35_large_turbo_is_told_by_its_header_or_its_name_and_says_how(tmp_path):
    shapes = layouts.sd3_single_file("sd35-large", encoders=())
    assert detect(header_only(tmp_path / "sd3.5_large.safetensors", shapes)).kind == "sd35-large"
    found = detect(header_only(tmp_path / "sd3.5_large_turbo.safetensors", shapes))
    assert found.kind == "sd35-large-turbo" and "file name" in found.note
    found = detect(header_only(tmp_path / "x.safetensors", shapes, {"modelspec.title": "SD3.5 Large Turbo"}))
    assert found.kind == "sd35-large-turbo" and "ModelSpec" in found.note
    assert same_model("sd35-large-turbo", "sd35-large") and not same_model("sd35-medium", "sd35-large")


def test_an_sd3_transformer_of_unknown_shape_is_one_line(tmp_path):
    shapes = layouts.sd3_transformer(width=1024, depth=16, pos=192)
    with pytest.raises(NotAModel, match=r"16 MMDiT blocks, 1024 wide"):
        detect(header_only(tmp_path / "m.safetensors", shapes))


# ----- FLUX.1

@pytest.mark.parametrize("guidance,kind", [(True, "flux-dev"), (False, "flux-schnell")])
@pytest.mark.parametrize("prefix", ["", U])
def test_flux_dev_has_the_guidance_embedder_and_schnell_does_not(tmp_path, guidance, kind, prefix):
    found = detect(header_only(tmp_path / "f.safetensors", layouts.flux_transformer(guidance, prefix=prefix)))
    assert (found.kind, found.family, found.bundled) == (kind, "flux", ())


def test_a_comfyui_all_in_one_flux_file_lists_its_parts(tmp_path):
    shapes = {**layouts.flux_transformer(False, prefix=U),
              **layouts.clip_text(768, 12, projection=False, prefix="text_encoders.clip_l.transformer."),
              **layouts.t5_encoder(prefix="text_encoders.t5xxl.transformer."), **layouts.ldm_vae(prefix="vae.")}
    found = detect(header_only(tmp_path / "flux1-schnell-fp8.safetensors", shapes, dtype="F8_E4M3"))
    assert (found.kind, found.bundled) == ("flux-schnell", ("clip_l", "t5xxl", "vae"))


def test_flux_in_diffusers_names_is_read_too(tmp_path):
    shapes = {"x_embedder.weight": (3072, 64), "time_text_embed.guidance_embedder.linear_1.weight": (3072, 256)}
    shapes.update({f"transformer_blocks.{i}.attn.to_q.weight": (3072, 3072) for i in range(19)})
    shapes.update({f"single_transformer_blocks.{i}.attn.to_q.weight": (3072, 3072) for i in range(38)})
    found = detect(header_only(tmp_path / "f.safetensors", shapes))
    assert found.kind == "flux-dev" and "diffusers names" in found.note


@pytest.mark.parametrize("change,says", [
    (lambda s: s.update({"img_in.weight": (3072, 384)}), "FLUX.1 Fill"),
    (lambda s: s.update({"distilled_guidance_layer.in_proj.bias": (5120,)}), "Chroma"),
    (lambda s: [s.pop(k) for k in list(s) if k.startswith("double_blocks.18.")], "18 double and 38 single"),
])
def test_flux_relatives_dreamshell_has_no_config_for_are_named(tmp_path, change, says):
    shapes = layouts.flux_transformer(True)
    change(shapes)
    with pytest.raises(NotAModel, match=says):
        detect(header_only(tmp_path / "f.safetensors", shapes))


def test_a_gguf_flux_transformer_is_read_from_its_header(tmp_path):
    from gguf import GGUFReader
    path = gguf_file(tmp_path / "flux1-schnell-Q4_0.gguf", layouts.flux_transformer(False))
    header = gguf_header(path)
    reader = GGUFReader(str(path))
    assert set(header.shapes) == {t.name for t in reader.tensors}
    t = next(t for t in reader.tensors if t.name == "img_in.weight")
    assert header.shapes["img_in.weight"] == tuple(int(d) for d in reversed(t.shape)) == (3072, 64)
    assert header.types["img_in.weight"] == t.tensor_type.name == "Q4_0"
    assert header.metadata["general.architecture"] == "flux" and header.metadata["test.version"] == 1
    found = detect(path)
    assert (found.kind, found.quantization) == ("flux-schnell", "Q4_0")


def test_a_gguf_header_is_all_that_is_read(tmp_path):
    path = gguf_file(tmp_path / "f.gguf", layouts.flux_transformer(True))
    size = len(path.read_bytes())
    with open(path, "r+b") as f:  # spoil the tensor data
        f.seek(size - 4096)
        f.write(b"\xff" * 4096)
    assert detect(path).kind == "flux-dev"
    (tmp_path / "bad.gguf").write_bytes(b"GGUF\x03\x00\x00\x00" + b"\xff" * 16)
    with pytest.raises(NotAModel, match="make no sense"):
        detect(tmp_path / "bad.gguf")
    (tmp_path / "short.gguf").write_bytes(b"GGUF\x03\x00\x00\x00\x01\x00")
    with pytest.raises(NotAModel, match="not a complete GGUF file"):
        detect(tmp_path / "short.gguf")


# ----- encoder and VAE files kept apart (ComfyUI's models/text_encoders and models/vae)

@pytest.mark.parametrize("shapes,part,says", [
    (layouts.clip_text(768, 12), "clip_l", "a CLIP-L text encoder (12 layers)"),
    (layouts.clip_text(1280, 32), "clip_g", "a CLIP-G text encoder (32 layers)"),
    (layouts.t5_encoder(), "t5xxl", "a T5-XXL text encoder (24 blocks)"),
    (layouts.ldm_vae(), "vae", "a VAE with 16 latent channels (SD 3 and FLUX.1)"),
])
def test_separate_encoder_and_vae_files_are_told_apart(tmp_path, shapes, part, says):
    path = header_only(tmp_path / "p.safetensors", shapes)
    found = detect_part(path)
    assert (found.part, found.note) == (part, says)
    with pytest.raises(ModelsFileError) as err:  # given as a model: one line saying where it goes
        Registry({}).get(str(path))
    assert "\n" not in str(err.value) and (f"name it as '{part}:'" in str(err.value))


def test_a_whole_model_given_as_a_part_is_named(tmp_path):
    path = header_only(tmp_path / "xl.safetensors", XL)
    with pytest.raises(NotAModel, match=r"a whole model \(SDXL base\)"):
        detect_part(path)


# ----- diffusers folders

@pytest.mark.parametrize("index,transformer,kind", [
    ({"_class_name": "StableDiffusion3Pipeline"}, {"caption_projection_dim": 1536, "num_layers": 24}, "sd3-medium"),
    ({"_class_name": "StableDiffusion3Pipeline"},
     {"caption_projection_dim": 1536, "num_layers": 24, "dual_attention_layers": [0, 1]}, "sd35-medium"),
    ({"_class_name": "StableDiffusion3Pipeline"}, {"caption_projection_dim": 2432, "num_layers": 38}, "sd35-large"),
    ({"_class_name": "FluxPipeline"}, {"guidance_embeds": True}, "flux-dev"),
    ({"_class_name": "FluxPipeline"}, {"guidance_embeds": False}, "flux-schnell"),
])
def test_diffusers_folders_of_the_new_families(tmp_path, index, transformer, kind):
    (tmp_path / "transformer").mkdir()
    (tmp_path / "model_index.json").write_text(json.dumps(index))
    (tmp_path / "transformer" / "config.json").write_text(json.dumps(transformer))
    assert detect(tmp_path).kind == kind


def test_classify_alone_takes_metadata_and_a_name():
    keys = layouts.sd3_kind_transformer("sd35-large")
    assert classify(keys, {}, "x_turbo.safetensors").kind == "sd35-large-turbo"
    assert classify(keys).kind == "sd35-large"


# ----- the models file

def test_models_file_entries_name_encoder_files_and_family_defaults_apply(tmp_path):
    from dreamshell.weights.models import load_registry
    header_only(tmp_path / "sd3.5_medium.safetensors", layouts.sd3_single_file("sd35-medium", encoders=()))
    header_only(tmp_path / "flux.safetensors", layouts.flux_transformer(True))
    header_only(tmp_path / "clip_l.safetensors", layouts.clip_text(768, 12))
    header_only(tmp_path / "clip_g.safetensors", layouts.clip_text(1280, 32))
    header_only(tmp_path / "t5xxl_fp16.safetensors", layouts.t5_encoder())
    header_only(tmp_path / "xl.safetensors", {**XL, "v_pred": (0,), "ztsnr": (0,)},
                {"modelspec.title": "Noob v-pred", "modelspec.architecture": "stable-diffusion-xl-v1-base"})
    f = tmp_path / "models.yaml"
    f.write_text("sd35m:\n  weights: sd3.5_medium.safetensors\n  clip_l: clip_l.safetensors\n"
                 "  clip_g: clip_g.safetensors\n  t5xxl: t5xxl_fp16.safetensors\n  t5_tokenizer: my_t5\n"
                 "dev:\n  weights: flux.safetensors\n  clip_l: clip_l.safetensors\n  t5xxl: t5xxl_fp16.safetensors\n"
                 "noob:\n  weights: xl.safetensors\n")
    reg = load_registry(f)
    m = reg.models["sd35m"]
    assert (m.kind, m.width, m.steps, m.cfg_scale, m.sampler) == ("sd35-medium", 1024, 40, 4.5, "k_euler")
    assert (m.clip_l, m.clip_g, m.t5xxl, m.t5_tokenizer) == (tmp_path / "clip_l.safetensors", tmp_path / "clip_g.safetensors",
                                                            tmp_path / "t5xxl_fp16.safetensors", tmp_path / "my_t5")
    d = reg.models["dev"]
    assert (d.kind, d.steps, d.cfg_scale, d.clip_g) == ("flux-dev", 20, 1.0, None)
    n = reg.models["noob"]
    assert (n.kind, n.prediction, n.zero_snr, n.sampler, n.description) == \
        ("sdxl", "v", True, "k_euler", "Noob v-pred / stable-diffusion-xl-v1-base")


@pytest.mark.parametrize("entry,says", [
    ("  clip_l: t5xxl_fp16.safetensors\n", "clip_l .*t5xxl_fp16.safetensors is a T5-XXL text encoder .* name it as 't5xxl:'"),
    ("  clip_g: clip_g.safetensors\n", "FLUX.1, which has no CLIP-G encoder"),
    ("  zero_snr: yes please\n", "zero_snr 'yes please'; use true or false"),
    ("  zero_snr: true\n", "zero_snr is for SD 1.x/2.x/XL schedules"),
])
def test_models_file_part_mistakes_are_one_line(tmp_path, entry, says):
    from dreamshell.weights.models import load_registry
    header_only(tmp_path / "flux.safetensors", layouts.flux_transformer(False))
    header_only(tmp_path / "t5xxl_fp16.safetensors", layouts.t5_encoder())
    header_only(tmp_path / "clip_g.safetensors", layouts.clip_text(1280, 32))
    f = tmp_path / "models.yaml"
    f.write_text("schnell:\n  weights: flux.safetensors\n" + entry)
    with pytest.raises(ModelsFileError, match=says) as err:
        load_registry(f)
    assert "\n" not in str(err.value)
