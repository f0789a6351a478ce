"""Loading real-shaped checkpoints: kind checked before the old model goes, failed switches keep it,
inpainting UNets for every mode, precision per part, batches that keep each seed's image."""

import numpy as np
import pytest
from PIL import Image
from safetensors.numpy import save_file

from dreamshell.engines.generator import DiffusersGenerator
from dreamshell.run.plan import batch_groups
from dreamshell.engines.protocols import GenerationError
from dreamshell.weights.models import ModelSpec, demo_spec
from dreamshell.line.parser import parse_request
from dreamshell.run.resolve import resolve_request


def _request(spec, line):
    return resolve_request(parse_request(line), spec, [])


def _pixels(image):
    return np.asarray(image, dtype=np.int16)


@pytest.fixture(scope="module")
def demo():
    g = DiffusersGenerator(device="cpu", precision="float32")
    g.load(demo_spec())
    return g


def test_a_file_that_is_not_a_model_leaves_the_resident_model_in_place(demo, tmp_path):
    lora = tmp_path / "style.safetensors"
    save_file({"lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight": np.zeros((4, 8), np.float16)}, str(lora))
    before = _pixels(demo.generate(_request(demo.spec, "a red circle -S 5 -s 4")))
    with pytest.raises(GenerationError) as err:
        demo.load(ModelSpec("style", lora, ""))
    line = str(err.value)
    assert "is a LoRA (kohya layout" in line and "model 'demo' is still loaded" in line and "\n" not in line
    assert demo.spec.name == "demo"
    assert np.array_equal(before, _pixels(demo.generate(_request(demo.spec, "a red circle -S 5 -s 4"))))


def test_a_switch_that_fails_to_load_brings_the_previous_model_back(demo, tmp_path):
    from tiny_pipeline import make_tiny_sd1_single_file
    path, config = make_tiny_sd1_single_file(tmp_path)
    broken = tmp_path / "broken.safetensors"
    from safetensors.numpy import load_file
    state = load_file(str(path))
    state.pop(next(k for k in state if k.startswith("model.diffusion_model.out.2.")))  # detected fine, loads not
    save_file(state, str(broken))
    before = _pixels(demo.generate(_request(demo.spec, "a blue square -S 8 -s 4")))
    with pytest.raises(GenerationError) as err:
        demo.load(ModelSpec("broken", broken, "", config=config))
    line = str(err.value)
    assert "cannot load model 'broken'" in line and "(detected as SD 1.x)" in line
    assert line.endswith("; model 'demo' is loaded again")
    assert demo.spec.name == "demo"
    assert np.array_equal(before, _pixels(demo.generate(_request(demo.spec, "a blue square -S 8 -s 4"))))


def test_a_models_file_kind_that_contradicts_the_weights_is_one_line(tmp_path):
    from tiny_pipeline import make_tiny_sd1_single_file
    path, config = make_tiny_sd1_single_file(tmp_path)
    g = DiffusersGenerator(device="cpu")
    with pytest.raises(GenerationError, match=r"the models file says kind sdxl, but .* is SD 1.x .*fix or remove 'kind'"):
        g.load(ModelSpec("x", path, "sdxl", config=config))


def test_an_inpainting_checkpoint_is_detected_and_used_for_every_mode(tmp_path):
    from tiny_pipeline import make_tiny_sd1_single_file
    from diffusers import StableDiffusionInpaintPipeline
    path, config = make_tiny_sd1_single_file(tmp_path, in_channels=9)
    from dreamshell.weights.models import spec_for_path
    spec = spec_for_path(path)
    assert spec.kind == "sd1-inpaint"
    spec = ModelSpec("inpaint", path, spec.kind, width=64, height=64, steps=3, sampler="ddim", config=config)
    g = DiffusersGenerator(device="cpu")
    g.load(spec)
    assert g.kind == "sd1-inpaint" and g._pipes["txt2img"].unet.config.in_channels == 9
    assert isinstance(g._pipes["txt2img"], StableDiffusionInpaintPipeline)
    made = g.generate(_request(spec, "a red circle -S 3"))  # txt2img: the whole image masked
    assert made.size == (64, 64)
    mask = Image.new("L", (64, 64), 0)
    mask.paste(255, (16, 16, 48, 48))
    inpainted = g.generate(_request(spec, "a blue square -S 4 -f 0.9"), init_image=made, mask=mask)
    redrawn = g.generate(_request(spec, "a blue square -S 4 -f 0.5"), init_image=made)
    assert inpainted.size == redrawn.size == (64, 64)
    assert not np.array_equal(_pixels(inpainted), _pixels(made))
    assert all(isinstance(p, StableDiffusionInpaintPipeline) for p in g._pipes.values())


