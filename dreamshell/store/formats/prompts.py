"""Prompt syntax between A1111 (`(x:1.3)`, `[x]`, `[a:b:0.5]`, `AND`, `BREAK`, `<lora:..>`) and
dreamshell's (compel's `(x)1.3`, `word+`; `a:0.3 b:0.7` blends; `[x]` negative; `\\:` a literal colon).

A1111's rules (its wiki "Features": attention/emphasis, prompt editing, alternating words, composable
diffusion, BREAK): `(x)` multiplies attention by 1.1, `[x]` divides it by 1.1, `(x:w)` sets it,
`\\(` is a literal parenthesis. Each translation that cannot be exact is kept as close as honest and
named in a note. Stdlib only.
"""

from __future__ import annotations

import re

from ...line.limits import MAX_LORAS
from ...line.prompt import (
    LORA_TAG,
    MAX_LORA_WEIGHT,
    PromptError,
    extract_loras,
    split_prompt,
)
from ...line.switches import format_number

# private-use stand-ins for escaped characters while the syntax is read
_ESC = {"\\(": "\ue000", "\\)": "\ue001", "\\[": "\ue002", "\\]": "\ue003", "\\\\": "\ue004"}
_UNESC = {"\ue000": "\\(", "\ue001": "\\)", "\ue002": "\\(", "\ue003": "\\)", "\ue004": "\\"}
# A1111's extra networks (`modules/extra_networks.py` re_extra_net `<(\w+):([^>]+)>`), spelled as loosely as
# dreamshell's own prompt reads them (`prompt.LORA_TAG`, `prompt._OTHER_NETWORK`)
_EXTRA_NET = re.compile(r"<\s*(lora|lyco|lycoris|locon|loha|hypernet)\s*:([^<>]*)>", re.I)
_A1111_LORA = re.compile(r"<lora:([^:<>]+)(?::([^:<>]*))?>")   # a tag A1111 and dreamshell read alike
_TAG_BASE = 0xE100          # private-use stand-ins for LoRA tags while the text around them is translated
_GONE = "\ue0ff"             # where a tag was taken out
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


def _a1111_lora_weights(body: str) -> tuple[str, str, str, str | None]:
    """(name, text-encoder weight, UNet weight, dyn) of an A1111 `<lora:...>` tag body, read as A1111's
    ExtraNetworkParams and extra_networks_lora.py read it: `name:te:unet:dyn` positional, or `te=`, `unet=`,
    `dyn=` named; the UNet weight defaults to the text encoder's, that one to 1."""
    positional, named = [], {}
    for item in body.split(":"):
        parts = item.split("=", 2)
        if len(parts) == 2:
            named[parts[0].strip()] = parts[1].strip()
        else:
            positional.append(item.strip())
    name = positional[0] if positional else ""
    te = named.get("te", positional[1] if len(positional) > 1 else "1")
    unet = named.get("unet", positional[2] if len(positional) > 2 else te)
    dyn = named.get("dyn", positional[3] if len(positional) > 3 else None)
    return name, te, unet, dyn


def _lora_tag(tag: str, body: str, notes: list[str], dropped: list[str], seen: list[str]) -> str | None:
    """The dreamshell tag for one A1111 `<lora:...>` tag, or None when it is dropped (named in dropped)."""
    name, te, unet, dyn = _a1111_lora_weights(body)
    if not name:
        dropped.append(f"{tag} (no LoRA name)")
        return None
    try:
        te_w, unet_w = float(te), float(unet)
    except ValueError:
        dropped.append(f"{tag} (the weight is not a number)")
        return None
    if not abs(unet_w) <= MAX_LORA_WEIGHT:
        dropped.append(f"{tag} (dreamshell's LoRA weights go from {-MAX_LORA_WEIGHT:g} to {MAX_LORA_WEIGHT:g})")
        return None
    if name in seen:
        dropped.append(f"{tag} (LoRA {name} is tagged again; dreamshell tags each LoRA once and keeps the first)")
        return None
    if len(seen) >= MAX_LORAS:
        dropped.append(f"{tag} (more than {MAX_LORAS} LoRAs)")
        return None
    seen.append(name)
    ours = f"<lora:{name}:{format_number(unet_w)}>"
    if te_w != unet_w:
        notes.append(f"{tag} (A1111: text-encoder weight {te}, UNet weight {unet}) kept as {ours}: dreamshell gives "
                     "a LoRA one weight for both, and the UNet's is the one that shapes the image most")
    if dyn is not None:
        dropped.append(f"dyn={dyn} of {tag} (A1111's dynamic LoRA rank)")
    if te_w == unet_w and dyn is None and _A1111_LORA.fullmatch(tag):
        try:
            if extract_loras(tag)[1][0].weight == unet_w:
                return tag          # as written: `<lora:x>` and `<lora:x:0.80>` read back unchanged
        except (PromptError, IndexError):
            pass
    return ours


