"""The diffusers generator: one resident Stable Diffusion pipeline, txt2img / img2img / inpainting
built from the same components, samplers by name, a CPU generator per image. Imports torch.

A generation reads as a script: pick the pipeline, set the sampler, encode the prompt, prepare the
noise, denoise (with a per-step callback that reports progress and can stop), return the image.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
import logging
import os
import re
import warnings
from pathlib import Path

from ..line import hires
from ..weights.library import Folders, Library
from ..weights.hashing import weights_sha256
from ..weights.models import ModelSpec, builtin_models_dir
from ..line.prompt import split_prompt
from ..line.request import DreamRequest
from ..line.samplers import SamplerError, plan as scheduler_plan
from .preview import LatentRGB, PreviewTap, projection_for
from . import loading
from .adapters import Adapters, clip_skip
from .protocols import GenerationError, Interrupted

CONFIGS_DIR = Path(__file__).resolve().parent.parent / "configs"
CLIP_CHUNK = 75  # tokens CLIP reads at a time, between its start and end tokens
_ATTENTION = re.compile(r"[()]|\.(and|blend|swap)\(|[\w)]\+|[\w)]-+(?=[\s,]|$)")


def _quiet_libraries() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    import diffusers.utils.logging
    import transformers.utils.logging
    diffusers.utils.logging.disable_progress_bar()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    transformers.utils.logging.set_verbosity_error()
    for name in ("transformers", "diffusers", "compel"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)
    warnings.filterwarnings("ignore", message=".*torchvision.*")
    warnings.filterwarnings("ignore", message=".*Already found a `peft_config` attribute.*")  # a second LoRA


def single_file_config(kind: str) -> Path:
    """A diffusers config folder (JSON + tokenizer files, no weights) for a single-file checkpoint of
    `kind`, assembled once in the user cache from the configs shipped in the package."""
    import shutil

    import platformdirs

    from .. import __version__
    source = CONFIGS_DIR / kind
    if not (source / "model_index.json").exists():
        raise GenerationError(f"no shipped config for kind '{kind}' at {source}")
    target = Path(platformdirs.user_cache_dir("dreamshell", appauthor=False)) / f"configs-{__version__}" / kind
    if not (target / "model_index.json").exists():
        tmp = target.with_name(f"{kind}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        shutil.copytree(source, tmp)
        for tok in tmp.glob("tokenizer*"):
            for name in ("vocab.json", "merges.txt"):
                shutil.copy(CONFIGS_DIR / "clip_tokenizer" / name, tok / name)
        try:
            tmp.rename(target)
        except OSError:  # another process got there first
            shutil.rmtree(tmp, ignore_errors=True)
    return target


def pick_device(name: str) -> str:
    import torch
    if name == "auto":
        if torch.cuda.is_available():
            return "cuda"
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return "mps"
        return "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise GenerationError("--device cuda: this torch sees no CUDA device (is it a CPU build?); "
                              "use --device auto or cpu")
    if name == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise GenerationError("--device mps: Apple's MPS backend is not available here; use --device auto or cpu")
    return name


def pick_dtype(precision: str, device: str):
    """float16 on GPUs; on CPU bfloat16 where the CPU has it natively (else float32)."""
    import torch
    if precision == "auto":
        if device in ("cuda", "mps"):
            return torch.float16
        from .loading import native_bf16
        return torch.bfloat16 if native_bf16() else torch.float32
    return {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[precision]


def is_out_of_memory(error: BaseException) -> bool:
    import torch
    oom = getattr(torch, "OutOfMemoryError", None)
    text = str(error).lower()
    return ((oom is not None and isinstance(error, oom)) or isinstance(error, MemoryError)
            or "out of memory" in text or "can't allocate memory" in text or "not enough memory" in text)


class DiffusersGenerator:
    """Holds one model; `generate` makes one image for one resolved, per-image request."""

    def __init__(self, device: str = "auto", precision: str = "auto", *, lowvram: bool = False,
                 compile: bool = False, batch_size: int = 1, folders: Folders | None = None):
        _quiet_libraries()
        import torch
        self.torch = torch
        self.device = pick_device(device)
        self.dtype = pick_dtype(precision, self.device)
        self.precision = str(self.dtype).replace("torch.", "")
        self.lowvram, self.compile, self.batch_size = lowvram, compile, max(1, batch_size)
        self.spec: ModelSpec | None = None
        self.kind = ""
        self.model_hash = ""
        self._pipes: dict = {}
        self._scheduler_config = None
        self._compel = None
        self.adapters = Adapters(Library(folders or Folders.under(builtin_models_dir())))
        self.esrgan = None   # (image, factor) -> image: the Real-ESRGAN upscaler for --hires_upscaler esrgan
        if self.device == "cpu":
            loading.set_cpu_threads(torch)

    # ----- loading

    def load(self, spec: ModelSpec) -> None:
        """Make spec's model resident. Its kind is read from the weights first; the previous model is
        released only for a model that passes that check, and is loaded again if the new one fails."""
        if not spec.weights.exists():
            raise GenerationError(f"model '{spec.name}': {spec.weights} does not exist "
                                  "(fix 'weights' in the models file or pass a path to --model)"
                                  + self._still_resident())
        try:
            found = loading.detect_weights(spec)
            kind = loading.settle_kind(spec, found)
        except GenerationError as e:
            raise GenerationError(str(e) + self._still_resident()) from None
        previous = self.spec
        self.unload()
        try:
            self._load(spec, kind, spec.prediction or found.prediction)
        except GenerationError as e:
            raise GenerationError(str(e) + self._restore(previous)) from None

    def _still_resident(self) -> str:
        return f"; model '{self.spec.name}' is still loaded" if self.spec is not None else ""

    def _restore(self, previous: ModelSpec | None) -> str:
        """Load the previous model again after a failed switch; the words that say how it went."""
        if previous is None:
            return ""
        try:
            self.load(previous)
        except GenerationError:
            return f"; loading '{previous.name}' again failed too: no model is loaded"
        return f"; model '{previous.name}' is loaded again"

    def _load(self, spec: ModelSpec, kind: str, prediction: str | None) -> None:
        cls = loading.pipeline_class(kind, "txt2img")
        try:
            if spec.is_single_file:
                config = spec.config or single_file_config(loading.config_folder(kind, prediction))
                pipe = cls.from_single_file(str(spec.weights), config=str(config), local_files_only=True,
                                            torch_dtype=self.dtype)
            else:
                extra = {} if kind.startswith("sdxl") else {"safety_checker": None, "requires_safety_checker": False}
                pipe = cls.from_pretrained(str(spec.weights), torch_dtype=self.dtype, local_files_only=True,
                                           **extra)
        except GenerationError:
            raise
        except Exception as e:  # diffusers raises many kinds; the user needs one line
            raise GenerationError(self._load_error(spec, kind, e)) from e
        pipe.set_progress_bar_config(disable=True)
        if hasattr(pipe, "safety_checker"):
            pipe.safety_checker = None
        loading.set_prediction(pipe, prediction)
        if self.dtype == self.torch.bfloat16 and self.device == "cpu":
            loading.keep_vae_float32(pipe.vae, self.dtype, self.torch)
        loading.memory_modes(pipe, self.device, self.lowvram)
        if self.compile:
            pipe.unet = self.torch.compile(pipe.unet)
        self._pipes = {"txt2img": pipe}
        self._scheduler_config = pipe.scheduler.config
        self.spec, self.kind = spec, kind
        self.model_hash = weights_sha256(spec.weights)

    @staticmethod
    def _load_error(spec: ModelSpec, kind: str, e: Exception) -> str:
        text = str(e).splitlines()[0] if str(e) else type(e).__name__
        if spec.weights.suffix.lower() == ".ckpt" and ("weights_only" in str(e) or "Unable to load" in str(e)
                                                        or "Unpickl" in type(e).__name__):
            return loading.refuse_ckpt(spec.weights)
        label = loading.KIND_NAMES.get(kind, kind)
        return f"cannot load model '{spec.name}' from {spec.weights} (detected as {label}): {text}"

    def unload(self) -> None:
        self._pipes.clear()
        self._compel = None
        self.adapters.reset()
        self.spec, self.kind = None, ""
        import gc
        gc.collect()
        if self.device == "cuda":
            self.torch.cuda.empty_cache()

    def _pipe(self, mode: str):
        """The pipeline for a mode, sharing the resident components (no weights loaded or copied)."""
        if self.spec is None:
            raise GenerationError("no model is loaded")
        if mode == "txt2img" and self.kind == "sdxl-refiner":
            raise GenerationError(f"model '{self.spec.name}' is an SDXL refiner: it refines an image (-I), "
                                  "it does not make one from noise")
        if mode not in self._pipes:
            base = self._pipes["txt2img"]
            cls = loading.pipeline_class(self.kind, mode)
            if isinstance(base, cls):
                return base
            pipe = loading.derive(cls, base)
            pipe.set_progress_bar_config(disable=True)
            self._pipes[mode] = pipe
        return self._pipes[mode]

    @property
    def latent_rgb(self) -> LatentRGB | None:
        """The live-preview projection for the loaded model: its folder's latent_rgb.json, else by kind."""
        return projection_for(replace(self.spec, kind=self.kind)) if self.spec is not None else None

    @property
    def is_sdxl(self) -> bool:
        return self.kind.startswith("sdxl")

    # ----- samplers

    def _scheduler(self, name: str, schedule: str | None = None):
        """The diffusers scheduler for a sampler and schedule; what diffusers cannot run is refused by name."""
        import diffusers
        try:
            plan = scheduler_plan(name, schedule)
        except SamplerError as e:
            raise GenerationError(str(e)) from None
        if plan.needs:
            try:
                __import__(plan.needs)
            except ImportError:
                raise GenerationError(f"sampler '{name}' needs the '{plan.needs}' package: "
                                      f"pip install {plan.needs}") from None
        cls = getattr(diffusers, plan.scheduler)
        return cls.from_config(self._scheduler_config, **plan.options)

    # ----- prompts

    @property
    def tokenizer(self):
        pipe = self._pipes["txt2img"]
        return pipe.tokenizer or pipe.tokenizer_2  # the SDXL refiner has only the second

    def _token_count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    def _encoder_texts(self, prompt: str) -> list[tuple[str, str]]:
        """(label, text as the tokenizer sees it) for each part of the prompt; the prompt's embeddings
        are loaded first, so their words count as the tokens they are."""
        if self.spec is not None:
            self.adapters.ensure_embeddings(self._pipes["txt2img"], prompt, self.is_sdxl)
        parts = split_prompt(prompt)
        out = [(f"prompt (weight {w:g})", self._as_tokens(t)) for t, w in parts.positive]
        if parts.negative:
            out.append(("negative", self._as_tokens(parts.negative)))
        return out

    def _as_tokens(self, text: str) -> str:
        """The text with each embedding's word as its vectors' tokens (a 2-vector word is 2 tokens)."""
        text = self.adapters.encoder_text(text)
        pipe = self._pipes.get("txt2img")
        if self.adapters.embeddings and pipe is not None and hasattr(pipe, "maybe_convert_prompt"):
            text = pipe.maybe_convert_prompt(text, self.tokenizer)
        return text

    def prompt_notes(self, prompt: str) -> list[str]:
        """Visible notes about a prompt: long ones are chunked, never silently cut; a LoRA whose file
        has layers the model lacks says so (its LoRAs and embeddings are loaded here, before the first
        image)."""
        notes = []
        if self.spec is not None:
            notes += self.adapters.load_loras(self._pipes["txt2img"], prompt, self.spec.name)[1]
        for _, text in self._encoder_texts(prompt):
            n = self._token_count(text)
            if n > CLIP_CHUNK:
                chunks = -(-n // CLIP_CHUNK)
                notes.append(f"note: '{text[:30]}...' is {n} tokens; CLIP reads {CLIP_CHUNK} at a time, "
                             f"so it is encoded in {chunks} chunks (nothing is dropped)")
        return notes

    def tokenization(self, prompt: str) -> str:
        """The tokens of each part of the prompt, with those past CLIP's limit marked (`-t`)."""
        lines = []
        for label, text in self._encoder_texts(prompt):
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
            toks = [self.tokenizer.convert_ids_to_tokens(i).replace("</w>", " ").strip() for i in ids]
            shown = " ".join(toks[:CLIP_CHUNK])
            past = " ".join(toks[CLIP_CHUNK:])
            lines.append(f"{label}: {len(toks)} tokens: {shown}" + (f" | past {CLIP_CHUNK}: {past}" if past else ""))
        return "\n".join(lines)

    def _needs_compel(self, texts: list[str]) -> bool:
        return any(_ATTENTION.search(t) or self._token_count(t) > CLIP_CHUNK for t in texts)

    def _get_compel(self):
        if self._compel is None:
            try:
                from compel import Compel, ReturnedEmbeddingsType
            except ImportError:
                raise GenerationError("attention syntax and prompts over 75 tokens need the 'compel' "
                                      "package: pip install compel") from None
            pipe = self._pipes["txt2img"]
            ti = {}
            try:
                from compel import DiffusersTextualInversionManager
                ti = {"textual_inversion_manager": DiffusersTextualInversionManager(pipe)}
            except ImportError:
                pass
            if self.kind == "sdxl-refiner":
                self._compel = Compel(
                    tokenizer=pipe.tokenizer_2, text_encoder=pipe.text_encoder_2,
                    returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
                    requires_pooled=True, truncate_long_prompts=False, device=self.device, **ti)
            elif self.is_sdxl:
                self._compel = Compel(
                    tokenizer=[pipe.tokenizer, pipe.tokenizer_2], text_encoder=[pipe.text_encoder, pipe.text_encoder_2],
                    returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
                    requires_pooled=[False, True], truncate_long_prompts=False, device=self.device, **ti)
            else:
                self._compel = Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder,
                                      truncate_long_prompts=False, device=self.device, **ti)
        return self._compel

    def _encode(self, texts: list[str]):
        """Embeddings for each text, all of one length: [(embeds, pooled or None), ...]."""
        torch = self.torch
        pipe = self._pipes["txt2img"]
        with torch.no_grad():
            if self._needs_compel(texts):
                compel = self._get_compel()
                out = [compel(t) for t in texts]
                if self.is_sdxl:
                    embeds = compel.pad_conditioning_tensors_to_same_length([e for e, _ in out])
                    return list(zip(embeds, [p for _, p in out]))
                return [(e, None) for e in compel.pad_conditioning_tensors_to_same_length(out)]
            if self.is_sdxl:
                result = []
                for t in texts:
                    e, _, p, _ = pipe.encode_prompt(prompt=t, device=self.device, num_images_per_prompt=1,
                                                    do_classifier_free_guidance=False)
                    result.append((e, p))
                return result
            return [(pipe.encode_prompt(t, self.device, 1, False)[0], None) for t in texts]

    def _conditioning(self, request: DreamRequest) -> dict:
        parts = split_prompt(request.prompt)
        positives = parts.normalized(request.skip_normalize)
        pipe = self._pipes["txt2img"]
        texts = [self.adapters.encoder_text(t) for t, _ in positives] + [self.adapters.encoder_text(parts.negative)]
        with clip_skip([getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)], request.clip_skip):
            encoded = self._encode(texts)
        cond = sum(w * e for (_, w), (e, _) in zip(positives, encoded[:-1]))
        kwargs = {"prompt_embeds": cond, "negative_prompt_embeds": encoded[-1][0]}
        if self.is_sdxl:
            kwargs["pooled_prompt_embeds"] = sum(w * p for (_, w), (_, p) in zip(positives, encoded[:-1]))
            kwargs["negative_pooled_prompt_embeds"] = encoded[-1][1]
        return kwargs

    # ----- noise

    def _noise(self, seed: int, shape) -> "object":
        gen = self.torch.Generator("cpu").manual_seed(seed)
        return self.torch.randn(shape, generator=gen, dtype=self.torch.float32)

    def initial_latents(self, request: DreamRequest):
        """The starting noise: from the seed on the CPU (same on every device), slerped toward each
        variation seed's noise in turn (`-V seed:weight,...`)."""
        pipe = self._pipes["txt2img"]
        factor = pipe.vae_scale_factor
        shape = (1, pipe.vae.config.latent_channels, request.height // factor, request.width // factor)
        latents = self._noise(request.seed, shape)
        for seed, weight in request.with_variations:
            latents = slerp(weight, latents, self._noise(seed, shape))
        return latents.to(self.device, self.dtype)

    # ----- generation

    @contextlib.contextmanager
    def _seamless(self, on: bool):
        if not on:
            yield
            return
        pipe = self._pipes["txt2img"]
        convs = [m for model in (pipe.unet, pipe.vae) for m in model.modules()
                 if isinstance(m, self.torch.nn.Conv2d)]
        old = [m.padding_mode for m in convs]
        for m in convs:
            m.padding_mode = "circular"
        try:
            yield
        finally:
            for m, mode in zip(convs, old):
                m.padding_mode = mode

    def prepare(self, request: DreamRequest) -> None:
        """Make the line's LoRAs, embeddings and VAE the active ones (each loaded once per model)."""
        if self.spec is None:
            raise GenerationError("no model is loaded")
        base = self._pipes["txt2img"]
        self.adapters.apply_loras(base, request.prompt, self.spec.name)
        self.adapters.ensure_embeddings(base, request.prompt, self.is_sdxl)
        self.adapters.apply_vae(list(self._pipes.values()), request.vae, None, self._vae_swapped)

    def _vae_swapped(self, vae) -> None:
        if self.dtype == self.torch.bfloat16 and self.device == "cpu" and not getattr(vae, "_ds_float32", False):
            loading.keep_vae_float32(vae, self.dtype, self.torch)
            vae._ds_float32 = True
        if self.lowvram and self.device in ("cuda", "mps"):
            loading.memory_modes(self._pipes["txt2img"], self.device, self.lowvram)
        else:
            vae.to(self.device)

    def generate(self, request: DreamRequest, *, init_image=None, mask=None, on_step=None, should_stop=None,
                 on_preview=None, preview_every: int = 1):
        """One image for a resolved per-image request. Raises Interrupted or GenerationError.

        on_preview(step, steps, image), if given, gets a small RGB image at latent size (the image's
        size over the VAE factor: 8 for SD, 4 for the demo model) of the predicted clean image every
        `preview_every` model evaluations and at the last one, on this thread; `steps` counts model
        evaluations (Heun and DPM2 make about two per step, PLMS one more). With --hires_fix the steps
        of both passes count as one run."""
        self.prepare(request)
        if request.hires_fix and init_image is None and mask is None:
            return self._generate_hires(request, on_step, should_stop, on_preview, preview_every)
        return self._generate_one(request, init_image, mask, on_step, should_stop, on_preview, preview_every)

    def _generate_one(self, request: DreamRequest, init_image, mask, on_step, should_stop, on_preview,
                      preview_every: int, output_type: str = "pil", steps_before: int = 0, steps_all: int | None = None):
        mode = "inpaint" if mask is not None else "img2img" if init_image is not None else "txt2img"
        pipe = self._pipe(mode)
        pipe.scheduler = self._scheduler(request.sampler, request.schedule)
        tap = PreviewTap(self.latent_rgb, on_preview, preview_every) if on_preview is not None else None

        def step_end(_pipe, step, _timestep, kwargs):
            if should_stop is not None and should_stop():
                raise Interrupted()
            if on_step is not None:
                on_step(steps_before + step + 1, steps_all or total)
            if tap is not None:
                tap(step + 1, _pipe.num_timesteps, kwargs["latents"])
            return kwargs

        args = dict(self._conditioning(request), num_inference_steps=request.steps,
                    guidance_scale=request.cfg_scale, callback_on_step_end=step_end, output_type=output_type,
                    generator=self.torch.Generator("cpu").manual_seed(request.seed))
        if mode == "txt2img":
            total = request.steps
            args.update(width=request.width, height=request.height, latents=self.initial_latents(request))
        else:
            total = max(1, int(request.steps * request.strength))
            args.update(image=init_image, strength=request.strength)
            if mode == "inpaint":
                args.update(mask_image=mask, width=request.width, height=request.height)
        if self.kind.endswith("-inpaint") and mode != "inpaint":
            self._whole_image_mask(args, request)
        return self._run(pipe, args, request, tap.attached(pipe.scheduler) if tap else None)[0]

    def _generate_hires(self, request: DreamRequest, on_step, should_stop, on_preview, preview_every: int):
        """A1111's hires fix: the first pass at W x H, upscaled (latents resized, Lanczos or Real-ESRGAN),
        then an img2img pass at the target size with the same seed."""
        upscaler = request.hires_upscaler or hires.DEFAULT_UPSCALER
        scale = request.hires_scale or hires.DEFAULT_SCALE
        strength = request.hires_strength or hires.DEFAULT_STRENGTH
        steps2 = request.hires_steps or request.steps
        if upscaler == "latent" and self.kind.endswith("-inpaint"):
            raise GenerationError("--hires_upscaler latent does not work with an inpainting model (it needs an "
                                  "image for its masked-image input); use --hires_upscaler lanczos or esrgan")
        if upscaler == "esrgan" and self.esrgan is None:
            raise GenerationError("--hires_upscaler esrgan needs the Real-ESRGAN upscaler, which is not set up here; "
                                  "use latent or lanczos")
        width, height = hires.target_size(request.width, request.height, scale)
        first = request.with_(hires_fix=False, hires_scale=None, hires_steps=None, hires_strength=None,
                              hires_upscaler=None)
        # A1111 runs --hires_steps N denoising steps: a schedule of N / strength steps entered at the strength
        # (its setup_img2img_steps); diffusers runs the last strength x steps of the schedule it is given
        schedule = max(1, int(steps2 / min(strength, 0.999)))
        second = first.with_(width=width, height=height, steps=schedule, strength=strength, with_variations=())
        total = request.steps + schedule - int(schedule - schedule * strength)
        latent = upscaler == "latent"
        out = self._generate_one(first, None, None, on_step, should_stop, on_preview, preview_every,
                                 output_type="latent" if latent else "pil", steps_all=total)
        if latent:
            factor = self._pipes["txt2img"].vae_scale_factor
            size = (height // factor, width // factor)
            image = self.torch.nn.functional.interpolate(out[None].float(), size=size, mode="bilinear",
                                                         antialias=False).to(out.dtype)
        elif upscaler == "lanczos":
            from PIL import Image
            image = out.resize((width, height), Image.LANCZOS)
        else:
            from PIL import Image
            image = self.esrgan(out, scale)
            if image.size != (width, height):
                image = image.resize((width, height), Image.LANCZOS)
        return self._generate_one(second, image, None, on_step, should_stop, on_preview, preview_every,
                                  steps_before=request.steps, steps_all=total)

    def _whole_image_mask(self, args: dict, request: DreamRequest) -> None:
        """An inpainting UNet making a new image (txt2img) or redrawing one (img2img): the whole image
        is masked, so the masked-image channels see nothing, as such models expect."""
        from PIL import Image
        size = (request.width, request.height)
        args.update(mask_image=Image.new("L", size, 255), width=request.width, height=request.height)
        if "image" not in args:  # txt2img: pure noise in, strength 1
            args.update(image=Image.new("RGB", size, (0, 0, 0)), strength=1.0)

    def _run(self, pipe, args: dict, request: DreamRequest, context=None) -> list:
        """Run a pipeline call with the VAE modes this size and batch need; out of memory is one line."""
        batch = len(args["generator"]) if isinstance(args.get("generator"), list) else 1
        loading.vae_modes(pipe, self.device, request.width * request.height, batch, self.lowvram)
        try:
            with self.torch.inference_mode(), self._seamless(request.seamless), (context or contextlib.nullcontext()):
                return pipe(**args).images
        except Interrupted:
            raise
        except Exception as e:
            if is_out_of_memory(e):
                if self.device == "cuda":
                    self.torch.cuda.empty_cache()
                raise GenerationError(
                    f"out of memory on {self.device} making {batch} {request.width}x{request.height} image(s): "
                    + loading.oom_advice(self.device, self.lowvram)) from None
            raise

    def generate_batch(self, requests: list[DreamRequest], *, on_step=None, should_stop=None) -> list:
        """One image per resolved txt2img request, up to batch_size at a time where the requests differ
        only in seed and variations; image i is the image that request alone makes (its own noise and
        sampler generator). With a batch of 1 this is exactly `generate` for each."""
        images = []
        for group in batches(requests, self.batch_size):
            if len(group) == 1:   # generate prepares its own LoRAs, embeddings and VAE
                images.append(self.generate(group[0], on_step=on_step, should_stop=should_stop))
                continue
            self.prepare(group[0])   # one line's images: the same prompt, VAE and clip skip
            images += self._generate_together(group, on_step, should_stop)
        return images

    def _generate_together(self, group: list[DreamRequest], on_step, should_stop) -> list:
        torch, first = self.torch, group[0]
        pipe = self._pipe("txt2img")
        pipe.scheduler = self._scheduler(first.sampler, first.schedule)

        def step_end(_pipe, step, _timestep, kwargs):
            if should_stop is not None and should_stop():
                raise Interrupted()
            if on_step is not None:
                on_step(step + 1, first.steps)
            return kwargs

        cond = {k: (v.repeat(len(group), *[1] * (v.dim() - 1)) if v is not None else None)
                for k, v in self._conditioning(first).items()}
        args = dict(cond, num_inference_steps=first.steps, guidance_scale=first.cfg_scale,
                    callback_on_step_end=step_end, output_type="pil", width=first.width, height=first.height,
                    generator=[torch.Generator("cpu").manual_seed(r.seed) for r in group],
                    latents=torch.cat([self.initial_latents(r) for r in group]))
        if self.kind.endswith("-inpaint"):
            self._whole_image_mask(args, first)
        return self._run(pipe, args, first)


def batches(requests: list[DreamRequest], size: int) -> list[list[DreamRequest]]:
    """Consecutive runs of requests that can share one batch: the same but for seed and variations."""
    groups: list[list[DreamRequest]] = []
    for r in requests:
        same = groups and len(groups[-1]) < size and r.init_img is None and not r.hires_fix and \
            groups[-1][0].with_(seed=0, with_variations=()) == r.with_(seed=0, with_variations=())
        if same:
            groups[-1].append(r)
        else:
            groups.append([r])
    return groups


def slerp(t: float, a, b):
    """Spherical interpolation between two noise tensors (the original shell's variations)."""
    import torch
    af, bf = a.flatten(), b.flatten()
    dot = torch.clamp((af / af.norm()) @ (bf / bf.norm()), -1.0, 1.0)
    if abs(float(dot)) > 0.9995:
        return (1 - t) * a + t * b
    theta = torch.acos(dot)
    return (torch.sin((1 - t) * theta) * a + torch.sin(t * theta) * b) / torch.sin(theta)