def test_batches_group_only_what_differs_in_seed():
    base = parse_request("a red circle -S 1").with_(steps=4, width=64, height=64, cfg_scale=5.0, sampler="ddim")
    reqs = [base.with_(seed=s) for s in (1, 2, 3)] + [base.with_(seed=4, prompt="a blue square")]
    assert [len(g) for g in batch_groups(reqs, 2, together=True)] == [2, 1, 1]
    assert [len(g) for g in batch_groups(reqs, 8, together=True)] == [3, 1]
    assert [len(g) for g in batch_groups(reqs, 1, together=True)] == [1, 1, 1, 1]
    assert [len(g) for g in batch_groups(reqs, 8, together=False)] == [1, 1, 1, 1]   # an init image: one at a time


@pytest.mark.parametrize("sampler", ["k_euler_a", "ddim"])
def test_each_image_of_a_batch_is_the_image_its_seed_makes_alone(demo, sampler):
    spec = demo.spec
    reqs = [_request(spec, f"a green triangle -S {s} -s 5 -A {sampler}") for s in (11, 12, 13)]
    alone = [_pixels(demo.generate(r)) for r in reqs]
    one_by_one = [image for r in reqs for image in demo.generate_batch([r])]
    assert all(np.array_equal(a, _pixels(b)) for a, b in zip(alone, one_by_one))
    demo.batch_size = 3
    try:
        together = [_pixels(b) for b in demo.generate_batch(reqs)]
    finally:
        demo.batch_size = 1
    assert max(int(np.abs(a - b).max()) for a, b in zip(alone, together)) <= 2  # float error only
    assert not np.array_equal(together[0], together[1])


@pytest.mark.parametrize("native, vae_precision, vae_dtype", [("1", "auto", "bfloat16"), ("1", "float32", "float32"),
                                                           ("0", "auto", "float32")])
def test_bfloat16_on_cpu_decodes_in_bfloat16_where_the_cpu_has_it(monkeypatch, native, vae_precision, vae_dtype):
    """Issue 17: beside a bfloat16 model the VAE decodes in bfloat16 where the CPU computes it natively (measured
    close to float32: loading.BF16_VAE_MIN_PSNR_DB); --vae_precision float32 keeps it float32, and so does a CPU
    without native bfloat16 (there a bfloat16 decode is many times slower: `--precision bfloat16` by hand)."""
    import torch
    monkeypatch.setenv("DREAMSHELL_CPU_BF16", native)
    g = DiffusersGenerator(device="cpu", precision="auto" if native == "1" else "bfloat16",
                           vae_precision=vae_precision)
    assert g.dtype == torch.bfloat16
    g.load(demo_spec())
    pipe = g._pipes["txt2img"]
    assert pipe.unet.dtype == torch.bfloat16 and pipe.vae.dtype == getattr(torch, vae_dtype)
    assert g.vae_float32 is (vae_dtype == "float32")
    spec = g.spec
    made = g.generate(_request(spec, "a red circle on a blue background -S 7 -s 12"))
    redrawn = g.generate(_request(spec, "a green square -S 9 -s 12 -f 0.6"), init_image=made)  # encode too
    f32 = DiffusersGenerator(device="cpu", precision="float32")
    f32.load(demo_spec())
    reference = f32.generate(_request(spec, "a red circle on a blue background -S 7 -s 12"))
    diff = np.abs(_pixels(made) - _pixels(reference))
    assert diff.mean() < 8 and redrawn.size == (64, 64)  # the same picture, within bfloat16 rounding
    monkeypatch.setenv("DREAMSHELL_CPU_BF16", "0")
    assert DiffusersGenerator(device="cpu", precision="auto").dtype == torch.float32


