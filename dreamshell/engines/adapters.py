"""LoRAs, textual-inversion embeddings, VAEs and clip skip on the resident pipeline (imports torch).

Before each image the generator hands in the files its line uses (`weights/library.LineFiles`, found
once when the line was planned): the LoRAs are loaded once (diffusers' `load_lora_weights`, needs peft)
and weighted with `set_adapters`; a line without tags runs with every
LoRA disabled, so it makes the same bytes as before any was loaded (nothing is fused). Embeddings
are loaded when their word first appears (`load_textual_inversion`, `.pt` only through
`weights_only=True`). A `--vae` swaps the pipeline's VAE (each loaded once) and back. Clip skip drops
the text encoder's last N-1 layers while a prompt is encoded (A1111's numbering: the final layer norm
still applies, so N = 2 is diffusers' `clip_skip=1`).
"""

from __future__ import annotations

import contextlib
import re
import tempfile
from pathlib import Path

from ..line.limits import LimitError, check_clip_skip
from ..line.safetext import first_line, quoted, shorten
from ..weights.library import DIFFUSERS_LORA_FILE, UsedEmbedding, UsedLora
from .protocols import GenerationError

MAX_VAES = 3   # extra VAEs kept loaded beside the model's own


class Adapters:
    """What is loaded into one resident model; `reset()` when the model goes."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.loras: dict[str, str] = {}          # resolved path -> adapter name
        self.made = getattr(self, "made", 0)      # adapters made so far (names lora1, lora2, ...)
        self.lora_active = False
        self.embeddings: dict[str, str] = {}     # resolved path -> the registered word
        self.vaes: dict[str, object] = {}        # resolved path -> AutoencoderKL
        self.base_vae = None
        self.vae_key: str | None = None          # the swapped-in VAE (None: the model's own)

    # ----- LoRAs

    def load_loras(self, pipe, used: tuple[UsedLora, ...], model_name: str) -> list[str]:
        """A line's LoRAs, each loaded once; notes for weights a file has that the model has no place for."""
        notes = []
        for u in used:
            if str(u.path.resolve()) not in self.loras:
                notes += self._load_lora(pipe, u, model_name)
        return notes

    def apply_loras(self, pipe, used: tuple[UsedLora, ...], model_name: str) -> None:
        self.load_loras(pipe, used, model_name)
        if used:
            names = [self.loras[str(u.path.resolve())] for u in used]
            try:
                pipe.enable_lora()
                pipe.set_adapters(names, adapter_weights=[u.weight for u in used])
            except Exception as e:
                raise GenerationError(f"cannot weight the LoRAs {', '.join(u.name for u in used)}: {first_line(e)}") \
                    from e
            self.lora_active = True
        elif self.lora_active and hasattr(getattr(pipe, _denoiser(pipe)), "_orig_mod"):
            # --compile: a graph traced with LoRA layers in it (even disabled ones) computes the plain
            # image with other kernels, so its bytes differ (seen on an H100); taking the LoRAs out gives
            # back the model the first graph was traced from. They load again when a line tags them.
            name = _denoiser(pipe)
            compiled = getattr(pipe, name)
            setattr(pipe, name, compiled._orig_mod)
            try:
                pipe.unload_lora_weights()
            finally:
                setattr(pipe, name, compiled)
            self.loras.clear()
            self.lora_active = False
        elif self.lora_active:
            pipe.disable_lora()
            self.lora_active = False

    def _load_lora(self, pipe, used: UsedLora, model_name: str) -> list[str]:
        self.made += 1
        adapter = f"lora{self.made}"   # never reused: peft keeps a name until the adapter is deleted
        path = used.path
        folder, weight_name = (path, DIFFUSERS_LORA_FILE) if path.is_dir() else (path.parent, path.name)
        denoiser = _denoiser(pipe)
        compiled = getattr(pipe, denoiser) if hasattr(getattr(pipe, denoiser), "_orig_mod") else None  # --compile
        try:
            if compiled is not None:
                setattr(pipe, denoiser, compiled._orig_mod)
            with _warnings_of("diffusers", "peft") as warned:
                pipe.load_lora_weights(str(folder), weight_name=weight_name, adapter_name=adapter,
                                       local_files_only=True)
        except ImportError as e:
            raise GenerationError(f"LoRAs need the 'peft' package: pip install peft ({first_line(e)})") from None
        except Exception as e:
            self._forget(pipe, adapter)
            raise GenerationError(f"LoRA {quoted(used.name)} ({shorten(str(path), 120)}) does not fit model "
                                  f"'{model_name}': {first_line(e)}") from e
        finally:
            if compiled is not None:
                setattr(pipe, denoiser, compiled)   # the compiled wrapper of the same module: recompiles on its next call
        present = {a for names in pipe.get_list_adapters().values() for a in names}
        if adapter not in present:
            raise GenerationError(f"LoRA {quoted(used.name)} ({shorten(str(path), 120)}) has no weights for model "
                                  f"'{model_name}' (it is made for another kind of model)")
        self.loras[str(path.resolve())] = adapter
        pipe.disable_lora()   # loaded, not yet asked for: apply_loras turns on what a line tags
        self.lora_active = False
        notes = []
        for text in warned:
            m = re.search(r"led to (unexpected|missing) keys[^:]*:\s*(.*)", text, re.S)
            if m and m.group(1) == "unexpected":
                keys = sorted({k.rsplit(".lora_", 1)[0] for k in re.split(r",\s*", m.group(2).strip().rstrip(".")) if k})
                notes.append(f"note: LoRA {quoted(used.name)}: {len(keys)} of its layers have no place in model "
                             f"'{model_name}' and are left out ({shorten(', '.join(keys), 100)})")
        return notes

    @staticmethod
    def _forget(pipe, adapter: str) -> None:
        with contextlib.suppress(Exception):
            pipe.delete_adapters(adapter)

    # ----- embeddings

    def ensure_embeddings(self, pipe, used: tuple[UsedEmbedding, ...], is_sdxl: bool) -> None:
        for u in used:
            if str(u.path.resolve()) not in self.embeddings:
                self._load_embedding(pipe, u, is_sdxl)

    def encoder_text(self, text: str) -> str:
        """The text as the tokenizer must see it: each embedding's word spelled as it was registered."""
        for word in self.embeddings.values():
            text = re.sub(r"(?<![A-Za-z0-9_])" + re.escape(word) + r"(?![A-Za-z0-9_])", word, text, flags=re.I)
        return text

    def _load_embedding(self, pipe, used: UsedEmbedding, is_sdxl: bool) -> None:
        import torch
        data = _read_embedding(used.path, used.name)
        pairs = []   # (vectors, tokenizer, text encoder)
        if is_sdxl:
            if not (isinstance(data, dict) and "clip_l" in data and "clip_g" in data):
                raise GenerationError(f"embedding {quoted(used.name)} ({shorten(str(used.path), 120)}) is not an SDXL "
                                      "embedding (no clip_l and clip_g vectors); use it with an SD 1.x/2.x model")
            pairs = [(data["clip_l"], pipe.tokenizer, pipe.text_encoder),
                     (data["clip_g"], pipe.tokenizer_2, pipe.text_encoder_2)]
        else:
            vectors = data if isinstance(data, torch.Tensor) else None
            if isinstance(data, dict) and "clip_l" in data:
                raise GenerationError(f"embedding {quoted(used.name)} is an SDXL embedding (clip_l/clip_g); "
                                      "the resident model is not SDXL")
            if vectors is None:
                raise GenerationError(f"embedding {quoted(used.name)} ({shorten(str(used.path), 120)}): no vectors found "
                                      "(A1111 string_to_param/emb_params or one tensor)")
            pairs = [(vectors, pipe.tokenizer, pipe.text_encoder)]
        for vectors, tokenizer, encoder in pairs:
            vectors = vectors.detach().to(torch.float32)
            if vectors.dim() == 1:
                vectors = vectors[None]
            width = encoder.get_input_embeddings().weight.shape[-1]
            if vectors.dim() != 2 or vectors.shape[-1] != width:
                raise GenerationError(f"embedding {quoted(used.name)} has vectors of width {vectors.shape[-1]}, but "
                                      f"this model's text encoder takes {width}: it is made for another kind of model")
            if used.name in tokenizer.get_vocab():
                raise GenerationError(f"embedding {quoted(used.name)}: the word is already a token of this model's "
                                      "tokenizer; rename the file to a new word")
            try:
                pipe.load_textual_inversion({used.name: vectors}, token=used.name, tokenizer=tokenizer,
                                            text_encoder=encoder)
            except Exception as e:
                raise GenerationError(f"embedding {quoted(used.name)}: {first_line(e)}") from e
        self.embeddings[str(used.path.resolve())] = used.name

    # ----- VAE

    def apply_vae(self, pipes: list, path: Path | None, load_config_from, after_swap) -> None:
        """Put the VAE file or folder at `path` (None: the model's own) into every pipeline."""
        base = pipes[0]
        if self.base_vae is None:
            self.base_vae = base.vae
        if path is None:
            key, vae = None, self.base_vae
        else:
            key = str(path.resolve())
            if key not in self.vaes:
                if len(self.vaes) >= MAX_VAES:
                    self.vaes.pop(next(iter(self.vaes)))
                self.vaes[key] = load_vae(path, self.base_vae, load_config_from)
            vae = self.vaes[key]
        if key == self.vae_key:
            return
        for p in pipes:
            p.vae = vae
        self.vae_key = key
        after_swap(vae)


