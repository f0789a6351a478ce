"""Small LoRA, embedding and VAE files for the demo model, made in a test (torch): kohya/A1111 keys,
A1111's embedding format, a diffusers-keyed single-file VAE."""

from __future__ import annotations

from pathlib import Path

import torch
from safetensors.torch import save_file

DEMO = Path(__file__).resolve().parent.parent / "models" / "demo"


def _linear_shapes(model, wanted) -> dict[str, tuple[int, int]]:
    return {name: (m.in_features, m.out_features) for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear) and wanted(name)}


def make_kohya_lora(path: Path, seed: int = 0, rank: int = 4, scale: float = 0.5, text_encoder: bool = True,
                    unet=None, te=None) -> Path:
    """A random LoRA over a UNet's attention (and its text encoder's), in kohya/A1111 key layout; the
    demo model's unless `unet`/`te` are given."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel
    unet = unet if unet is not None else UNet2DConditionModel.from_pretrained(DEMO / "unet", local_files_only=True)
    g = torch.Generator().manual_seed(seed)
    tensors = {}

    def add(prefix, name, fin, fout):
        key = prefix + name.replace(".", "_")
        tensors[key + ".lora_down.weight"] = torch.randn(rank, fin, generator=g) * scale
        tensors[key + ".lora_up.weight"] = torch.randn(fout, rank, generator=g) * scale
        tensors[key + ".alpha"] = torch.tensor(float(rank))
    for name, (fin, fout) in _linear_shapes(unet, lambda n: ".attn" in n and n.split(".")[-1] in
                                            ("to_q", "to_k", "to_v") or n.endswith("to_out.0")).items():
        add("lora_unet_", name, fin, fout)
    if text_encoder:
        te = te if te is not None else CLIPTextModel.from_pretrained(DEMO / "text_encoder", local_files_only=True)
        for name, (fin, fout) in _linear_shapes(te, lambda n: n.split(".")[-1] in
                                                ("q_proj", "k_proj", "v_proj", "out_proj")).items():
            add("lora_te_", name if name.startswith("text_model.") else "text_model." + name, fin, fout)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in tensors.items()}, str(path), metadata={"ss_output_name": path.stem})
    return path


def make_embedding(path: Path, seed: int = 0, vectors: int = 2, width: int = 96, scale: float = 1.0) -> Path:
    """A random A1111-format embedding: `emb_params` in a .safetensors, `string_to_param` in a .pt."""
    g = torch.Generator().manual_seed(seed)
    emb = torch.randn(vectors, width, generator=g) * scale
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix == ".pt":
        torch.save({"string_to_token": {"*": 265}, "string_to_param": {"*": emb}, "name": path.stem, "step": 1},
                   str(path))
    else:
        save_file({"emb_params": emb}, str(path))
    return path
