"""A dream> line -> a typed request (stdlib only). The original shell's
line (lstein/stable-diffusion `ldm/dream/args.py`, InvokeAI 2.2 `ldm/invoke/args.py`), read as users type it.

Reads what people type and what the original shell wrote: quoted or bare prompts with apostrophes,
the spaced v1.15 switches, the glued v1.x forms (`-s50 -Ak_lms -mplms -b1`) and a log line's
`path: ` prefix. Every problem is a ParseError whose message is one line naming the token and the rule.
"""

from __future__ import annotations

import difflib
import re
import shlex

from .errors import LimitError, ParseError
from .limits import check_line_length, check_prompt_length, check_request
from .prompt import LORA_TAG, PromptError, split_prompt
from .request import BangCommand, Blank, DreamRequest, HelpRequest
from .safetext import first_unsafe, quoted, shorten, visible
from .samplers import find_sampler
from .switches import (
    BY_SPELLING,
    HELP_SPELLINGS,
    UNSUPPORTED,
    Switch,
    SwitchError,
    all_spellings,
)

__all__ = ["ParseError", "LimitError", "parse_line", "parse_request", "parse_switches", "split_line",
           "strip_log_prefix", "check_text", "is_comment"]

# a log line starts with the image path and ': ' (outputs/000012.3355519391.png: "prompt" -s 50 ...):
# the first path whose file is one of ours, NNNNNN.SEED[.tag].png (the log writes it as it is, quotes
# and all: -o "Bob's pics"), else any path without quotes that ends in .png
_LOG_PREFIX = re.compile(r"^\s*(?:(?:[^\n]*?[/\\])?\d+\.\d+(?:\.[\w-]+)*|[^\s\"'][^\"']*?)\.png:\s+")
# the prompt ends before the first whitespace-separated token that starts with '-' and a letter
_FIRST_SWITCH = re.compile(r"(?:^|\s)(?=-{1,2}[A-Za-z])")


# a log line whose folder starts with '#' (-o "#2"): not a comment (comments are written '# text')
_HASH_FOLDER_LOG_LINE = re.compile(r"^#(?!\s)[^\n]*?[/\\]\d+\.\d+(?:\.[\w-]+)*\.png:\s")


def is_comment(line: str) -> bool:
    """A stripped line that starts with '#' and is not a log line of an image in a '#...' folder."""
    return line.startswith("#") and not _HASH_FOLDER_LOG_LINE.match(line)


def strip_log_prefix(line: str) -> str:
    """Remove a dream_log.txt line's leading `path: ` (line/logline.py's split for our images, whatever
    the folder's name; any other `.png: ` path as before)."""
    from .logline import split_log_line
    parts = split_log_line(line.lstrip())
    if parts is not None:
        return parts[1].lstrip()
    return _LOG_PREFIX.sub("", line, count=1)


def check_text(line: str) -> None:
    """A command is one line of text: bounded length, no control or line-break characters."""
    check_line_length(line)
    i = first_unsafe(line.replace("\t", " "))
    if i is not None:
        raise ParseError(f"the line has a control character ({visible(line[i])} at column {i + 1}); "
                         "a command is one line of plain text")


def _read_quoted(line: str) -> tuple[str, str]:
    """Read a prompt in double or single quotes at the start of line; return (prompt, rest)."""
    quote = line[0]
    out, i = [], 1
    while i < len(line):
        ch = line[i]
        if ch == "\\" and quote == '"' and i + 1 < len(line) and line[i + 1] in '"\\':
            out.append(line[i + 1])
            i += 2
            continue
        if ch == quote:
            rest = line[i + 1:]
            if rest and not rest[0].isspace():
                raise ParseError(f"text right after the closing quote: {quoted(rest.split()[0])}; "
                                 "put a space between the quoted prompt and the switches")
            return "".join(out), rest
        out.append(ch)
        i += 1
    raise ParseError(f"the prompt's opening {quote} is never closed; end it with {quote} "
                     "(inside \"...\" write \\\" for a quote)")


def split_line(line: str) -> tuple[str, list[str]]:
    """(prompt, switch tokens) of a line whose log prefix, if any, is already gone."""
    line = line.strip()
    if line[:1] in ('"', "'"):
        prompt, rest = _read_quoted(line)
    else:
        m = _FIRST_SWITCH.search(line)
        prompt, rest = (line[:m.start()], line[m.start():]) if m else (line, "")
        prompt = prompt.strip()
    try:
        tokens = shlex.split(rest, posix=True)
    except ValueError as e:
        raise ParseError(f"cannot read the switches {quoted(rest.strip())}: {e} "
                         "(quote values that contain spaces)") from None
    return prompt, tokens


def _lookup(token: str) -> tuple[Switch | None, str | None, str]:
    """(switch, glued value or None, spelling) for a token that starts with '-'."""
    if token.startswith("--"):
        name, eq, value = token.partition("=")
        norm = name.replace("-", "_")
        norm = "--" + norm[2:]
        sw = BY_SPELLING.get(name) or BY_SPELLING.get(norm)
        return sw, (value if eq else None), name
    if token in BY_SPELLING:
        return BY_SPELLING[token], None, token
    if any(token.startswith(u) for u in UNSUPPORTED if len(u) > 2 and not u.startswith("--")):
        return None, None, token  # -ft, -cf, -tm: the original's, not a glued -f/-c/-t value
    head = token[:2]
    sw = BY_SPELLING.get(head)
    if sw is not None and not sw.is_flag:
        return sw, token[2:], head  # the glued v1.x form: -s50, -Ak_lms, -mplms
    return None, None, token