def a1111_to_dreamshell(prompt: str, notes: list[str], dropped: list[str], negative: bool = False,
                        loras: bool = True) -> str:
    """An A1111 prompt in dreamshell's syntax; notes and dropped get what was not exact.

    `<lora:NAME:W>` tags stay where they are (dreamshell reads the same tag); `<lora:NAME:TE:UNET>` keeps the
    UNet weight. Tags in a negative prompt (A1111 applies none there), `loras=False` (ComfyUI, where the tag is
    plain text) and LyCORIS/hypernetwork tags are dropped by name."""
    where = "negative prompt" if negative else "prompt"
    tags: list[str] = []
    seen: list[str] = []

    def extra(m):
        kind, body = m.group(1).lower(), m.group(2)
        if kind == "lora" and not negative and loras:
            ours = _lora_tag(m.group(0), body, notes, dropped, seen)
            if ours is not None:
                tags.append(ours)
                return chr(_TAG_BASE + len(tags) - 1)
            return _GONE
        name, _, weight = body.partition(":")
        if kind == "lora":
            why = ("A1111 applies no LoRA from the negative prompt" if negative
                   else "ComfyUI reads it as plain text; its LoraLoader nodes are the LoRAs")
            dropped.append(f"{m.group(0)} in the {where} ({why})")
            return _GONE
        label = "hypernetwork" if kind == "hypernet" else "LyCORIS"
        dropped.append(f"{label} {name} (weight {weight.split(':')[0] or '1'}; <{kind}:...> tags are not supported "
                       "by dreamshell)")
        return _GONE
    prompt = _EXTRA_NET.sub(extra, prompt)
    first_note = len(notes)
    text = _translate(prompt, notes, negative, where)
    notes[first_note:] = [_restore_tags(n, tags) for n in notes[first_note:]]
    return _restore_tags(text, tags)


def _restore_tags(text: str, tags: list[str]) -> str:
    for i, tag in enumerate(tags):
        text = text.replace(chr(_TAG_BASE + i), tag)
    text = re.sub(r"\s*" + _GONE + r"\s*(?=[,.;)]|$)", "", text)     # 'a <lyco:x:1>, b' -> 'a, b'
    return re.sub(r"\s+", " ", text.replace(_GONE, " ")).strip()


def _translate(prompt: str, notes: list[str], negative: bool, where: str) -> str:
    if _BREAK.search(prompt):
        notes.append(f"BREAK in the {where} (A1111: start a new 75-token chunk) became ', '; dreamshell has no chunk break")
        prompt = _BREAK.sub(", ", prompt)
    parts = _AND.split(prompt)
    if negative or len(parts) == 1:
        if len(parts) > 1:
            notes.append("AND in the negative prompt kept as the word 'and'")
            prompt = " and ".join(parts)
        return _part(prompt, notes)
    ands = []   # dreamshell reads A1111's AND as A1111 does (line/prompt.py, engines/composable.py)
    for part in parts:
        m = _AND_WEIGHT.match(part)
        text = _part(m.group(1), notes)
        if text:
            weight = float(m.group(2)) if m.group(2) else 1.0
            ands.append(text + (f" :{format_number(weight)}" if weight != 1 else ""))
    if len(ands) < 2:
        notes.append("an empty AND part was left out")
    return " AND ".join(ands)


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


def _a1111_tag(tag: str) -> str:
    """A dreamshell LoRA tag as A1111 reads it: as written when A1111 reads it alike, else `<lora:NAME:W>`."""
    t = extract_loras(tag)[1][0]
    m = _A1111_LORA.fullmatch(tag)
    if m and m.group(1) == t.name and (m.group(2) is None or (m.group(2) and m.group(2).strip() == m.group(2))):
        return tag
    return f"<lora:{t.name}:{format_number(t.weight)}>"


def dreamshell_to_a1111(prompt_without_negative: str, skip_normalize: bool = False) -> str:
    """Our positive prompt in A1111 syntax: compel weights as `(x:w)`, a blend as weighted AND; LoRA tags
    stay where they stand (A1111 reads the same `<lora:NAME:W>` and keeps it in its prompt text)."""
    tags: list[str] = []

    def hide(m):
        tags.append(_a1111_tag(m.group(0)))
        return chr(_TAG_BASE + len(tags) - 1)
    hidden = LORA_TAG.sub(hide, prompt_without_negative)
    parts = split_prompt(hidden)
    weighted = parts.normalized(skip_normalize)
    if len(weighted) == 1:
        return _restore_tags(_to_a1111_text(weighted[0][0]), tags)
    return _restore_tags(" AND ".join(f"{_to_a1111_text(t)} :{_weight(w)}" for t, w in weighted), tags)
