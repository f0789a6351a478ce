"""The shipped demo adapters do what they are for, through dreamshell (a CI-sized sample of
bench/eval_demo_adapters.py; the full measurement is in models/loras/README.md and the closing note)."""

from pathlib import Path

import pytest

from conftest import PRECISIONS, generator_at
from conftest import run_line as run
from dreamshell.demo.adapters_eval import measure

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def measured():
    return measure(seeds=1, prompts=6, base_prompts=6, echo=lambda *_: None)


def test_the_demo_lora_teaches_the_cross_only_with_its_tag(measured):
    assert measured["cross with the tag"][0] >= 0.8
    assert measured["cross without the tag"][0] <= 0.1
    assert measured["cross at weight 0"][0] <= 0.1


def test_the_base_prompts_stay_as_good_with_the_lora(measured):
    without = measured["base adherence without the tag (colour, shape, background)"]
    with_tag = measured["base adherence with the tag"]
    assert all(w >= o - 0.2 for w, o in zip(with_tag, without)), (with_tag, without)


def test_the_demo_embedding_is_a_new_word(measured):
    assert measured["yolk with the embedding"][0] >= 0.8
    assert measured["yolk without the embedding"][0] <= 0.1


def test_the_demo_vae_file_gives_the_same_image(measured):
    assert measured["demo VAE from one file: same bytes"][0] == 1.0


def test_a_demo_session_with_the_shipped_lora_and_vae(tmp_path):
    """A user's models file naming the shipped single-file VAE; the default LoRA folder is the shipped one."""
    from dreamshell.run.model_host import ModelHost
    from dreamshell.weights.models import load_registry
    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.store.pngmeta import read_chunks
    from dreamshell.run.session import Session
    from PIL import Image
    from dreamshell.demo import concepts

    config = tmp_path / "models.yaml"
    config.write_text(f"demo:\n  weights: builtin:demo\n  vae: {ROOT / 'models' / 'vae' / 'demo-vae.safetensors'}\n"
                      "  width: 64\n  height: 64\n  steps: 20\n  cfg: 5\n  sampler: k_euler\n")
    registry = load_registry(config)
    gen = DiffusersGenerator(device="cpu", folders=registry.folders)
    s = Session(registry, ModelHost(lambda: gen), tmp_path / "out")
    s.echoed = []
    rec = run(s, "a red cross on a blue background <lora:demo_cross:1> -S 1").records[0]
    assert "--vae" in rec.command and "demo-vae.safetensors" in rec.command
    assert concepts.is_cross(Image.open(rec.path).convert("RGB"))
    params = read_chunks(Path(rec.path))["parameters"]
    assert "<lora:demo_cross:1>" in params and "Lora hashes: \"demo_cross: " in params
    assert "VAE: demo-vae.safetensors" in params


@pytest.mark.parametrize("precision", PRECISIONS)
def test_the_demo_vae_file_is_the_models_own_vae_at_both_precisions(precision):
    """Issue 22: on a bfloat16 CPU the model's own VAE was loaded in bf16 and cast back to float32, so the
    shipped single-file VAE (its float32 weights) gave other pixels; now both are the file's weights."""
    from dreamshell.line.parser import parse_request
    from dreamshell.run.resolve import resolve_request
    from dreamshell.weights.models import builtin_models_dir, demo_spec
    gen = generator_at(precision)
    if gen.spec != demo_spec():
        gen.load(demo_spec())
    request = resolve_request(parse_request("a red circle on a blue background -S 3 -s 8"), demo_spec(), [])
    own = gen.generate(request)
    from_file = gen.generate(request.with_(vae=str(builtin_models_dir() / "vae" / "demo-vae.safetensors")))
    assert own.tobytes() == from_file.tobytes()
