#!/usr/bin/env python
"""The shipped demo adapters measured through dreamshell itself (the generator and the LoRA/embedding
folders a user gets), by pixels (dreamshell/demo/concepts.py):

    python bench/eval_demo_adapters.py            # 30 prompts x 2 seeds each way, ~3 min on 2 cores
    python bench/eval_demo_adapters.py --seeds 1 --prompts 6   # the CI-sized sample (tests/test_demo_adapters.py)

- LoRA `demo_cross`: `a C cross on a B background <lora:demo_cross:1>` draws a cross; without the tag it
  does not. Base prompts (24 of the usual 90) with the tag vs without: colour/shape/background adherence.
- Embedding `yolk`: `a yolk on a B background` draws a yellow circle; with the embeddings folder empty,
  the same words are plain text.
- The demo VAE as one LDM-layout file (models/vae/demo-vae.safetensors) through `--vae`: the same bytes.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from dreamshell.demo.adapters_eval import measure  # noqa: E402


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seeds", type=int, default=2)
    ap.add_argument("--prompts", type=int, default=None, help="prompts per concept (default: all 30)")
    ap.add_argument("--base_prompts", type=int, default=24)
    args = ap.parse_args()
    out = measure(args.seeds, args.prompts, args.base_prompts)
    ok = (out["cross with the tag"][0] >= 0.8 and out["cross without the tag"][0] <= 0.1
          and out["yolk with the embedding"][0] >= 0.8 and out["yolk without the embedding"][0] <= 0.1
          and out["demo VAE from one file: same bytes"][0] == 1.0)
    print("goals (>= 80 % with, <= 10 % without, same VAE bytes):", "met" if ok else "NOT met")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
