"""A line's work is done once (issue 18): the session defaults applied once, the prompt parsed once,
each library folder scanned once per line, each image's recipe formatted once (plus InvokeAI's own
Dream text), and the engine handed the files the plan found (it looks nothing up again).

Counted on the fake generator: before the one plan, a two-image LoRA line through the real demo
generator called apply_defaults 3 times, walked the library folders 9 times, parsed the prompt 17 times
and formatted the recipe 8 times (the counts are in the closing note of issue 18)."""

import collections
import os

import pytest
from fake_generator import FakeGenerator

from dreamshell.line import prompt as prompt_module
from dreamshell.run.dispatch import Dispatcher
from dreamshell.run.model_host import ModelHost
from dreamshell.run.session import Session
from dreamshell.weights.library import Folders
from dreamshell.weights.models import ModelSpec, Registry

LINE = "a yolk on a blue background <lora:cross:0.5> [blurry] -S 3 -n 3"


@pytest.fixture
def counted(tmp_path, monkeypatch):
    import dreamshell
    import importlib
    import pkgutil
    counts = collections.Counter()
    parsed = collections.Counter()
    real_walk = os.walk
    walked = []

    def walk(top, *a, **k):
        counts["walks"] += 1
        walked.append(os.path.basename(str(top)))
        return real_walk(top, *a, **k)
    monkeypatch.setattr("dreamshell.weights.library.os.walk", walk)
    real_parse = prompt_module.parse_prompt

    def parse(text):
        parsed[text] += 1
        return real_parse(text)
    monkeypatch.setattr(prompt_module, "parse_prompt", parse)
    prompt_module.split_prompt.cache_clear()
    from dreamshell.line.formatter import format_request
    from dreamshell.run.resolve import apply_defaults

    def counting(name, fn):
        def inner(*a, **k):
            counts[name] += 1
            return fn(*a, **k)
        return inner
    for info in pkgutil.walk_packages(dreamshell.__path__, prefix="dreamshell."):
        if info.name.endswith("__main__") or ".engines" in info.name:
            continue
        module = importlib.import_module(info.name)
        for name, fn in (("format_request", format_request), ("apply_defaults", apply_defaults)):
            if getattr(module, name, None) is fn:
                monkeypatch.setattr(module, name, counting(name, fn))
    root = tmp_path / "library"
    for folder, name in (("loras", "cross.safetensors"), ("embeddings", "yolk.safetensors")):
        (root / folder).mkdir(parents=True)
        (root / folder / name).write_bytes(b"\x02\x00\x00\x00\x00\x00\x00\x00{}")
    (root / "vae").mkdir()
    weights = tmp_path / "weights"
    weights.mkdir()
    spec = ModelSpec("fake", weights, "sd1", width=64, height=64, steps=3, cfg_scale=5.0, sampler="k_euler",
                     default=True)
    gen = FakeGenerator()
    session = Session(Registry({"fake": spec}, folders=Folders.under(root)), ModelHost(lambda: gen), tmp_path / "out")
    counts.walked = walked   # the folders, by name
    return session, gen, counts, parsed


def test_a_line_is_planned_once_and_its_files_found_once(counted):
    session, gen, counts, parsed = counted
    out = []
    outcome = Dispatcher(session, out.append).execute(LINE)
    assert not outcome.failed, out
    assert len(session.seeds) == 3
    assert counts["apply_defaults"] == 1
    assert counts["walks"] == 3, counts.walked        # the LoRA, embeddings and tiny-decoder folders, once each
    assert len(set(counts.walked)) == 3, counts.walked
    assert parsed["a yolk on a blue background <lora:cross:0.5> [blurry]"] == 1
    assert counts["format_request"] == 3 * 2          # per image: the canonical command, and the Dream text
    assert len(gen.files_seen) == 3 and all(f is not None for f in gen.files_seen)
    assert [u.name for u in gen.files_seen[0].loras] == ["cross"]
    assert [u.name for u in gen.files_seen[0].embeddings] == ["yolk"]
