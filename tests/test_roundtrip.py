"""parse(format(r)) == r for every request, with strategies drawn from the switch table."""

from dataclasses import fields

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dreamshell.store.dreamlog import commands_from_bytes
from dreamshell.line.formatter import format_request
from dreamshell.line.limits import max_steps
from dreamshell.line.parser import parse_request
from dreamshell.line.presets import preset_names
from dreamshell.line.prompt import PromptError, split_prompt
from dreamshell.line.request import DreamRequest, UpscaleSpec
from dreamshell.line.safetext import first_unsafe
from dreamshell.line.samplers import SAMPLERS, schedule_names
from dreamshell.line.hires import target_size
from dreamshell.line.limits import MAX_UPSCALED_SIDE
from dreamshell.line.switches import MAX_SEED, SWITCHES
from dreamshell.line.control import DIRECTIONS, PREPROCESSORS, ControlSpec

# a command is one line of text: no controls, surrogates or line/paragraph separators (parser.check_text)
WORD_CHARS = st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="[]:")
# ... nor the bidirectional overrides the parser refuses with them (safetext.is_unsafe)
words = st.text(WORD_CHARS, min_size=1, max_size=12).filter(lambda w: w.strip() and first_unsafe(w) is None)


def _valid_prompt(p: str) -> bool:
    try:
        split_prompt(p)
    except PromptError:
        return False
    return bool(p.strip()) and not p.startswith("!") and "\n" not in p


@st.composite
def prompts(draw):
    text = " ".join(draw(st.lists(words, min_size=1, max_size=5)))
    if draw(st.booleans()):
        text += " [" + draw(words) + "]"
    if draw(st.booleans()):
        w1 = draw(st.integers(1, 9))
        text = f"{text}:0.{w1} " + draw(words).replace("-", "") + f":{w1}"
    if draw(st.booleans()):
        name = draw(st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters="<>:"),
                            min_size=1, max_size=10).filter(lambda n: n.strip() and first_unsafe(n) is None))
        weight = draw(st.sampled_from(["", ":1", ":0.5", ":-0.25", ":0"]))
        text = f"{text} <lora:{name}{weight}>" if draw(st.booleans()) else f"<lora:{name}{weight}> {text}"
    return text


def _no_leading_dash(s: str) -> bool:
    return not s.lstrip().startswith("-")


paths = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=20).filter(
    lambda s: s.strip())
unit = st.floats(0, 1, allow_nan=False).map(abs)

@st.composite
def controls(draw):
    """A --control value: a model name (no ':' or '/'), any image path, a weight, a guidance span, a preprocessor."""
    model = draw(st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp"), blacklist_characters=":/"),
                         min_size=1, max_size=12).filter(lambda n: n.strip() == n and n and first_unsafe(n) is None))
    start = draw(st.floats(0, 0.9, allow_nan=False).map(abs))
    end = draw(st.floats(0, 1, allow_nan=False).filter(lambda e: e > start))
    return ControlSpec(model, draw(paths.filter(lambda p: first_unsafe(p) is None)),
                       draw(st.floats(0, 2, allow_nan=False).map(abs)), start, end,
                       draw(st.sampled_from([None, *PREPROCESSORS])))


FIELD_STRATEGIES = {
    "steps": st.integers(1, 999),  # every sampler takes 999 (limits.MAX_STEPS)
    "seed": st.one_of(st.integers(0, MAX_SEED), st.integers(-20, -1)),
    "iterations": st.integers(1, 100),
    "width": st.integers(8, 1024).map(lambda n: n * 8),
    "height": st.integers(8, 1024).map(lambda n: n * 8),
    "cfg_scale": st.floats(0, 100, allow_nan=False).map(abs),
    "sampler": st.sampled_from([s.name for s in SAMPLERS] + ["DPM++ 2M Karras", "Euler a SGM Uniform"]),
    "schedule": st.sampled_from(schedule_names()),
    "model": paths,
    "init_img": st.one_of(st.just("-1"), paths),
    "strength": unit.filter(lambda x: x > 0),
    "init_mask": paths,
    "fit": st.booleans(),
    "upscale": st.builds(UpscaleSpec, st.floats(1, 16, allow_nan=False), unit),
    "save_original": st.booleans(),
    "grid": st.booleans(),
    "variation_amount": unit,
    "with_variations": st.lists(st.tuples(st.integers(0, MAX_SEED), unit), max_size=3).map(tuple),
    "skip_normalize": st.booleans(),
    "log_tokenization": st.booleans(),
    "outdir": paths,
    "seamless": st.booleans(),
    "clip_skip": st.integers(1, 12),
    "vae": paths,
    "hires_fix": st.booleans(),
    "hires_scale": st.floats(1, 8, allow_nan=False).filter(lambda x: x > 1),
    "hires_steps": st.integers(1, 999),
    "hires_strength": unit.filter(lambda x: x > 0),
    "hires_upscaler": st.sampled_from(["latent", "lanczos", "esrgan"]),
    "timesteps": st.sets(st.integers(0, 999), min_size=1, max_size=8).map(lambda s: tuple(sorted(s, reverse=True))),
    "eta": unit,
    "preset": st.sampled_from(preset_names()),
    "control": st.lists(controls(), max_size=4, unique_by=lambda c: c.model.lower()).map(tuple),
    "outcrop": st.lists(st.tuples(st.sampled_from(DIRECTIONS), st.integers(1, 256).map(lambda n: n * 8)), min_size=1,
                        max_size=4, unique_by=lambda p: p[0]).map(tuple),
    "inpaint_area": st.just("masked"),
    "inpaint_padding": st.integers(0, 1024),
    "guidance": st.floats(0, 100, allow_nan=False).map(abs),
    "cfg_rescale": unit,
    "rng": st.sampled_from(["cpu", "gpu", "nv"]),
    "ensd": st.integers(0, 2**32 - 1),
    "decoder": st.one_of(st.sampled_from(["taesd", "vae"]), paths.filter(lambda s: s.lower() not in ("taesd", "vae"))),
}


