#!/usr/bin/env python
"""The newer families at full size on this machine, offline: each random-weight file written by
scripts/make_family_checkpoints.py is detected from its header, loaded with the shipped configs, checked
tensor by tensor against what was written (through diffusers' own converter), and makes one image.
Reports load time, seconds per step and peak memory (RSS), one JSON line per case, each case in a
process of its own so memory starts clean.

    /work/tools/quiet python bench/bench_families.py --dir /work/scratch/families sd35m flux-schnell-q4

Cases named ds-NAME run the same file through dreamshell itself (a models file, a Session, a dream> line:
the planner, the model host, the generator, the output folder); ds-NAME-lowvram with --lowvram:

    /work/tools/quiet python bench/bench_families.py --dir /work/scratch/families ds-sd35m ds-flux-schnell-q4
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
CASES = ("sdxl-vpred", "sd35m", "sd35m-clips", "flux-schnell-q4")


def _rss_gb() -> float:
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024 / 1024, 2)


def _steps(pipe, args: dict, steps: int) -> tuple[object, list[float]]:
    marks = [time.time()]

    def tick(_pipe, step, _t, kwargs):
        marks.append(time.time())
        return kwargs
    image = pipe(**args, num_inference_steps=steps, callback_on_step_end=tick).images[0]
    marks.append(time.time())
    per_step = [round(b - a, 1) for a, b in zip(marks[:-2], marks[1:-1])]
    return image, per_step


def _compare(converted: dict, model_state: dict) -> tuple[int, int, list]:
    import torch
    equal, differ = 0, []
    for k, v in converted.items():
        if k in model_state and torch.equal(v.to(model_state[k].dtype), model_state[k]):
            equal += 1
        else:
            differ.append(k)
    return equal, len(model_state), differ[:3]


def case_sd35m(path: Path, folder: Path, size: int, steps: int) -> dict:
    import torch
    from safetensors import safe_open
    from diffusers.loaders.single_file_utils import convert_sd3_transformer_checkpoint_to_diffusers
    from dreamshell.engines import families
    from dreamshell.weights.checkpoint import detect
    from dreamshell.weights.models import ModelSpec
    found = detect(path)
    out = {"detected": found.kind, "bundled": list(found.bundled)}
    spec = ModelSpec("sd35m", path, found.kind, clip_l=None if "clip_l" in found.bundled else folder / "clip_l.safetensors",
                     clip_g=None if "clip_g" in found.bundled else folder / "clip_g.safetensors")
    t = time.time()
    pipe = families.load_pipeline(spec, found.kind, found, torch.float32, folder / "config-cache")
    pipe.set_progress_bar_config(disable=True)
    out.update(load_s=round(time.time() - t, 1), rss_after_load_gb=_rss_gb(), t5=pipe.text_encoder_3 is not None)
    with safe_open(str(path), framework="pt") as f:
        written = {k: f.get_tensor(k) for k in f.keys() if k.startswith("model.diffusion_model.")}
    converted = convert_sd3_transformer_checkpoint_to_diffusers(written)
    out["transformer_equal"], out["transformer_tensors"], out["differ"] = \
        _compare(converted, pipe.transformer.state_dict())
    del written, converted
    args = families.call_args(found.kind, prompt="a red circle on a blue square", negative="", steps=steps, cfg=4.5,
                              width=size, height=size)
    args.pop("num_inference_steps")
    with torch.inference_mode():
        image, per_step = _steps(pipe, dict(args, generator=torch.Generator().manual_seed(1)), steps)
    out.update(image=list(image.size), s_per_step=per_step, peak_rss_gb=_rss_gb())
    return out


def case_flux(path: Path, folder: Path, size: int, steps: int) -> dict:
    """FLUX.1 schnell GGUF Q4_0 with ComfyUI's clip_l, t5xxl_fp16 and ae files. On a CPU without native
    bfloat16: T5 is kept in bfloat16 (9.5 GB, not 19), the prompt encoded once, then T5 released and the
    transformer run in float32 (GGUF weights dequantised layer by layer)."""
    import gc
    import torch
    from diffusers.loaders.single_file_utils import convert_flux_transformer_checkpoint_to_diffusers
    from diffusers.models.model_loading_utils import load_gguf_checkpoint
    from dreamshell.engines import families
    from dreamshell.weights.checkpoint import detect
    from dreamshell.weights.models import ModelSpec
    found = detect(path)
    out = {"detected": found.kind, "quantization": found.quantization}
    spec = ModelSpec("flux", path, found.kind, clip_l=folder / "clip_l.safetensors",
                     t5xxl=folder / "t5xxl_fp16.safetensors", vae=str(folder / "ae.safetensors"))
    t = time.time()
    pipe = families.load_pipeline(spec, found.kind, found, torch.float32, folder / "config-cache",
                                  t5_dtype=torch.bfloat16)
    pipe.set_progress_bar_config(disable=True)
    out.update(load_s=round(time.time() - t, 1), rss_after_load_gb=_rss_gb())
    t = time.time()
    with torch.inference_mode():
        embeds, pooled, _ = pipe.encode_prompt(prompt="a red circle on a blue square", prompt_2=None,
                                               max_sequence_length=families.T5_TOKENS[found.kind])
    out["encode_s"] = round(time.time() - t, 1)
    pipe.text_encoder_2 = None   # T5 done: 9.5 GB back before the transformer runs
    gc.collect()
    written = load_gguf_checkpoint(str(path))  # checked after T5 is gone (memory)
    original = any(k.startswith("double_blocks.") for k in written)
    converted = convert_flux_transformer_checkpoint_to_diffusers(written) if original else written
    state = pipe.transformer.state_dict()
    out["transformer_equal"], out["transformer_tensors"], out["differ"] = _compare(
        {k: v.as_tensor() if hasattr(v, "as_tensor") else v for k, v in converted.items()},
        {k: v.as_tensor() if hasattr(v, "as_tensor") else v for k, v in state.items()})
    del written, converted, state
    gc.collect()
    args = families.call_args(found.kind, prompt="", negative="", steps=steps, cfg=1.0, width=size, height=size)
    for k in ("prompt", "num_inference_steps", "max_sequence_length"):
        args.pop(k, None)
    args.update(prompt_embeds=embeds.float(), pooled_prompt_embeds=pooled.float(),
                generator=torch.Generator().manual_seed(1))
    with torch.inference_mode():
        image, per_step = _steps(pipe, args, steps)
    out.update(image=list(image.size), s_per_step=per_step, peak_rss_gb=_rss_gb())
    return out


def case_sdxl_vpred(path: Path, folder: Path, size: int, steps: int) -> dict:
    """SDXL v-pred + ztsnr through dreamshell's generator, with the zero-SNR hook the lead wires in."""
    import torch
    from dreamshell.engines import families
    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.line.parser import parse_request
    from dreamshell.run.resolve import resolve_request
    from dreamshell.weights.models import spec_for_path
    spec = spec_for_path(path)
    out = {"detected": spec.kind, "prediction": spec.prediction, "zero_snr": spec.zero_snr,
           "description": spec.description}
    t = time.time()
    g = DiffusersGenerator(device="cpu", precision="float32")
    g.load(spec)
    pipe = g._pipes["txt2img"]
    families.apply_schedule(pipe, spec.prediction, spec.zero_snr)
    g._scheduler_config = pipe.scheduler.config
    sc = pipe.scheduler.config
    out.update(load_s=round(time.time() - t, 1), rss_after_load_gb=_rss_gb(),
               scheduler=[sc.prediction_type, sc.get("rescale_betas_zero_snr"), sc.timestep_spacing])
    from safetensors import safe_open
    from dreamshell.engines.fullsize import loaded_as_ldm
    loaded = loaded_as_ldm(pipe, "sdxl")
    with safe_open(str(path), framework="pt") as f:
        written = set(f.keys())
        equal = sum(1 for k, v in loaded.items() if k in written and torch.equal(f.get_tensor(k).float(), v.float()))
    out.update(tensors_loaded=len(loaded), loaded_equal_to_written=equal,
               written_not_loaded=sorted(written - set(loaded)))
    del loaded
    request = resolve_request(parse_request(f"a red circle -S 1 -s {steps} -W {size} -H {size} -A k_euler"), spec, [])
    marks = [time.time()]
    image = g.generate(request, on_step=lambda *a, **k: marks.append(time.time()))
    marks.append(time.time())
    out.update(image=list(image.size), s_per_step=[round(b - a, 1) for a, b in zip(marks[:-2], marks[1:-1])],
               total_s=round(marks[-1] - marks[0], 1), peak_rss_gb=_rss_gb())
    del torch
    return out


