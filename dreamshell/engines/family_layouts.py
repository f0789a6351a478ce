"""Tensor names and shapes of the files people download for SD 3 / 3.5 and FLUX.1, in their original
layouts (Stability's MMDiT `sd3_impls.py` / `mmditx.py`, Black Forest Labs' `flux/model.py`, as ComfyUI
and diffusers' single-file converters read them), for any width and depth. Used by
make_family_checkpoints.py to write random-weight files and by the tests to write headers.

No torch here: shapes only.
"""

from __future__ import annotations

# published shapes (transformer configs of stabilityai/stable-diffusion-3-medium-diffusers,
# stable-diffusion-3.5-medium, stable-diffusion-3.5-large, black-forest-labs/FLUX.1-dev and -schnell)
SD3_SHAPES = {
    "sd3-medium": dict(width=1536, depth=24, pos=192, dual=(), qk_norm=False),
    "sd35-medium": dict(width=1536, depth=24, pos=384, dual=tuple(range(13)), qk_norm=True),
    "sd35-large": dict(width=2432, depth=38, pos=192, dual=(), qk_norm=True),
}
FLUX_SHAPES = dict(width=3072, double=19, single=38, mlp_ratio=4, head_dim=128, in_channels=64,
                   context=4096, pooled=768)


def _linear(name: str, out: int, inp: int, bias: bool = True) -> dict:
    shapes = {f"{name}.weight": (out, inp)}
    if bias:
        shapes[f"{name}.bias"] = (out,)
    return shapes


def sd3_transformer(width: int, depth: int, pos: int, dual=(), qk_norm: bool = True, head_dim: int = 64,
                    latent: int = 16, patch: int = 2, context: int = 4096, pooled: int = 2048,
                    prefix: str = "model.diffusion_model.") -> dict:
    """MMDiT / MMDiT-X keys: x_embedder, pos_embed, t/y embedders, context_embedder, joint_blocks (the
    last context block is pre-only: modulation for shift/scale and qkv, no projection or MLP), final layer."""
    s = {"pos_embed": (1, pos * pos, width), "x_embedder.proj.weight": (width, latent, patch, patch),
         "x_embedder.proj.bias": (width,)}
    s.update(_linear("t_embedder.mlp.0", width, 256))
    s.update(_linear("t_embedder.mlp.2", width, width))
    s.update(_linear("y_embedder.mlp.0", width, pooled))
    s.update(_linear("y_embedder.mlp.2", width, width))
    s.update(_linear("context_embedder", width, context))
    for i in range(depth):
        for side in ("x_block", "context_block"):
            b = f"joint_blocks.{i}.{side}"
            last_context = side == "context_block" and i == depth - 1
            two = side == "x_block" and i in dual
            mods = 2 if last_context else (9 if two else 6)
            s.update(_linear(f"{b}.adaLN_modulation.1", mods * width, width))
            attns = ("attn", "attn2") if two else ("attn",)
            for attn in attns:
                s.update(_linear(f"{b}.{attn}.qkv", 3 * width, width))
                if qk_norm:
                    s[f"{b}.{attn}.ln_q.weight"] = (head_dim,)
                    s[f"{b}.{attn}.ln_k.weight"] = (head_dim,)
                if not last_context:
                    s.update(_linear(f"{b}.{attn}.proj", width, width))
            if not last_context:
                s.update(_linear(f"{b}.mlp.fc1", 4 * width, width))
                s.update(_linear(f"{b}.mlp.fc2", width, 4 * width))
    s.update(_linear("final_layer.linear", patch * patch * latent, width))
    s.update(_linear("final_layer.adaLN_modulation.1", 2 * width, width))
    return {prefix + k: v for k, v in s.items()}


def sd3_kind_transformer(kind: str, prefix: str = "model.diffusion_model.") -> dict:
    return sd3_transformer(**SD3_SHAPES[kind.replace("-turbo", "")], prefix=prefix)