def test_every_switch_has_a_strategy():
    assert {sw.field for sw in SWITCHES} == set(FIELD_STRATEGIES)
    assert {f.name for f in fields(DreamRequest)} - {"prompt"} == set(FIELD_STRATEGIES)


@st.composite
def requests(draw):
    values = {}
    for name, strategy in FIELD_STRATEGIES.items():
        if draw(st.booleans()):
            values[name] = draw(strategy)
    if "schedule" in values and values.get("sampler", "").endswith(("Karras", "Uniform")):
        del values["schedule"]   # a combined name already names its schedule
    if "timesteps" in values:   # explicit timesteps stand without a schedule and set -s to their count
        values.pop("schedule", None)
        values["steps"] = len(values["timesteps"])
    if "inpaint_padding" in values:
        values["inpaint_area"] = "masked"      # the padding implies Only masked
    if "inpaint_area" in values:
        values.setdefault("init_mask", "mask.png")
    if "outcrop" in values:
        values.setdefault("init_img", "in.png")
        for k in ("init_mask", "control", "inpaint_area", "inpaint_padding"):
            values.pop(k, None)
    if "init_mask" in values and "init_img" not in values:
        values["init_img"] = "in.png"
    if values.get("save_original") and "upscale" not in values:
        values["upscale"] = UpscaleSpec(2.0)
    if any(k.startswith("hires_") for k in values):
        values["hires_fix"] = True   # --hires_scale and the rest imply --hires_fix
        for k in ("init_img", "init_mask", "strength", "fit", "outcrop", "inpaint_area",
                  "inpaint_padding"):   # the hires fix starts from noise
            values.pop(k, None)
    for key in ("steps", "hires_steps"):
        if key in values and "sampler" in values:  # each sampler's own bound (LCM: 50)
            values[key] = min(values[key], max_steps(values["sampler"]))
    if values.get("hires_fix"):   # the second pass within the size limit (as rounded: hires.target_size)
        scale = values.get("hires_scale", 2)
        if max(target_size(values.get("width", 64), values.get("height", 64), scale)) > 8192:
            values["hires_scale"] = 1.5
            values["width"] = min(values.get("width", 64), 4096)
            values["height"] = min(values.get("height", 64), 4096)
    if "upscale" in values:   # the upscaled image within its bound (limits.MAX_UPSCALED_SIDE)
        w, h = values.get("width", 64), values.get("height", 64)
        if values.get("hires_fix"):
            w, h = target_size(w, h, values.get("hires_scale", 2))
        if max(w, h) * values["upscale"].factor > MAX_UPSCALED_SIDE:
            values["upscale"] = UpscaleSpec(1.0, values["upscale"].strength)
    return DreamRequest(prompt=draw(prompts().filter(_valid_prompt)), **values)


@settings(max_examples=400, deadline=None)
@given(requests())
def test_parse_of_format_is_identity(request):
    line = format_request(request)
    assert "\n" not in line
    assert parse_request(line) == request


@settings(max_examples=200, deadline=None)
@given(requests())
def test_format_of_parse_is_stable(request):
    once = format_request(parse_request(format_request(request)))
    assert format_request(parse_request(once)) == once


# folders as the log writes them (display_path): quotes, apostrophes, spaces, backslashes, any script
folders = st.text(st.characters(blacklist_categories=("Cs", "Cc", "Zl", "Zp")), min_size=1, max_size=20).filter(
    lambda s: s.strip() and "\\" not in s.strip()[-1:])


@settings(max_examples=300, deadline=None)
@given(requests(), folders, st.integers(0, 999_999), st.integers(0, MAX_SEED))
def test_a_log_line_replays_whatever_its_folder_is_called(request, folder, number, seed):
    line = f"{folder}/{number:06d}.{seed}.png: {format_request(request)}"
    assert parse_request(line) == request
    assert [c for _, c in commands_from_bytes(line.encode("utf-8"), "log")] == [format_request(request)]


@pytest.mark.parametrize("folder", ["Bob's pics", 'say "hi"', "it's \"both\"", "C:\\Users\\me\\out", "a.png: b",
                                    "#2", "'quoted'"])
def test_log_lines_with_quotes_in_the_path_replay(folder):
    request = DreamRequest("a cat's \"hat\"", seed=5, outdir=folder)
    line = f"{folder}/000001.5.png: {format_request(request)}"
    assert parse_request(line) == request
    log = f"# a comment\n{line}\n#another comment\n".encode("utf-8")
    assert commands_from_bytes(log, "log") == [(2, format_request(request))]


def test_control_characters_never_reach_a_log_line():
    line = format_request(DreamRequest("a\nb\x1b]0;t\x07", outdir="x\ry"))
    assert first_unsafe(line) is None