def test_launcher_flags_reach_the_generator(tmp_path):
    from dreamshell.cli import build_argparser
    args = build_argparser().parse_args(["--lowvram", "--compile", "--batch_size", "4", "--precision", "bfloat16"])
    assert (args.lowvram, args.compile, args.batch_size, args.precision) == (True, True, 4, "bfloat16")
    with pytest.raises(SystemExit):
        build_argparser().parse_args(["--batch_size", "0"])
    from dreamshell.app import _generator_factory
    g = _generator_factory("cpu", "float32", True, False, 4)()
    assert (g.lowvram, g.compile, g.batch_size, g.precision) == (True, False, 4, "float32")
    args = build_argparser().parse_args(["--vae_precision", "float32"])
    assert args.vae_precision == "float32" and build_argparser().parse_args([]).vae_precision == "auto"
    from dreamshell.app import build_session
    from dreamshell.line.request import DreamRequest
    from dreamshell.weights.models import Registry
    session = build_session(build_argparser().parse_args(["--vae_precision", "float32", "-o", str(tmp_path)]),
                            Registry({"demo": demo_spec()}), DreamRequest(""))
    assert session.host._generator_factory().vae_precision == "float32"
    with pytest.raises(SystemExit):
        build_argparser().parse_args(["--vae_precision", "float16"])


def test_a_batch_decodes_whole_where_the_gpu_has_room_and_one_at_a_time_where_not():
    """On an H200 slicing a 1-step batch of 4 at 512 cost 1.2x images/s against plain diffusers, which does not
    slice; a GPU short of memory, --lowvram and MPS still slice, the CPU never does."""
    from dreamshell.engines import loading
    torch = pytest.importorskip("torch")
    px, gib = 512 * 512, 1 << 30
    assert not loading.slice_vae("cuda", px, 4, False, 80 * gib)
    assert loading.slice_vae("cuda", px, 4, False, 4 * gib)          # under twice the estimated 4 GiB peak
    assert not loading.slice_vae("cuda", px, 4, False, 9 * gib)
    assert loading.slice_vae("cuda", px, 4, False, 9 * gib, element_size=4)   # a float32 VAE needs twice as much
    assert loading.slice_vae("cuda", px, 4, True, 80 * gib)          # --lowvram
    assert loading.slice_vae("mps", px, 4, False, None)
    assert not loading.slice_vae("cuda", px, 1, False, 1 * gib)      # one image: nothing to slice
    assert not loading.slice_vae("cpu", px, 8, False, None)
    assert loading.device_free_bytes("cpu") is None

    class Vae:
        def __init__(self):
            self.calls = []
            self.weight = torch.zeros(1, dtype=torch.float16)

        def parameters(self):
            return iter([self.weight])

        def __getattr__(self, name):
            return lambda: self.calls.append(name)

    for free, want in ((80 * gib, "disable_slicing"), (2 * gib, "enable_slicing")):
        pipe = type("Pipe", (), {})()
        pipe.vae = Vae()
        loading.vae_modes(pipe, "cuda", px, 4, False, free)
        assert pipe.vae.calls == ["disable_tiling", want]


def test_out_of_memory_names_the_modes_to_try():
    from dreamshell.engines.loading import oom_advice
    assert "--lowvram" in oom_advice("cuda", False) and "--lowvram" not in oom_advice("cuda", True)
    assert "PYTORCH_MPS_HIGH_WATERMARK_RATIO=0.0" in oom_advice("mps", False)


def test_a_ckpt_is_read_safely_detected_and_loaded(tmp_path):
    import torch
    from safetensors.torch import load_file
    from tiny_pipeline import make_tiny_sd1_single_file
    path, config = make_tiny_sd1_single_file(tmp_path)
    ckpt = tmp_path / "tiny.ckpt"
    torch.save({"state_dict": load_file(str(path)), "global_step": 470000}, ckpt)
    from dreamshell.weights.models import spec_for_path
    assert spec_for_path(ckpt).kind == "sd1"
    g = DiffusersGenerator(device="cpu")
    g.load(ModelSpec("ckpt", ckpt, "", width=64, height=64, steps=2, sampler="ddim", config=config))
    assert g.kind == "sd1" and g.generate(_request(g.spec, "a red circle -S 1")).size == (64, 64)


def test_running_out_of_memory_on_the_cpu_is_recognised():
    """CPU allocation failures are out-of-memory errors (one line with what to try), not 'unexpected'."""
    from dreamshell.engines.device import is_out_of_memory
    assert is_out_of_memory(RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: "
                                         "can't allocate memory: you tried to allocate 40000000000000 bytes."))
    assert is_out_of_memory(MemoryError())
    assert is_out_of_memory(RuntimeError("CUDA out of memory. Tried to allocate 2.00 GiB"))
    assert not is_out_of_memory(RuntimeError("expected scalar type Float but found Half"))