def _denoiser(pipe) -> str:
    """The attribute holding the pipeline's denoiser: `unet`, or `transformer` for SD 3 and FLUX.1."""
    return "unet" if getattr(pipe, "unet", None) is not None else "transformer"


@contextlib.contextmanager
def _warnings_of(*loggers: str):
    """Collect the warnings these loggers log (diffusers tells of LoRA keys it skipped only this way),
    printing nothing."""
    import logging
    caught: list[str] = []

    class Keep(logging.Handler):
        def emit(self, record):
            caught.append(record.getMessage())
    saved = []
    for name in loggers:
        log = logging.getLogger(name)
        saved.append((log, log.level, log.propagate, list(log.handlers)))
        log.handlers = [Keep()]
        log.setLevel(logging.WARNING)
        log.propagate = False
    try:
        yield caught
    finally:
        for log, level, propagate, handlers in saved:
            log.handlers = handlers
            log.setLevel(level)
            log.propagate = propagate


def _read_embedding(path: Path, name: str):
    """The vectors of an A1111 (.pt string_to_param, .safetensors emb_params), SDXL (clip_l/clip_g) or
    diffusers (one tensor) embedding file; `.pt`/`.bin` through torch.load(weights_only=True)."""
    import torch
    shown = shorten(str(path), 120)
    try:
        if path.suffix.lower() == ".safetensors":
            from safetensors.torch import load_file
            data = load_file(str(path))
        else:
            data = torch.load(str(path), map_location="cpu", weights_only=True)
    except Exception as e:
        if path.suffix.lower() != ".safetensors":
            raise GenerationError(f"refusing embedding {quoted(name)} ({shown}): it does not load with "
                                  f"torch.load(weights_only=True) ({first_line(e)}); use a .safetensors file") from None
        raise GenerationError(f"embedding {quoted(name)} ({shown}) cannot be read: {first_line(e)}") from None
    if isinstance(data, torch.Tensor):
        return data
    if not isinstance(data, dict):
        raise GenerationError(f"embedding {quoted(name)} ({shown}) holds a {type(data).__name__}, not vectors")
    if "clip_l" in data and "clip_g" in data:
        return {"clip_l": data["clip_l"], "clip_g": data["clip_g"]}
    params = data.get("string_to_param")
    if isinstance(params, dict) and params:
        return next(iter(params.values()))
    if "emb_params" in data:
        return data["emb_params"]
    tensors = [v for v in data.values() if isinstance(v, torch.Tensor)]
    if len(tensors) == 1:
        return tensors[0]
    raise GenerationError(f"embedding {quoted(name)} ({shown}): no vectors found (A1111 string_to_param/emb_params, "
                          "SDXL clip_l/clip_g, or one tensor)")


