"""The diffusers generator: one resident Stable Diffusion pipeline, txt2img / img2img / inpainting
built from the same components, samplers by name, a CPU generator per image. Imports torch.

A generation reads as a script: pick the pipeline, set the sampler, encode the prompt (conditioning.py),
prepare the noise, denoise (with a per-step callback that reports progress and can stop), return the
image. The hires fix's two passes are in hires_pass.py, several images in one batch in batching.py,
the device and dtype in device.py, loading details in loading.py.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import replace

from ..line.request import DreamRequest
from ..line.rng import DEFAULT_RNG
from ..line.safetext import first_line
from ..line.samplers import SamplerError
from ..line.samplers import plan as scheduler_plan
from ..weights.checkpoint import few_step_hint, tiny_family
from ..weights.hashing import weights_sha256
from ..weights.library import Folders, Library, LineFiles
from ..weights.models import ModelSpec, default_folders
from . import composable, control, decoders, families, loading, schedules
from .adapters import Adapters
from .batching import generate_together
from .conditioning import Conditioner
from .device import is_out_of_memory, pick_device, pick_dtype, quiet_libraries
from .hires_pass import generate_hires
from .noise import ImageSeeds, LatentNoise, NoiseError, step_noise
from .preview import LatentRGB, PreviewTap, projection_for
from .protocols import GenerationError, Interrupted

_LOAD_LOCK = threading.RLock()


class DiffusersGenerator:
    """Holds one model; `generate` makes one image for one resolved, per-image request."""

    def __init__(self, device: str = "auto", precision: str = "auto", *, lowvram: bool = False,
                 compile: bool = False, batch_size: int = 1, folders: Folders | None = None,
                 vae_precision: str = "auto"):
        quiet_libraries()
        import torch
        self.torch = torch
        self.device = pick_device(device)
        self.dtype = pick_dtype(precision, self.device)
        self.precision = str(self.dtype).replace("torch.", "")
        if vae_precision not in ("auto", "float32"):
            raise ValueError(f"vae_precision is auto or float32, not {vae_precision!r}")
        self.vae_precision = vae_precision   # issue 17: float32 keeps the VAE float32 beside a bfloat16 model
        self.lowvram, self.compile, self.batch_size = lowvram, compile, max(1, batch_size)
        self.spec: ModelSpec | None = None
        self.kind = ""
        self.zero_snr = False   # the resident model runs a zero-terminal-SNR schedule
        self.model_hash = ""
        self._pipes: dict = {}
        self._scheduler_config = None
        self.library = Library(folders or default_folders())   # when a caller gives no files
        self.adapters = Adapters()
        self.control = control.ControlModels()   # --control's ControlNets / T2I-Adapters (engines/control.py)
        self._control_maps: dict = {}            # the image's control maps by size (run/image.load_inputs)
        self.text = Conditioner(self)
        self._files = LineFiles()   # the files of the image being made (named if it goes NaN)
        self.esrgan = None   # (image, factor) -> image: the Real-ESRGAN upscaler for --hires_upscaler esrgan
        self.tiny = decoders.TinyDecoders()   # issue 17: tiny decoders (TAESD) loaded for the resident model
        self._hinted: set = set()             # issue 17: model and LoRA files whose few-step hint was given
        if self.device == "cpu":
            loading.set_cpu_threads(torch)
        self.channels_last = loading.channels_last_default(self.device)   # issue 17

    # ----- loading

    def load(self, spec: ModelSpec) -> None:
        """Make spec's model resident. Its kind is read from the weights first; the previous model is
        released only for a model that passes that check, and is loaded again if the new one fails.
        One load at a time in a process: diffusers builds models under accelerate's init_empty_weights,
        which patches torch for every thread (a second generator loading at the same time got 'meta'
        tensors)."""
        with _LOAD_LOCK:
            self._load_checked(spec)

    def _load_checked(self, spec: ModelSpec) -> None:
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
            self._load(spec, kind, spec.prediction or found.prediction, found)
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

    @property
    def vae_float32(self) -> bool:
        """bfloat16 on a CPU: the UNet and text encoders run in bfloat16, the VAE in float32 (with
        --vae_precision float32, and for the families whose bfloat16 decode was not measured close)."""
        return self._vae_float32_for(self.kind)

    def _vae_float32_for(self, kind: str) -> bool:
        if self.dtype != self.torch.bfloat16 or self.device != "cpu":
            return False
        # a bfloat16 decode only where the CPU computes bfloat16 natively: elsewhere it is many times slower
        return self.vae_precision == "float32" or not (loading.native_bf16() and loading.bf16_vae_measured(kind))

    @property
    def decoder_dtype(self):
        """The tiny decoder's dtype: the VAE's. On a GPU the model's (float16 on CUDA: TAESD is made to run in it, as
        diffusers' docs load it); on a CPU bfloat16 beside a bfloat16 model unless kept float32, else float32."""
        if self.device != "cpu":
            return self.dtype
        bf16 = self.dtype == self.torch.bfloat16 and not self.vae_float32
        return self.torch.bfloat16 if bf16 else self.torch.float32

    def _load(self, spec: ModelSpec, kind: str, prediction: str | None, found=None) -> None:
        cls = loading.pipeline_class(kind, "txt2img")
        # with a float32 VAE the weights load in float32 and the rest is cast: a VAE loaded in bfloat16 and
        # cast back would carry bfloat16-rounded weights (not the file's: a VAE file then differed)
        vae_float32 = self._vae_float32_for(kind)
        load_dtype = self.torch.float32 if vae_float32 else self.dtype
        try:
            if families.is_new_family(kind):   # issue 21: SD 3 / FLUX.1 from their files (engines/families.py)
                pipe = families.load(self, spec, kind, found)
            elif spec.is_single_file:
                config = spec.config or loading.single_file_config(loading.config_folder(kind, prediction))
                pipe = cls.from_single_file(str(spec.weights), config=str(config), local_files_only=True,
                                            torch_dtype=load_dtype)
            else:
                extra = {} if kind.startswith("sdxl") else {"safety_checker": None, "requires_safety_checker": False}
                pipe = cls.from_pretrained(str(spec.weights), torch_dtype=load_dtype, local_files_only=True,
                                           **extra)
        except GenerationError:
            raise
        except Exception as e:  # diffusers raises many kinds; the user needs one line
            raise GenerationError(self._load_error(spec, kind, e)) from e
        pipe.set_progress_bar_config(disable=True)
        if hasattr(pipe, "safety_checker"):
            pipe.safety_checker = None
        self.zero_snr = bool(spec.zero_snr or (found is not None and found.zero_snr))   # issue 21
        families.apply_schedule(pipe, prediction, self.zero_snr)
        if self.dtype == self.torch.bfloat16 and not vae_float32 and getattr(pipe.vae.config, "force_upcast", False):
            # SDXL's config asks for a float32 decode because float16 overflows there; bfloat16 has float32's range
            # (else the SDXL img2img/inpaint pipelines cast the VAE to float32 and back around each -I encode)
            pipe.vae.register_to_config(force_upcast=False)
        if vae_float32:
            if not families.is_new_family(kind):   # issue 21: those load in their dtype (T5 alone in bf16)
                loading.cast_all_but_vae(pipe, self.dtype)
            loading.keep_vae_float32(pipe.vae, self.dtype, self.torch)
        if families.is_new_family(kind):   # issue 21: sequential offload for FLUX.1 on small GPUs
            families.memory_modes(self, pipe)
        else:
            loading.memory_modes(pipe, self.device, self.lowvram)
            if self.channels_last:   # issue 17: the CPU's faster layout (bench/bench_fast.py)
                loading.memory_format((pipe.unet, pipe.vae), self.torch, True)
        if self.compile:
            denoiser = "transformer" if families.is_new_family(kind) else "unet"
            setattr(pipe, denoiser, self.torch.compile(getattr(pipe, denoiser)))
        self._pipes = {"txt2img": pipe}
        self._scheduler_config = pipe.scheduler.config
        self.spec, self.kind = spec, kind
        self.model_hash = weights_sha256(spec.weights)
        self._hinted.discard(spec.weights)   # issue 17: its few-step hint again after each load

    @staticmethod
    def _load_error(spec: ModelSpec, kind: str, e: Exception) -> str:
        text = first_line(e)
        if spec.weights.suffix.lower() == ".ckpt" and ("weights_only" in str(e) or "Unable to load" in str(e)
                                                        or "Unpickl" in type(e).__name__):
            return loading.refuse_ckpt(spec.weights)
        label = loading.KIND_NAMES.get(kind, kind)
        return f"cannot load model '{spec.name}' from {spec.weights} (detected as {label}): {text}"

    def unload(self) -> None:
        self._pipes.clear()
        self.tiny.clear()
        self.text.reset()
        self.adapters.reset()
        self.control.reset()
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
    def text_layers(self) -> int | None:
        """Layers of the resident model's (first) text encoder: the deepest clip skip is one fewer."""
        pipe = self._pipes.get("txt2img")
        encoder = getattr(pipe, "text_encoder", None) or getattr(pipe, "text_encoder_2", None)
        if encoder is None:
            return None
        return len(getattr(encoder, "text_model", encoder).encoder.layers)

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
        # issue 21: flow-matching and EDM models have schedulers of their own; zero-SNR ones refuse some
        options = plan.options   # a family with schedules of its own (zero SNR, flow, EDM) takes no A1111 sigmas
        if plan.sigmas:
            options = {k: v for k, v in options.items() if k not in ("use_karras_sigmas", "timestep_spacing")}
        own = families.scheduler_for(getattr(self, "kind", ""), name, self._scheduler_config,
                                     getattr(self, "zero_snr", False), plan.scheduler, schedule, options)
        if own is not None:
            return own
        cls = getattr(diffusers, plan.scheduler)
        scheduler = cls.from_config(self._scheduler_config, **plan.options)
        schedules.install(scheduler, plan)   # issue 19: A1111's sigmas for the schedule (engines/schedules.py)
        return scheduler

    # ----- prompts (conditioning.py)

    def files(self, prompt: str, vae: str | None, files: LineFiles | None, controls=()) -> LineFiles:
        """The files a line uses: as planned, or (a caller that planned nothing) found in the library now."""
        return files if files is not None else self.library.files_for(prompt, vae, controls)

    def prompt_notes(self, prompt: str, files: LineFiles | None = None,
                     running: tuple[str, float] | None = None) -> list[str]:
        """The prompt's notes before its first image; `running` is the line's (sampler, CFG) (few-step hints)."""
        if families.is_new_family(self.kind):   # issue 21: CLIP + T5, no compel
            return families.prompt_notes(self, prompt, files) + self._few_step_hints(prompt, files, running)
        return self.text.prompt_notes(prompt, files) + self._few_step_hints(prompt, files, running)   # issue 17


    def _few_step_hints(self, prompt: str, files: LineFiles | None,
                        running: tuple[str, float] | None = None) -> list[str]:
        """Once per loaded model and per LoRA file: a note when it looks like a few-step one (a preset to try). A
        line that already runs the preset (its sampler and CFG) gets none, and the next line without it still does."""
        if self.spec is None:
            return []
        notes = []
        for path in [self.spec.weights] + [u.path for u in self.files(prompt, None, files).loras]:
            if path in self._hinted:
                continue
            note = few_step_hint(path, running)
            if note is None and running is not None and few_step_hint(path) is not None:
                continue
            self._hinted.add(path)
            if note:
                notes.append(note)
        return notes

    def tokenization(self, prompt: str, files: LineFiles | None = None) -> str:
        return self.text.tokenization(prompt, files)

    # ----- noise (issue 19: engines/noise.py; the whole block)

    def latent_noise(self, requests: list[DreamRequest], sized: bool = True) -> LatentNoise:
        """One noise stream per image from the line's --rng source and --ensd, as A1111's ImageRNG: its first
        draw the seed's noise (variation seeds slerped in), each later draw the step noise of ancestral and
        SDE samplers. `sized`: at the requests' latent size (else the size the pipeline first asks for)."""
        first, shape = requests[0], None
        if sized:
            pipe = self._pipes["txt2img"]
            factor = pipe.vae_scale_factor
            shape = (pipe.vae.config.latent_channels, first.height // factor, first.width // factor)
        try:
            return LatentNoise(first.rng or DEFAULT_RNG, [ImageSeeds(r.seed, r.with_variations) for r in requests],
                               shape, device=self.device, ensd=first.ensd)
        except NoiseError as e:
            raise GenerationError(str(e)) from None

    def initial_latents(self, request: DreamRequest):
        """The starting noise of a txt2img request (the first draw of its stream)."""
        return self.latent_noise([request]).first().to(self.device, self.dtype)

    @contextlib.contextmanager
    def noise_steps(self, pipe, noise: LatentNoise, img2img: bool = False):
        """While inside: the pipeline's scheduler (and an img2img pipeline's noising of its init image) draws
        from `noise` (noise.step_noise); a missing package is one line."""
        with contextlib.ExitStack() as stack:
            try:
                stack.enter_context(step_noise(pipe.scheduler, noise, pipe=pipe if img2img else None))
            except NoiseError as e:
                raise GenerationError(str(e)) from None
            yield noise

    # ----- decoders (issue 17: engines/decoders.py)

    def _tiny_decoder(self, path):
        """The loaded tiny decoder at `path` for the resident model (None for None); GenerationError in one line."""
        if path is None:
            return None
        factor = self._pipes["txt2img"].vae_scale_factor
        try:
            return self.tiny.get(self.spec.name, path, tiny_family(self.kind, factor), factor,
                                 dtype=self.decoder_dtype, channels_last=self.channels_last, device=self.device)
        except decoders.DecoderError as e:
            raise GenerationError(f"--decoder: {e}") from None

    def _preview_projection(self):
        """What previews go through: the line's (or the model's) tiny decoder, else the linear projection."""
        tiny = self._tiny_decoder(self._files.preview)
        return decoders.TinyPreview(tiny) if tiny is not None else self.latent_rgb

    # ----- generation

    @contextlib.contextmanager
    def _seamless(self, on: bool):
        if not on:
            yield
            return
        pipe = self._pipes["txt2img"]
        convs = [m for model in (pipe.unet, pipe.vae, *self.tiny.loaded()) for m in model.modules()
                 if isinstance(m, self.torch.nn.Conv2d)]
        old = [m.padding_mode for m in convs]
        for m in convs:
            m.padding_mode = "circular"
        try:
            yield
        finally:
            for m, mode in zip(convs, old):
                m.padding_mode = mode

    def prepare(self, request: DreamRequest, files: LineFiles | None = None) -> None:
        """Make the line's LoRAs, embeddings and VAE the active ones (each loaded once per model)."""
        if self.spec is None:
            raise GenerationError("no model is loaded")
        if files is None:   # issue 17: a caller that planned nothing: the request's decoder, found now
            from ..weights.decoders import DecoderNotFound, line_decoders
            try:
                found = line_decoders(request.decoder, self.spec, self.library.folders)
            except DecoderNotFound as e:
                raise GenerationError(str(e)) from None
            files = replace(self.files(request.prompt, request.vae, None, request.control), decoder=found.decoder,
                            preview=found.preview)
        files = self.files(request.prompt, request.vae, files, request.control)
        self._files = files
        base = self._pipes["txt2img"]
        if families.is_new_family(self.kind):   # issue 21: no textual-inversion embeddings there
            families.check_files(self, files)
        self.adapters.apply_loras(base, files.loras, self.spec.name)
        self.adapters.ensure_embeddings(base, files.embeddings, self.is_sdxl)
        self.adapters.apply_vae(list(self._pipes.values()), files.vae, None, self._vae_swapped)

    def _vae_swapped(self, vae) -> None:
        if self.vae_float32 and not getattr(vae, "_ds_float32", False):
            loading.keep_vae_float32(vae, self.dtype, self.torch)
            vae._ds_float32 = True
        elif self.dtype == self.torch.bfloat16 and getattr(vae.config, "force_upcast", False):
            vae.register_to_config(force_upcast=False)   # as at load: bfloat16 needs no float32 decode
        if self.lowvram and self.device in ("cuda", "mps"):
            loading.memory_modes(self._pipes["txt2img"], self.device, self.lowvram)
        else:
            vae.to(self.device)
        if self.channels_last:   # issue 17
            loading.memory_format((vae,), self.torch, True)

    def generate(self, request: DreamRequest, *, files: LineFiles | None = None, init_image=None, mask=None,
                 on_step=None, should_stop=None, on_preview=None, preview_every: int = 1, controls=None):
        """One image for a resolved per-image request. Raises Interrupted or GenerationError.

        `files` are the LoRAs, embeddings and VAE the line was planned with (None: found now).
        on_preview(step, steps, image), if given, gets a small RGB image at latent size (the image's
        size over the VAE factor: 8 for SD, 4 for the demo model) of the predicted clean image every
        `preview_every` model evaluations and at the last one, on this thread; `steps` counts model
        evaluations (Heun and DPM2 make about two per step, PLMS one more). With --hires_fix the steps
        of both passes count as one run. `controls`: the line's control maps by size (run/image.load_inputs)."""
        self.prepare(request, files)
        self._control_maps = controls or {}
        if request.hires_fix and init_image is None and mask is None:
            return generate_hires(self, request, on_step, should_stop, on_preview, preview_every)
        return self._generate_one(request, init_image, mask, on_step, should_stop, on_preview, preview_every)

    def generate_batch(self, requests: list[DreamRequest], *, files: LineFiles | None = None, on_step=None,
                       should_stop=None) -> list:
        """The images of one batch (run/plan.batch_groups decided it: txt2img images of one line that differ
        only in seed and variations); image i is the image that request alone makes (its own noise and
        sampler generator)."""
        self.prepare(requests[0], files)
        self._control_maps = {}
        if families.is_new_family(self.kind):   # issue 21: one image a call
            return families.generate_each(self, requests, on_step, should_stop)
        if len(requests) == 1:
            return [self._generate_one(requests[0], None, None, on_step, should_stop, None, 1)]
        return generate_together(self, requests, on_step, should_stop)

    def _generate_one(self, request: DreamRequest, init_image, mask, on_step, should_stop, on_preview,
                      preview_every: int, output_type: str = "pil", steps_before: int = 0, steps_all: int | None = None):
        if families.is_new_family(self.kind):   # issue 21: SD 3 / FLUX.1 (engines/families.py)
            return families.generate_one(self, request, init_image, mask, on_step, should_stop, on_preview,
                                         preview_every, output_type, steps_before, steps_all)
        mode = "inpaint" if mask is not None else "img2img" if init_image is not None else "txt2img"
        used = self._files.controls if request.control and self._control_maps else ()
        pipe = self.control.pipeline(self, mode, used) if used else self._pipe(mode)
        pipe.scheduler = self._scheduler(request.sampler, request.schedule)
        # issue 17: a tiny decoder makes the pixels (the pipeline returns latents) and the previews
        tiny = self._tiny_decoder(self._files.decoder) if output_type == "pil" else None
        tap = PreviewTap(self._preview_projection(), on_preview, preview_every) if on_preview is not None else None

        def step_end(_pipe, step, _timestep, kwargs):
            if should_stop is not None and should_stop():
                raise Interrupted()
            if on_step is not None:
                # the pipeline's own count: A1111's DDIM and UniPC grids run one step more for most counts
                on_step(steps_before + step + 1, steps_all or _pipe.num_timesteps)
            if tap is not None:
                tap(step + 1, _pipe.num_timesteps, kwargs["latents"])
            if step + 1 == _pipe.num_timesteps and self.torch.isnan(kwargs["latents"]).any():
                raise GenerationError(self._nan_message(request))
            return kwargs

        args = dict(self.text.conditioning(request), num_inference_steps=request.steps,
                    guidance_scale=request.cfg_scale, callback_on_step_end=step_end,
                    output_type="latent" if tiny is not None else output_type,
                    generator=self.torch.Generator("cpu").manual_seed(request.seed))
        and_parts = args.pop(composable.KEY, None)   # issue 19: A1111's AND, combined in the UNet call
        noise = self.latent_noise([request], sized=mode == "txt2img")   # issue 19: one stream for the image
        # issue 17: explicit timesteps and the step's eta (TCD's gamma) reach the pipeline
        args.update(scheduler_plan(request.sampler, request.schedule, request.timesteps, request.eta).pipeline_args())
        if mode == "txt2img":
            args.update(width=request.width, height=request.height,
                        latents=noise.first().to(self.device, self.dtype))
        else:
            args.update(image=init_image, strength=request.strength)
            if mode == "inpaint":
                args.update(mask_image=mask, width=request.width, height=request.height)
        if self.kind.endswith("-inpaint") and mode != "inpaint":
            self._whole_image_mask(args, request)
        if used:
            control.arguments(self, pipe, request, used, self._control_maps, args, step_end)
        args.update(families.rescale_args(self, pipe, request))   # issue 21: --cfg_rescale
        with contextlib.ExitStack() as stack:
            stack.enter_context(self.noise_steps(pipe, noise, img2img=mode != "txt2img"))   # issue 19
            stack.enter_context(composable.and_guidance(pipe.unet, and_parts, request.cfg_scale > 1))   # issue 19
            if tap is not None:
                stack.enter_context(tap.attached(pipe.scheduler))
            stack.enter_context(loading.stop_checks(pipe.vae, should_stop))   # Ctrl-C inside a long decode
            images = self._run(pipe, args, request)
        return (decoders.decode_to_pil(tiny, images) if tiny is not None else images)[0]

    def _nan_message(self, request: DreamRequest) -> str:
        """What to say when the model's output is NaN (the image would be all black)."""
        suspects = [f"LoRA {u.name}" for u in self._files.loras] + [f"embedding {u.name}" for u in self._files.embeddings]
        which = (f"; this line uses {', '.join(suspects)}, which may hold NaN weights (try the line without it)"
                 if suspects else "; the model's weights may hold NaN values, or try --precision float32")
        return ("the model gave NaN (not-a-number) values, so the image would be all black, and it is not saved"
                + which)

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
        free = loading.device_free_bytes(self.device) if batch > 1 else None   # only a batch may be sliced
        loading.vae_modes(pipe, self.device, request.width * request.height, batch, self.lowvram, free)
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