# the same files through dreamshell itself: a models file, a Session, a dream> line (models-file entries)
MODELS_YAML = """\
sdxl-vpred:
  weights: sdxl-vpred-ztsnr-random.safetensors
sd35m:
  weights: sd3.5_medium-random.safetensors
  clip_l: clip_l.safetensors
  clip_g: clip_g.safetensors
sd35m-clips:
  weights: sd3.5_medium_incl_clips-random.safetensors
flux-schnell-q4:
  weights: flux1-schnell-Q4_0-random.gguf
  clip_l: clip_l.safetensors
  t5xxl: t5xxl_fp16.safetensors
  vae: ae.safetensors
"""


def case_dreamshell(name: str, folder: Path, size: int, steps: int, lowvram: bool) -> dict:
    """One dream> line on a models-file entry through dreamshell's own Session (planner, model host, generator,
    output folder): load time, seconds per step as the line's progress reports them, the whole line, peak RSS."""
    import tempfile
    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.line.parser import parse_request
    from dreamshell.run.model_host import ModelHost
    from dreamshell.run.session import Session
    from dreamshell.run.types import Listener
    from dreamshell.weights.models import listing, load_registry
    models = folder / "dreamshell-models.yaml"
    models.write_text(MODELS_YAML)
    registry = load_registry(models)
    spec = registry.models[name]
    gen = DiffusersGenerator(device="cpu", precision="float32", lowvram=lowvram)
    out = {"listing": listing(spec), "lowvram": lowvram}
    marks: list[float] = []

    class Steps(Listener):
        def step(self, done, total):
            marks.append(time.time())
    with tempfile.TemporaryDirectory() as tmp:
        session = Session(registry, ModelHost(lambda: gen), Path(tmp))
        t = time.time()
        session.host.ensure(spec)
        out.update(load_s=round(time.time() - t, 1), rss_after_load_gb=_rss_gb())
        line = f"a red circle on a blue square -S 1 -s {steps} -W {size} -H {size} --model {name}"
        t = time.time()
        result = session.run(parse_request(line), Steps())
        total = time.time() - t
        record = result.records[0]
    starts = [t] + marks
    out.update(line=record.command, s_per_step=[round(b - a, 1) for a, b in zip(starts[:-1], starts[1:])],
               line_s=round(total, 1), peak_rss_gb=_rss_gb())
    return out


