"""The prompt's own syntax: `[negative]` groups and weighted sub-prompts `a:0.25 b:0.75` (stdlib only).

The attention syntax inside a sub-prompt (`(word)1.3`, `word+`) is left as text for compel.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from .limits import MAX_PAREN_DEPTH, MAX_PAREN_GROUPS
from .safetext import quoted


class PromptError(ValueError):
    """A prompt the generator cannot read; the message says what and why."""


@dataclass(frozen=True)
class PromptParts:
    positive: tuple[tuple[str, float], ...]   # (text, weight) sub-prompts, weights as written
    negative: str

    def normalized(self, skip_normalize: bool = False) -> tuple[tuple[str, float], ...]:
        """Weights scaled to sum 1 (the anchor's blend rule) unless skip_normalize (`-x`)."""
        if skip_normalize or len(self.positive) == 1:
            return self.positive
        total = sum(w for _, w in self.positive)
        return tuple((t, w / total) for t, w in self.positive)


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


def split_prompt(prompt: str) -> PromptParts:
    """Parse negatives and weighted sub-prompts; raise PromptError on text that cannot mean anything."""
    positive, negative = extract_negative(prompt)
    check_parentheses(positive)
    check_parentheses(negative, "the negative prompt")
    if ":" not in positive.replace("\\:", ""):
        return PromptParts(((positive.replace("\\:", ":"), 1.0),), negative)
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
    return PromptParts(tuple(parts), negative)
