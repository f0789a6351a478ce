"""Device and dtype: which device a model runs on, in which precision, and what an out-of-memory error
looks like on each (imports torch)."""

from __future__ import annotations

import logging
import os
import warnings

from .protocols import GenerationError


def quiet_libraries() -> None:
    """No progress bars, hub calls or library warnings on the user's terminal."""
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