def run_case(name: str, folder: Path, size: int, steps: int) -> dict:
    files = {"sdxl-vpred": "sdxl-vpred-ztsnr-random.safetensors", "sd35m": "sd3.5_medium-random.safetensors",
             "sd35m-clips": "sd3.5_medium_incl_clips-random.safetensors",
             "flux-schnell-q4": "flux1-schnell-Q4_0-random.gguf"}
    if name.startswith("ds-"):   # ds-NAME: through dreamshell; ds-NAME-lowvram: with --lowvram
        base = name[3:].removesuffix("-lowvram")
        result = case_dreamshell(base, folder, size, steps, name.endswith("-lowvram"))
        return {"case": name, "file": files[base], "gb": round((folder / files[base]).stat().st_size / 1e9, 2),
                **result}
    path = folder / files[name]
    if name.startswith("sd35m"):
        result = case_sd35m(path, folder, size, steps)
    elif name.startswith("flux"):
        result = case_flux(path, folder, size, steps)
    else:
        result = case_sdxl_vpred(path, folder, size, steps)
    return {"case": name, "file": path.name, "gb": round(path.stat().st_size / 1e9, 2), **result}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("cases", nargs="*", default=list(CASES))
    ap.add_argument("--dir", type=Path, required=True)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--steps", type=int, default=2)
    ap.add_argument("--one", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    import os
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.one:
        print(json.dumps(run_case(args.cases[0], args.dir, args.size, args.steps)), flush=True)
        return 0
    failed = 0
    for name in args.cases:
        steps = 1 if name.startswith(("flux", "ds-flux")) else args.steps
        run = subprocess.run([sys.executable, __file__, name, "--one", "--dir", str(args.dir), "--size", str(args.size),
                              "--steps", str(steps)], capture_output=True, text=True)
        if run.returncode != 0:
            failed += 1
            print(json.dumps({"case": name, "failed": run.stderr.strip().splitlines()[-3:]}), flush=True)
            continue
        print(run.stdout.strip().splitlines()[-1], flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
