"""Prompt syntax between A1111 (`(x:1.3)`, `[x]`, `[a:b:0.5]`, `AND`, `BREAK`, `<lora:..>`) and
dreamshell's (compel's `(x)1.3`, `word+`; `a:0.3 b:0.7` blends; `[x]` negative; `\\:` a literal colon).

A1111's rules (its wiki "Features": attention/emphasis, prompt editing, alternating words, composable
diffusion, BREAK): `(x)` multiplies attention by 1.1, `[x]` divides it by 1.1, `(x:w)` sets it,
`\\(` is a literal parenthesis. Each translation that cannot be exact is kept as close as honest and
named in a note. Stdlib only.
"""

from __future__ import annotations

import re

from ..prompt import split_prompt
from ..switches import format_number

# private-use stand-ins for escaped characters while the syntax is read
_ESC = {"\\(": "\ue000", "\\)": "\ue001", "\\[": "\ue002", "\\]": "\ue003", "\\\\": "\ue004"}
_UNESC = {"\ue000": "\\(", "\ue001": "\\)", "\ue002": "\\(", "\ue003": "\\)", "\ue004": "\\"}
_EXTRA_NET = re.compile(r"<(lora|lyco|hypernet):([^:>]*)(?::([^:>]*))?(?::[^>]*)?>", re.I)
_AND = re.compile(r"\bAND\b")
_BREAK = re.compile(r"\s*\bBREAK\b\s*")
_AND_WEIGHT = re.compile(r"^(.*?)(?:\s*:\s*([-+]?(?:\d+\.?\d*|\.\d+)))?\s*$", re.S)
_INNER_BRACKET = re.compile(r"\[([^\[\]]*)\]")
_NUMBER = r"\s*([-+]?(?:\d+\.?\d*|\.\d+))\s*"


def _weight(w: float) -> str:
    return format_number(round(w, 4))


def _edit(content: str, notes: list[str]) -> str | None:
    """Resolve one `[...]` group: prompt editing or alternation to one text; None for emphasis."""
    if "|" in content:
        options = content.split("|")
        notes.append(f"[{content}] (A1111: alternate each step) kept as its first option '{options[0].strip()}'")
        return options[0]
    m = re.fullmatch(r"(.*?):(.*?):" + _NUMBER, content, re.S) or re.fullmatch(r"()(.*?):" + _NUMBER, content, re.S)
    if not m:
        return None
    before, after, when = m.group(1), m.group(2), float(m.group(3))
    fraction = when if when < 1 else None
    late = fraction is not None and fraction <= 0.5
    kept = after if late or fraction is None else before
    share = "from the step named on" if fraction is None else f"for {round((1 - fraction if late else fraction) * 100)}% of the steps"
    notes.append(f"[{content}] (A1111 prompt editing: '{before}' then '{after}' from {m.group(3)}) kept as "
                 f"'{kept.strip()}', the part A1111 uses {share}")
    return kept


def _attention(text: str) -> list[tuple[str, float]]:
    """A1111's emphasis: runs of (text, weight). Round and square brackets nest independently and
    unmatched ones close at the end, as A1111 reads them; an unmatched closer is literal text."""
    runs: list[list] = []
    rounds: list[int] = []
    squares: list[int] = []
    token = re.compile(r"\(|\[|:" + _NUMBER + r"\)|\)|\]|[^()\[\]:]+|:")

    def scale(start: int, factor: float) -> None:
        for run in runs[start:]:
            run[1] *= factor
    for m in token.finditer(text):
        tok = m.group(0)
        if tok == "(":
            rounds.append(len(runs))
        elif tok == "[":
            squares.append(len(runs))
        elif m.group(1) is not None and rounds:
            scale(rounds.pop(), float(m.group(1)))
        elif tok == ")" and rounds:
            scale(rounds.pop(), 1.1)
        elif tok == "]" and squares:
            scale(squares.pop(), 1 / 1.1)
        elif tok in (")", "]"):
            runs.append(["\ue001" if tok == ")" else "\ue003", 1.0])
        else:
            runs.append([tok, 1.0])
    for start in rounds:
        scale(start, 1.1)
    for start in squares:
        scale(start, 1 / 1.1)
    merged: list[tuple[str, float]] = []
    for t, w in runs:
        if merged and abs(merged[-1][1] - w) < 1e-9:
            merged[-1] = (merged[-1][0] + t, w)
        else:
            merged.append((t, w))
    return merged