def load_vae(path: Path, like, load_config_from=None):
    """A VAE from a single file (original or diffusers keys; configured like the model's own VAE, offline)
    or a diffusers folder, in the dtype and on the device of `like`."""
    import torch
    from diffusers import AutoencoderKL
    shown = shorten(str(path), 120)
    dtype = next(like.parameters()).dtype
    try:
        if path.is_dir():
            vae = AutoencoderKL.from_pretrained(str(path), local_files_only=True, torch_dtype=dtype)
        else:
            with tempfile.TemporaryDirectory(prefix="dreamshell-vae-") as config:
                like.save_config(config)
                source = str(path)
                if path.suffix.lower() in (".ckpt", ".pt"):
                    try:
                        source = torch.load(str(path), map_location="cpu", weights_only=True)
                    except Exception:
                        raise GenerationError(f"refusing VAE {shown}: it does not load with "
                                              "torch.load(weights_only=True); use a .safetensors file") from None
                    source = source.get("state_dict", source) if isinstance(source, dict) else source
                vae = AutoencoderKL.from_single_file(source, config=config, local_files_only=True, torch_dtype=dtype)
    except GenerationError:
        raise
    except Exception as e:
        raise GenerationError(f"cannot load the VAE {shown}: {first_line(e)}") from e
    return vae.to(next(like.parameters()).device)


@contextlib.contextmanager
def clip_skip(encoders: list, n: int | None):
    """Encode with each text encoder's last n-1 layers left out (A1111's Clip skip n)."""
    if not n or n <= 1:
        yield
        return
    saved = []
    try:
        for te in encoders:
            if te is None:
                continue
            stack = getattr(te, "text_model", te).encoder   # transformers 5 drops .text_model
            layers = stack.layers
            try:
                check_clip_skip(n, len(layers))
            except LimitError as e:
                raise GenerationError(str(e)) from None
            saved.append((stack, layers))
            stack.layers = layers[:len(layers) - (n - 1)]
        yield
    finally:
        for stack, layers in saved:
            stack.layers = layers
