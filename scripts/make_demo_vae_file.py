#!/usr/bin/env python
"""Save the demo model's VAE (models/demo/vae) as ONE .safetensors file in the original LDM/CompVis
key layout, the way single-file VAEs such as vae-ft-mse-840000-ema-pruned.safetensors come.

    python scripts/make_demo_vae_file.py            # writes models/vae/demo-vae.safetensors and checks it

The mapping (diffusers -> LDM) is the inverse of diffusers' convert_ldm_vae_checkpoint
(diffusers/loaders/single_file_utils.py): down_blocks.i.resnets.j -> down.i.block.j,
downsamplers.0 -> downsample, up_blocks.i -> up.(n-1-i) (LDM numbers the decoder's levels from the
lowest resolution up, diffusers in the order it runs them), upsamplers.0 -> upsample,
mid_block.resnets.k -> mid.block_(k+1), mid_block.attentions.0 -> mid.attn_1 (norm, q, k, v,
proj_out as 1x1 convolutions; the demo VAE has none: mid_block_add_attention=False),
conv_shortcut -> nin_shortcut, conv_norm_out -> norm_out. Weights stay float16, as in the folder.

Checks, after writing: diffusers' own convert_ldm_vae_checkpoint maps the file back to exactly the
folder's keys and tensors; AutoencoderKL.from_single_file(file, config="models/demo",
subfolder="vae", local_files_only=True) loads it with every tensor equal to the folder VAE's; and a
decode gives identical bytes.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
os.environ.setdefault("HF_HUB_OFFLINE", "1")

_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}


def diffusers_to_ldm_key(key: str, n_up: int) -> str:
    """One diffusers AutoencoderKL key -> its LDM/CompVis name."""
    k = key
    k = re.sub(r"^(encoder|decoder)\.conv_norm_out\.", r"\1.norm_out.", k)
    k = re.sub(r"^encoder\.down_blocks\.(\d+)\.resnets\.(\d+)\.", r"encoder.down.\1.block.\2.", k)
    k = re.sub(r"^encoder\.down_blocks\.(\d+)\.downsamplers\.0\.", r"encoder.down.\1.downsample.", k)
    k = re.sub(r"^decoder\.up_blocks\.(\d+)\.resnets\.(\d+)\.",
               lambda m: f"decoder.up.{n_up - 1 - int(m[1])}.block.{m[2]}.", k)
    k = re.sub(r"^decoder\.up_blocks\.(\d+)\.upsamplers\.0\.",
               lambda m: f"decoder.up.{n_up - 1 - int(m[1])}.upsample.", k)
    k = re.sub(r"^(encoder|decoder)\.mid_block\.resnets\.(\d+)\.", lambda m: f"{m[1]}.mid.block_{int(m[2]) + 1}.", k)
    m = re.match(r"^(encoder|decoder)\.mid_block\.attentions\.0\.(.+)\.(weight|bias)$", k)
    if m:
        k = f"{m[1]}.mid.attn_1.{_ATTN[m[2]]}.{m[3]}"
    k = k.replace(".conv_shortcut.", ".nin_shortcut.")
    return k


def to_ldm(state: dict[str, torch.Tensor], n_up: int) -> dict[str, torch.Tensor]:
    out = {}
    for key, w in state.items():
        new = diffusers_to_ldm_key(key, n_up)
        if ".mid.attn_1." in new and new.endswith(".weight") and w.ndim == 2:
            w = w[:, :, None, None]  # LDM's attention projections are 1x1 convolutions
        if new in out:
            raise SystemExit(f"two keys map to {new}")
        out[new] = w.contiguous()
    return dict(sorted(out.items()))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", type=Path, default=ROOT / "models" / "demo")
    ap.add_argument("--out", type=Path, default=ROOT / "models" / "vae" / "demo-vae.safetensors")
    args = ap.parse_args(argv)

    from diffusers import AutoencoderKL
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint
    from safetensors.torch import load_file, save_file

    folder = args.model / "vae"
    state = load_file(str(folder / "diffusion_pytorch_model.safetensors"))
    config = AutoencoderKL.load_config(folder)
    ldm = to_ldm(state, len(config["up_block_types"]))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    save_file(ldm, str(args.out), metadata={
        "format": "pt", "source": "dreamshell demo model (models/demo/vae), LDM/CompVis key layout",
        "scaling_factor": str(config["scaling_factor"]), "made_by": "scripts/make_demo_vae_file.py"})
    dtypes = sorted({str(w.dtype).replace("torch.", "") for w in ldm.values()})
    print(f"wrote {args.out} ({args.out.stat().st_size} bytes, {len(ldm)} tensors, {'/'.join(dtypes)})")

    # 1. diffusers' own LDM -> diffusers conversion gives back the folder's state dict exactly
    back = convert_ldm_vae_checkpoint(load_file(str(args.out)), config)
    assert set(back) == set(state), sorted(set(back) ^ set(state))[:6]
    assert all(torch.equal(back[k], state[k]) for k in state)
    print("convert_ldm_vae_checkpoint(file) == folder state dict: same keys, equal tensors")

    # 2. from_single_file, offline, with the folder's config
    # (config=str(args.model / "vae") without subfolder works as well; both load float32)
    single = AutoencoderKL.from_single_file(str(args.out), config=str(args.model), subfolder="vae",
                                            local_files_only=True)
    ref = AutoencoderKL.from_pretrained(folder, local_files_only=True)
    assert single.dtype == ref.dtype == torch.float32
    a, b = single.state_dict(), ref.state_dict()
    assert set(a) == set(b)
    diff = max(float((a[k].float() - b[k].float()).abs().max()) for k in b)
    assert single.config.scaling_factor == ref.config.scaling_factor
    print(f"from_single_file: {len(a)} tensors, max abs diff to the folder VAE = {diff}")
    assert diff == 0.0

    # 3. a decode gives identical bytes
    z = torch.randn(2, 4, 16, 16, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        x1 = single.decode(z / single.config.scaling_factor).sample
        x2 = ref.decode(z / ref.config.scaling_factor).sample
    b1 = ((x1.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy().tobytes()
    b2 = ((x2.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy().tobytes()
    assert b1 == b2 and torch.equal(x1, x2)
    print("decode: identical bytes (and identical float outputs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