def flux_transformer(guidance: bool, width: int = 3072, double: int = 19, single: int = 38, mlp_ratio: int = 4,
                     head_dim: int = 128, in_channels: int = 64, context: int = 4096, pooled: int = 768,
                     prefix: str = "") -> dict:
    """FLUX.1 keys (BFL's flux/model.py): img_in, time_in, vector_in, guidance_in (dev only), txt_in,
    double_blocks (image and text streams), single_blocks (fused qkv+MLP), final_layer."""
    mlp = width * mlp_ratio
    s = _linear("img_in", width, in_channels)
    s.update(_linear("time_in.in_layer", width, 256))
    s.update(_linear("time_in.out_layer", width, width))
    s.update(_linear("vector_in.in_layer", width, pooled))
    s.update(_linear("vector_in.out_layer", width, width))
    if guidance:
        s.update(_linear("guidance_in.in_layer", width, 256))
        s.update(_linear("guidance_in.out_layer", width, width))
    s.update(_linear("txt_in", width, context))
    for i in range(double):
        for stream in ("img", "txt"):
            b = f"double_blocks.{i}.{stream}"
            s.update(_linear(f"{b}_mod.lin", 6 * width, width))
            s.update(_linear(f"{b}_attn.qkv", 3 * width, width))
            s[f"{b}_attn.norm.query_norm.scale"] = (head_dim,)
            s[f"{b}_attn.norm.key_norm.scale"] = (head_dim,)
            s.update(_linear(f"{b}_attn.proj", width, width))
            s.update(_linear(f"{b}_mlp.0", mlp, width))
            s.update(_linear(f"{b}_mlp.2", width, mlp))
    for i in range(single):
        b = f"single_blocks.{i}"
        s.update(_linear(f"{b}.linear1", 3 * width + mlp, width))
        s.update(_linear(f"{b}.linear2", width, width + mlp))
        s[f"{b}.norm.query_norm.scale"] = (head_dim,)
        s[f"{b}.norm.key_norm.scale"] = (head_dim,)
        s.update(_linear(f"{b}.modulation.lin", 3 * width, width))
    s.update(_linear("final_layer.linear", in_channels, width))
    s.update(_linear("final_layer.adaLN_modulation.1", 2 * width, width))
    return {prefix + k: v for k, v in s.items()}


def clip_text(width: int, layers: int, projection: bool = True, prefix: str = "", vocab: int = 49408,
              positions: int = 77) -> dict:
    """A transformers CLIP text model's keys with the text_model. prefix, as ComfyUI's clip_l.safetensors
    and clip_g.safetensors (and the SD 3 single files under text_encoders.clip_*.transformer.) keep them."""
    s = {"text_model.embeddings.token_embedding.weight": (vocab, width),
         "text_model.embeddings.position_embedding.weight": (positions, width),
         "text_model.final_layer_norm.weight": (width,), "text_model.final_layer_norm.bias": (width,)}
    for i in range(layers):
        b = f"text_model.encoder.layers.{i}"
        for proj in ("q_proj", "k_proj", "v_proj", "out_proj"):
            s.update(_linear(f"{b}.self_attn.{proj}", width, width))
        for norm in ("layer_norm1", "layer_norm2"):
            s[f"{b}.{norm}.weight"] = (width,)
            s[f"{b}.{norm}.bias"] = (width,)
        s.update(_linear(f"{b}.mlp.fc1", 4 * width, width))
        s.update(_linear(f"{b}.mlp.fc2", width, 4 * width))
    if projection:
        s["text_projection.weight"] = (width, width)
    return {prefix + k: v for k, v in s.items()}


def t5_encoder(width: int = 4096, blocks: int = 24, ff: int = 10240, heads: int = 64, head_dim: int = 64,
               vocab: int = 32128, buckets: int = 32, prefix: str = "") -> dict:
    """transformers' T5EncoderModel keys (T5 v1.1: gated-GELU feed-forward, relative attention bias in the
    first block), as t5xxl_fp16.safetensors keeps them."""
    inner = heads * head_dim
    s = {"shared.weight": (vocab, width), "encoder.final_layer_norm.weight": (width,),
         "encoder.block.0.layer.0.SelfAttention.relative_attention_bias.weight": (buckets, heads)}
    for i in range(blocks):
        b = f"encoder.block.{i}.layer"
        for m in ("q", "k", "v"):
            s[f"{b}.0.SelfAttention.{m}.weight"] = (inner, width)
        s[f"{b}.0.SelfAttention.o.weight"] = (width, inner)
        s[f"{b}.0.layer_norm.weight"] = (width,)
        s[f"{b}.1.DenseReluDense.wi_0.weight"] = (ff, width)
        s[f"{b}.1.DenseReluDense.wi_1.weight"] = (ff, width)
        s[f"{b}.1.DenseReluDense.wo.weight"] = (width, ff)
        s[f"{b}.1.layer_norm.weight"] = (width,)
    return {prefix + k: v for k, v in s.items()}


