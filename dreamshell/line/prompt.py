"""The prompt's own syntax: `[negative]` groups, weighted sub-prompts `a:0.25 b:0.75` (a blend of their
conditioning), A1111's `a :1.2 AND b :0.8` (composable diffusion: each part's guidance added, weights as
written) and `<lora:NAME:WEIGHT>` tags (stdlib only).

A LoRA tag applies to the whole image wherever it stands (as in A1111) and is taken out of the text
that reaches the text encoder.

The attention syntax inside a sub-prompt (`(word)1.3`, `word+`) is left as text for compel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache

from .errors import UserError
from .limits import MAX_LORAS, MAX_PAREN_DEPTH, MAX_PAREN_GROUPS
from .safetext import quoted


class PromptError(UserError):
    """A prompt the generator cannot read; the message says what and why."""


@dataclass(frozen=True)
class LoraTag:
    """`<lora:NAME:WEIGHT>`: the LoRA file NAME (its stem in the LoRA folder) at WEIGHT."""

    name: str
    weight: float = 1.0


@dataclass(frozen=True)
class PromptParts:
    positive: tuple[tuple[str, float], ...]   # (text, weight) sub-prompts, weights as written
    negative: str
    loras: tuple[LoraTag, ...] = ()
    combine: bool = False   # A1111's AND: each part's noise prediction combined, uncond + sum(w x cfg x (c - u))

    def normalized(self, skip_normalize: bool = False) -> tuple[tuple[str, float], ...]:
        """Weights scaled to sum 1 (the original shell's blend rule) unless skip_normalize (`-x`); AND parts keep
        their weights (A1111 does not normalise them)."""
        if skip_normalize or self.combine or len(self.positive) == 1:
            return self.positive
        total = sum(w for _, w in self.positive)
        return tuple((t, w / total) for t, w in self.positive)


LORA_TAG = re.compile(r"<\s*lora\s*:([^<>]*)>", re.I)
_OTHER_NETWORK = re.compile(r"<\s*(lyco|lycoris|locon|loha|hypernet)\s*:[^<>]*>", re.I)
MAX_LORA_WEIGHT = 10.0


def _lora_tag(body: str, tag: str) -> LoraTag:
    parts = [p.strip() for p in body.split(":")]
    name = parts[0]
    rule = "write <lora:NAME> or <lora:NAME:WEIGHT>, e.g. <lora:demo_cross:0.8>"
    if not name:
        raise PromptError(f"{quoted(tag)} has no LoRA name; {rule}")
    if len(parts) > 2:
        raise PromptError(f"{quoted(tag)}: dreamshell takes one weight per LoRA (A1111's separate text-encoder "
                          f"and UNet weights are not supported); {rule}")
    weight = 1.0
    if len(parts) == 2 and parts[1]:
        try:
            weight = float(parts[1])
        except ValueError:
            raise PromptError(f"{quoted(tag)}: the weight {quoted(parts[1])} is not a number; {rule}") from None
        if not -MAX_LORA_WEIGHT <= weight <= MAX_LORA_WEIGHT:  # also refuses nan and inf
            raise PromptError(f"{quoted(tag)}: LoRA weights go from {-MAX_LORA_WEIGHT:g} to {MAX_LORA_WEIGHT:g}")
    return LoraTag(name, weight)


def extract_loras(prompt: str) -> tuple[str, tuple[LoraTag, ...]]:
    """(the prompt without its `<lora:...>` tags, the tags in order). Each LoRA may be tagged once."""
    other = _OTHER_NETWORK.search(prompt)
    if other:
        raise PromptError(f"{quoted(other.group(0))}: {other.group(1)} networks are not supported by dreamshell "
                          "(LoRAs are: <lora:NAME:WEIGHT>); remove the tag")
    unclosed = re.search(r"<\s*lora\s*:[^<>]*(?=<|$)", prompt, re.I)
    if unclosed:
        raise PromptError(f"the LoRA tag {quoted(unclosed.group(0), 40)} is not closed: end it with '>' "
                          "(<lora:NAME:WEIGHT>)")
    depth = 0
    for i, ch in enumerate(prompt):
        depth += ch == "["
        depth -= ch == "]"
        if depth > 0 and LORA_TAG.match(prompt, i):
            raise PromptError(f"{quoted(LORA_TAG.match(prompt, i).group(0))} stands in the [negative prompt]; a LoRA "
                              "applies to the whole image: put its tag in the prompt")
    tags: list[LoraTag] = []
    for m in LORA_TAG.finditer(prompt):
        tag = _lora_tag(m.group(1), m.group(0))
        if any(t.name == tag.name for t in tags):
            raise PromptError(f"LoRA {quoted(tag.name)} is tagged twice; tag each LoRA once")
        tags.append(tag)
    if len(tags) > MAX_LORAS:
        raise PromptError(f"{len(tags)} LoRA tags; at most {MAX_LORAS} in one prompt")
    if not tags:
        return prompt, ()
    return re.sub(r"\s+", " ", LORA_TAG.sub(" ", prompt)).strip(), tuple(tags)


# A1111's AND (prompt_parser.py re_AND, re_weight): parts split on the word AND, each with an optional `:weight`
_AND = re.compile(r"\bAND\b")
_AND_PART = re.compile(r"^(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$", re.S)
MAX_AND_PARTS = 8

# one sub-prompt: text (with `\:` allowed) followed by `:weight` or the end of the line
_SUBPROMPT = re.compile(r"(?P<text>(?:\\:|[^:])+)(?::(?P<weight>-?\d+(?:\.\d+)?)\s*|:?\s*$)")


def extract_negative(prompt: str) -> tuple[str, str]:
    """Split `a cat [blurry] [dark]` into ("a cat", "blurry dark"); brackets must balance."""
    positive, negative, depth, current = [], [], 0, []
    for ch in prompt:
        if ch == "[":
            if depth == 0:
                current = []
            else:
                current.append(ch)
            depth += 1
        elif ch == "]":
            if depth == 0:
                raise PromptError("']' without '[': the negative prompt goes inside [brackets]")
            depth -= 1
            if depth == 0:
                negative.append("".join(current).strip())
            else:
                current.append(ch)
        elif depth:
            current.append(ch)
        else:
            positive.append(ch)
    if depth:
        raise PromptError("'[' without ']': close the negative prompt with ']'")
    pos = re.sub(r"\s+", " ", "".join(positive)).strip()
    return pos, " ".join(n for n in negative if n)


def _near(text: str, i: int) -> str:
    return quoted(text[max(0, i - 20):i + 20], 44)


def check_parentheses(text: str, where: str = "the prompt") -> None:
    """Balanced ( ) at most MAX_PAREN_DEPTH deep and MAX_PAREN_GROUPS in all, before compel parses it.

    compel's parser takes seconds for `((((( )))))` and minutes for six unclosed '(' (exponential).
    """
    opened: list[int] = []
    groups = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == "\\":
            i += 2  # \( and \) are literal parentheses
            continue
        if ch == "(":
            opened.append(i)
            groups += 1
            if len(opened) > MAX_PAREN_DEPTH:
                raise PromptError(f"'(' nested {len(opened)} deep in {where} near {_near(text, i)}; at most "
                                  f"{MAX_PAREN_DEPTH} deep (write \\( for a literal parenthesis)")
        elif ch == ")":
            if not opened:
                raise PromptError(f"unbalanced ')' in {where} near {_near(text, i)}: "
                                  "write \\) for a literal parenthesis")
            opened.pop()
        i += 1
    if opened:
        raise PromptError(f"unbalanced '(' in {where} near {_near(text, opened[-1])}: close it with ')' "
                          "or write \\( for a literal parenthesis")
    if groups > MAX_PAREN_GROUPS:
        raise PromptError(f"{groups} ( ) groups in {where}; at most {MAX_PAREN_GROUPS} "
                          "(each one slows the prompt parser)")


@lru_cache(maxsize=512)
def split_prompt(prompt: str) -> PromptParts:
    """Parse LoRA tags, negatives and weighted sub-prompts; raise PromptError on text that cannot mean
    anything. Parsed once per prompt (the parser, the library, the engine and the formats all ask)."""
    return parse_prompt(prompt)


def parse_prompt(prompt: str) -> PromptParts:
    """split_prompt without the cache."""
    prompt, loras = extract_loras(prompt)
    positive, negative = extract_negative(prompt)
    check_parentheses(positive)
    check_parentheses(negative, "the negative prompt")
    if _AND.search(positive):
        return PromptParts(_and_parts(positive), negative, loras, combine=True)
    if ":" not in positive.replace("\\:", ""):
        return PromptParts(((positive.replace("\\:", ":"), 1.0),), negative, loras)
    parts: list[tuple[str, float]] = []
    pos = 0
    while pos < len(positive):
        m = _SUBPROMPT.match(positive, pos)
        if not m or m.end() == pos:
            raise PromptError(f"cannot read the weighted sub-prompt at {quoted(positive[pos:], 30)}: "
                              "write 'text:weight text:weight', with '\\:' for a literal colon")
        text = m.group("text").strip().replace("\\:", ":")
        weight = float(m.group("weight")) if m.group("weight") is not None else 1.0
        if text:
            parts.append((text, weight))
        pos = m.end()
    if not parts:
        raise PromptError("the prompt has weights but no text")
    if len(parts) > 1 and abs(sum(w for _, w in parts)) < 1e-9:
        raise PromptError("the sub-prompt weights add up to 0: they cannot be normalized (use -x to skip)")
    return PromptParts(tuple(parts), negative, loras)


def _and_parts(positive: str) -> tuple[tuple[str, float], ...]:
    """`a cat :1.2 AND a dog :0.8` -> (("a cat", 1.2), ("a dog", 0.8)), as A1111 reads it (weight 1 when none)."""
    rule = "write 'text AND text', each part with an optional ' :weight' (A1111's composable diffusion)"
    parts = []
    for piece in _AND.split(positive):
        m = _AND_PART.match(piece)
        text = m.group(1).strip()
        if not text:
            raise PromptError(f"an AND part of {quoted(positive, 40)} is empty; {rule}")
        if ":" in text.replace("\\:", ""):
            raise PromptError(f"{quoted(text, 40)}: an AND part takes one weight, at its end; a blend (a:0.5 b:0.5) "
                              f"cannot stand in it (write '\\:' for a literal colon); {rule}")
        parts.append((text.replace("\\:", ":"), float(m.group(2)) if m.group(2) is not None else 1.0))
    if len(parts) > MAX_AND_PARTS:
        raise PromptError(f"{len(parts)} AND parts: at most {MAX_AND_PARTS} (each is one more UNet pass a step)")
    return tuple(parts)