def _compel(runs: list[tuple[str, float]]) -> str:
    out = []
    for text, w in runs:
        text = text.replace("(", "\\(").replace(")", "\\)").replace("[", "\\(").replace("]", "\\)")
        text = text.replace(":", "\\:")
        if abs(w - 1) < 1e-9 or not text.strip():
            out.append(text)
        else:
            lead, body, trail = re.match(r"(\s*)(.*?)(\s*)$", text, re.S).groups()
            out.append(f"{lead}({body}){_weight(w)}{trail}")
    text = "".join(out)
    for k, v in _UNESC.items():
        text = text.replace(k, v)
    return re.sub(r"\s+", " ", text).strip()


def _part(text: str, notes: list[str]) -> str:
    for k, v in _ESC.items():
        text = text.replace(k, v)
    if "\ue002" in text or "\ue003" in text:
        notes.append("literal square brackets \\[ \\] became \\( \\) (in dreamshell [ ] is the negative prompt)")
    while True:
        changed = False

        def one(m):
            nonlocal changed
            kept = _edit(m.group(1), notes)
            if kept is None:
                return "\ue010" + m.group(1) + "\ue011"
            changed = True
            return kept
        text = _INNER_BRACKET.sub(one, text)
        if not changed:
            break
    text = text.replace("\ue010", "[").replace("\ue011", "]")
    return _compel(_attention(text))


def a1111_to_dreamshell(prompt: str, notes: list[str], dropped: list[str], negative: bool = False) -> str:
    """An A1111 prompt in dreamshell's syntax; notes and dropped get what was not exact."""
    where = "negative prompt" if negative else "prompt"

    def extra(m):
        kind, name, weight = m.group(1).lower(), m.group(2), m.group(3) or "1"
        label = {"lora": "LoRA", "lyco": "LyCORIS", "hypernet": "hypernetwork"}[kind]
        dropped.append(f"{label} {name} (weight {weight}; {kind} tags are not applied by dreamshell yet)")
        return " "
    prompt = _EXTRA_NET.sub(extra, prompt)
    if _BREAK.search(prompt):
        notes.append(f"BREAK in the {where} (A1111: start a new 75-token chunk) became ', '; dreamshell has no chunk break")
        prompt = _BREAK.sub(", ", prompt)
    parts = _AND.split(prompt)
    if negative or len(parts) == 1:
        if len(parts) > 1:
            notes.append("AND in the negative prompt kept as the word 'and'")
            prompt = " and ".join(parts)
        return _part(prompt, notes)
    blend = []
    for part in parts:
        m = _AND_WEIGHT.match(part)
        text = _part(m.group(1), notes)
        if text:
            blend.append(f"{text}:{m.group(2) or 1}")
    notes.append("AND (A1111 composable diffusion: the prompts' guidance is added) read as a dreamshell blend "
                 f"'{' '.join(blend)}' (the prompts' embeddings are mixed)")
    return " ".join(blend)


# ----- dreamshell -> A1111

_COMPEL_WEIGHT = re.compile(r"\(([^()]*)\)(\d*\.?\d+|[+]+|-+)|([^\s(),]+?)(\++|-+)(?=[\s,]|$)")


def _to_a1111_text(text: str) -> str:
    def one(m):
        if m.group(1) is not None:
            body, op = m.group(1), m.group(2)
        else:
            body, op = m.group(3), m.group(4)
        if op[0] in "+-":
            w = (1.1 if op[0] == "+" else 0.9) ** len(op)
        else:
            w = float(op)
        return f"({body}:{_weight(w)})"
    return _COMPEL_WEIGHT.sub(one, text)


def dreamshell_to_a1111(prompt_without_negative: str, skip_normalize: bool = False) -> str:
    """Our positive prompt in A1111 syntax: compel weights as `(x:w)`, a blend as weighted AND."""
    parts = split_prompt(prompt_without_negative)
    weighted = parts.normalized(skip_normalize)
    if len(weighted) == 1:
        return _to_a1111_text(weighted[0][0])
    return " AND ".join(f"{_to_a1111_text(t)} :{_weight(w)}" for t, w in weighted)