def ldm_vae(latent: int = 16, channels=(128, 256, 512, 512), layers: int = 2, quant_conv: bool = False,
            prefix: str = "") -> dict:
    """The original (LDM) VAE keys: FLUX.1's ae.safetensors and SD 3's first_stage_model (16 latent
    channels, no quant convs), SD 1.x/XL's (4 channels, with them)."""
    s = {}

    def resnet(name, cin, cout):
        s.update({f"{name}.norm1.weight": (cin,), f"{name}.norm1.bias": (cin,),
                  f"{name}.conv1.weight": (cout, cin, 3, 3), f"{name}.conv1.bias": (cout,),
                  f"{name}.norm2.weight": (cout,), f"{name}.norm2.bias": (cout,),
                  f"{name}.conv2.weight": (cout, cout, 3, 3), f"{name}.conv2.bias": (cout,)})
        if cin != cout:
            s.update({f"{name}.nin_shortcut.weight": (cout, cin, 1, 1), f"{name}.nin_shortcut.bias": (cout,)})

    def mid(part, c):
        resnet(f"{part}.mid.block_1", c, c)
        a = f"{part}.mid.attn_1"
        s.update({f"{a}.norm.weight": (c,), f"{a}.norm.bias": (c,)})
        for m in ("q", "k", "v", "proj_out"):
            s.update({f"{a}.{m}.weight": (c, c, 1, 1), f"{a}.{m}.bias": (c,)})
        resnet(f"{part}.mid.block_2", c, c)

    s.update({"encoder.conv_in.weight": (channels[0], 3, 3, 3), "encoder.conv_in.bias": (channels[0],)})
    cin = channels[0]
    for i, c in enumerate(channels):
        for j in range(layers):
            resnet(f"encoder.down.{i}.block.{j}", cin, c)
            cin = c
        if i < len(channels) - 1:
            s.update({f"encoder.down.{i}.downsample.conv.weight": (c, c, 3, 3),
                      f"encoder.down.{i}.downsample.conv.bias": (c,)})
    mid("encoder", channels[-1])
    s.update({"encoder.norm_out.weight": (channels[-1],), "encoder.norm_out.bias": (channels[-1],),
              "encoder.conv_out.weight": (2 * latent, channels[-1], 3, 3), "encoder.conv_out.bias": (2 * latent,)})
    s.update({"decoder.conv_in.weight": (channels[-1], latent, 3, 3), "decoder.conv_in.bias": (channels[-1],)})
    mid("decoder", channels[-1])
    cin = channels[-1]
    for i in reversed(range(len(channels))):
        c = channels[i]
        for j in range(layers + 1):
            resnet(f"decoder.up.{i}.block.{j}", cin, c)
            cin = c
        if i > 0:
            s.update({f"decoder.up.{i}.upsample.conv.weight": (c, c, 3, 3), f"decoder.up.{i}.upsample.conv.bias": (c,)})
    s.update({"decoder.norm_out.weight": (channels[0],), "decoder.norm_out.bias": (channels[0],),
              "decoder.conv_out.weight": (3, channels[0], 3, 3), "decoder.conv_out.bias": (3,)})
    if quant_conv:
        s.update({"quant_conv.weight": (2 * latent, 2 * latent, 1, 1), "quant_conv.bias": (2 * latent,),
                  "post_quant_conv.weight": (latent, latent, 1, 1), "post_quant_conv.bias": (latent,)})
    return {prefix + k: v for k, v in s.items()}


def sd3_single_file(kind: str, encoders=("clip_l", "clip_g"), t5: bool = False) -> dict:
    """An SD 3 / 3.5 single file: transformer + VAE (first_stage_model.), text encoders under
    text_encoders.<name>.transformer. when bundled (Stability's and ComfyUI's layout)."""
    s = sd3_kind_transformer(kind)
    s.update(ldm_vae(prefix="first_stage_model."))
    if "clip_l" in encoders:
        s.update(clip_text(768, 12, prefix="text_encoders.clip_l.transformer."))
    if "clip_g" in encoders:
        s.update(clip_text(1280, 32, prefix="text_encoders.clip_g.transformer."))
    if t5:
        s.update(t5_encoder(prefix="text_encoders.t5xxl.transformer."))
    return s
