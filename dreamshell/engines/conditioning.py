"""Prompt conditioning on the resident pipeline: the prompt's parts encoded (plain CLIP, or compel for
attention syntax and long prompts), blended sub-prompts, clip skip, `-t` tokens and the prompt's notes
(imports torch through the pipeline)."""

from __future__ import annotations

import re

from ..line.prompt import split_prompt
from ..line.request import DreamRequest
from .adapters import clip_skip
from .composable import KEY as AND_KEY
from .composable import AndGuidance
from .protocols import GenerationError

CLIP_CHUNK = 75  # tokens CLIP reads at a time, between its start and end tokens
_ATTENTION = re.compile(r"[()]|\.(and|blend|swap)\(|[\w)]\+|[\w)]-+(?=[\s,]|$)")


class Conditioner:
    """Turns prompts into embeddings for one generator's resident pipeline (`reset()` when it changes)."""

    def __init__(self, generator):
        self.gen = generator
        self._compel = None

    def reset(self) -> None:
        self._compel = None

    @property
    def pipe(self):
        return self.gen._pipes["txt2img"]

    @property
    def tokenizer(self):
        return self.pipe.tokenizer or self.pipe.tokenizer_2  # the SDXL refiner has only the second

    def token_count(self, text: str) -> int:
        return len(self.tokenizer(text, add_special_tokens=False).input_ids)

    # ----- what a prompt says before it is drawn

    def encoder_texts(self, prompt: str, files=None) -> list[tuple[str, str]]:
        """(label, text as the tokenizer sees it) for each part of the prompt; the prompt's embeddings
        are loaded first, so their words count as the tokens they are."""
        if self.gen.spec is not None:
            self.gen.adapters.ensure_embeddings(self.pipe, self.gen.files(prompt, None, files).embeddings,
                                                self.gen.is_sdxl)
        parts = split_prompt(prompt)
        out = [(f"prompt (weight {w:g})", self._as_tokens(t)) for t, w in parts.positive]
        if parts.negative:
            out.append(("negative", self._as_tokens(parts.negative)))
        return out

    def _as_tokens(self, text: str) -> str:
        """The text with each embedding's word as its vectors' tokens (a 2-vector word is 2 tokens)."""
        text = self.gen.adapters.encoder_text(text)
        pipe = self.gen._pipes.get("txt2img")
        if self.gen.adapters.embeddings and pipe is not None and hasattr(pipe, "maybe_convert_prompt"):
            text = pipe.maybe_convert_prompt(text, self.tokenizer)
        return text

    def prompt_notes(self, prompt: str, files=None) -> list[str]:
        """Visible notes about a prompt: long ones are chunked, never silently cut; a LoRA whose file
        has layers the model lacks says so (its LoRAs and embeddings are loaded here, before the first
        image)."""
        notes = []
        if self.gen.spec is not None:
            notes += self.gen.adapters.load_loras(self.pipe, self.gen.files(prompt, None, files).loras,
                                                  self.gen.spec.name)
        for _, text in self.encoder_texts(prompt, files):
            n = self.token_count(text)
            if n > CLIP_CHUNK:
                chunks = -(-n // CLIP_CHUNK)
                notes.append(f"note: '{text[:30]}...' is {n} tokens; CLIP reads {CLIP_CHUNK} at a time, "
                             f"so it is encoded in {chunks} chunks (nothing is dropped)")
        return notes

    def tokenization(self, prompt: str, files=None) -> str:
        """The tokens of each part of the prompt, with those past CLIP's limit marked (`-t`)."""
        lines = []
        for label, text in self.encoder_texts(prompt, files):
            ids = self.tokenizer(text, add_special_tokens=False).input_ids
            toks = [self.tokenizer.convert_ids_to_tokens(i).replace("</w>", " ").strip() for i in ids]
            shown = " ".join(toks[:CLIP_CHUNK])
            past = " ".join(toks[CLIP_CHUNK:])
            lines.append(f"{label}: {len(toks)} tokens: {shown}" + (f" | past {CLIP_CHUNK}: {past}" if past else ""))
        return "\n".join(lines)

    # ----- embeddings for the pipeline

    def _needs_compel(self, texts: list[str]) -> bool:
        return any(_ATTENTION.search(t) or self.token_count(t) > CLIP_CHUNK for t in texts)

    def _get_compel(self):
        if self._compel is None:
            try:
                from compel import Compel, ReturnedEmbeddingsType
            except ImportError:
                raise GenerationError("attention syntax and prompts over 75 tokens need the 'compel' "
                                      "package: pip install compel") from None
            pipe, device = self.pipe, self.gen.device
            ti = {}
            try:
                from compel import DiffusersTextualInversionManager
                ti = {"textual_inversion_manager": DiffusersTextualInversionManager(pipe)}
            except ImportError:
                pass
            if self.gen.kind == "sdxl-refiner":
                self._compel = Compel(
                    tokenizer=pipe.tokenizer_2, text_encoder=pipe.text_encoder_2,
                    returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
                    requires_pooled=True, truncate_long_prompts=False, device=device, **ti)
            elif self.gen.is_sdxl:
                self._compel = Compel(
                    tokenizer=[pipe.tokenizer, pipe.tokenizer_2], text_encoder=[pipe.text_encoder, pipe.text_encoder_2],
                    returned_embeddings_type=ReturnedEmbeddingsType.PENULTIMATE_HIDDEN_STATES_NON_NORMALIZED,
                    requires_pooled=[False, True], truncate_long_prompts=False, device=device, **ti)
            else:
                self._compel = Compel(tokenizer=pipe.tokenizer, text_encoder=pipe.text_encoder,
                                      truncate_long_prompts=False, device=device, **ti)
        return self._compel

    def _encode(self, texts: list[str]):
        """Embeddings for each text, all of one length: [(embeds, pooled or None), ...]."""
        torch, pipe, device = self.gen.torch, self.pipe, self.gen.device
        with torch.no_grad():
            if self._needs_compel(texts):
                compel = self._get_compel()
                out = [compel(t) for t in texts]
                if self.gen.is_sdxl:
                    embeds = compel.pad_conditioning_tensors_to_same_length([e for e, _ in out])
                    return list(zip(embeds, [p for _, p in out]))
                return [(e, None) for e in compel.pad_conditioning_tensors_to_same_length(out)]
            if self.gen.is_sdxl:
                result = []
                for t in texts:
                    e, _, p, _ = pipe.encode_prompt(prompt=t, device=device, num_images_per_prompt=1,
                                                    do_classifier_free_guidance=False)
                    result.append((e, p))
                return result
            return [(pipe.encode_prompt(t, device, 1, False)[0], None) for t in texts]

    def conditioning(self, request: DreamRequest) -> dict:
        """The pipeline's prompt arguments for a request: a weighted blend of its sub-prompts, its negative; for
        A1111's AND, the parts' embeddings under composable.KEY (the generator takes them out)."""
        parts = split_prompt(request.prompt)
        positives = parts.normalized(request.skip_normalize)
        pipe, adapters = self.pipe, self.gen.adapters
        texts = [adapters.encoder_text(t) for t, _ in positives] + [adapters.encoder_text(parts.negative)]
        # at CFG <= 1 the pipelines make no unconditional pass: the negative is not encoded (issue 17; on SDXL
        # both text encoders once more). A1111's AND still guides against it (composable.py); through compel
        # the negative's length pads the positives, so it stays there (the same embeddings as before).
        negative = parts.combine or request.cfg_scale > 1 or self._needs_compel(texts)
        if not negative:
            texts = texts[:-1]
        with clip_skip([getattr(pipe, "text_encoder", None), getattr(pipe, "text_encoder_2", None)], request.clip_skip):
            encoded = self._encode(texts)
        if not negative:
            encoded.append((None, None))
        if parts.combine:   # A1111's AND: the parts' guidance is combined in the UNet call (composable.py)
            guidance = AndGuidance([e for e, _ in encoded[:-1]], [w for _, w in positives], encoded[-1][0],
                                   [p for _, p in encoded[:-1]] if self.gen.is_sdxl else None, encoded[-1][1])
            kwargs = {"prompt_embeds": encoded[0][0], "negative_prompt_embeds": encoded[-1][0], AND_KEY: guidance}
            if self.gen.is_sdxl:
                kwargs.update(pooled_prompt_embeds=encoded[0][1], negative_pooled_prompt_embeds=encoded[-1][1])
            return kwargs
        cond = sum(w * e for (_, w), (e, _) in zip(positives, encoded[:-1]))
        kwargs = {"prompt_embeds": cond, "negative_prompt_embeds": encoded[-1][0]}
        if self.gen.is_sdxl:
            kwargs["pooled_prompt_embeds"] = sum(w * p for (_, w), (_, p) in zip(positives, encoded[:-1]))
            kwargs["negative_pooled_prompt_embeds"] = encoded[-1][1]
        return kwargs