def _unknown(token: str) -> ParseError:
    name = token.split("=", 1)[0]
    for spelling, what in UNSUPPORTED.items():
        if name == spelling or (not name.startswith("--") and not spelling.startswith("--")
                                and name.startswith(spelling)
                                and (len(spelling) > 2 or name[2:].lstrip("-").replace(".", "", 1).isdigit())):
            return ParseError(f"{shorten(name, 40)}: {what} is not supported by dreamshell; remove it from the line")
    near = difflib.get_close_matches(name[:40], all_spellings(), n=1, cutoff=0.6)
    if not near and name.startswith("-") and not name.startswith("--"):
        near = [s for s in all_spellings() if s.lower() == name[:2].lower()][:1]
    hint = f"; did you mean {near[0]}?" if near else ""
    return ParseError(f"unknown switch {quoted(name)}{hint} (!help lists the switches)")


def parse_switches(tokens: list[str]) -> tuple[dict, bool]:
    """Switch tokens -> ({field: value}, help asked). Raises ParseError."""
    values: dict = {}
    help_asked = False
    i = 0
    while i < len(tokens):
        token = tokens[i]
        i += 1
        if token in HELP_SPELLINGS:
            help_asked = True
            continue
        if token == "-b1" or (token in ("-b", "--batch_size") and i < len(tokens) and tokens[i] == "1"):
            i += 0 if token == "-b1" else 1  # the v1.09-1.12 logs wrote -b1 on every line: one image a batch
            continue
        if not token.startswith("-") or len(token) < 2:
            raise ParseError(f"{quoted(token)} stands after the switches; the prompt comes first "
                             "(quote a prompt that contains ' -X')")
        sw, glued, spelling = _lookup(token)
        if sw is None:
            raise _unknown(token)
        if sw.field in values:
            raise ParseError(f"{shorten(spelling, 40)} is given twice; give each switch once")
        if sw.is_flag:
            if glued:
                raise ParseError(f"{shorten(spelling, 40)} is a flag and takes no value ({quoted(token)})")
            values[sw.field] = True
            continue
        lo, hi = sw.nargs
        args = [glued] if glued else []
        while len(args) < hi and i < len(tokens):
            nxt = tokens[i]
            # a first value may look like a switch (-S -1, -I -1); extra values must be numbers
            if len(args) >= lo and (nxt.startswith("-") or not _is_number(nxt)):
                break
            args.append(nxt)
            i += 1
        if len(args) < lo:
            raise ParseError(f"{spelling} needs a value: {spelling} {sw.metavar} ({sw.help})")
        try:
            values[sw.field] = sw.convert(args if hi > 1 else args[0])
        except SwitchError as e:
            raise ParseError(f"{spelling}: {e}") from None
    return values, help_asked


def _is_number(token: str) -> bool:
    try:
        float(token)
        return True
    except ValueError:
        return False


def parse_request(line: str) -> DreamRequest | HelpRequest:
    """Parse a prompt line (no `!` command) into a DreamRequest, or a HelpRequest for -h."""
    check_text(line)
    prompt, tokens = split_line(strip_log_prefix(line))
    tags = [t for t in tokens if LORA_TAG.fullmatch(t)]
    if tags:   # `a cat -S 5 <lora:x:0.5>`: a LoRA tag after the switches still belongs to the prompt
        tokens = [t for t in tokens if not LORA_TAG.fullmatch(t)]
        prompt = " ".join([prompt.strip()] + tags)
    values, help_asked = parse_switches(tokens)
    if help_asked:
        return HelpRequest()
    if not prompt.strip():
        raise ParseError("no prompt: type what to draw before the switches, e.g. a red circle -S 1")
    check_prompt_length(prompt)  # before the prompt syntax is read
    try:
        split_prompt(prompt)
    except PromptError as e:
        raise ParseError(f"prompt: {e}") from None
    if "upscale" not in values and values.get("save_original"):
        raise ParseError("--save_original keeps the un-upscaled image, so it needs -U")
    if values.get("schedule") and values.get("sampler") and find_sampler(values["sampler"]).schedule:
        raise ParseError(f"-A {values['sampler']} already names its schedule; give --schedule with the plain "
                         "sampler name instead")
    if any(k.startswith("hires_") for k in values):
        values["hires_fix"] = True   # --hires_scale and the rest imply the hires fix
        if values.get("init_img"):
            raise ParseError("--hires_fix starts from noise; with -I give -W/-H at the size you want "
                             "(and --fit) instead")
    if values.get("init_mask") and not values.get("init_img"):
        raise ParseError("-M (inpainting mask) needs -I (the image to paint into)")
    request = DreamRequest(prompt=prompt, **values)
    check_request(request)
    return request


def parse_line(line: str) -> DreamRequest | HelpRequest | BangCommand | Blank:
    """Any line of the shell or of a command file."""
    check_text(line.strip("\r\n"))
    stripped = line.strip()
    if not stripped or is_comment(stripped):
        return Blank()
    if stripped.startswith("!"):
        name, _, args = stripped[1:].partition(" ")
        if not name:
            raise ParseError("'!' alone: write a command such as !help, !history or !fetch PATH")
        return BangCommand(name, args.strip())
    return parse_request(stripped)
