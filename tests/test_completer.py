"""Tab completion, one table of (what is typed, what is offered) (issue 18): switch names, samplers,
schedules, models, paths, LoRA and VAE names, hires upscalers, presets, decoders and `!` commands."""

import pytest
from prompt_toolkit.document import Document

from dreamshell.run.dispatch import Command
from dreamshell.shell.completer import DreamCompleter
from dreamshell.weights.library import Folders, Library


@pytest.fixture
def completer(tmp_path):
    (tmp_path / "loras").mkdir()
    (tmp_path / "loras" / "demo_cross.safetensors").write_bytes(b"x")
    (tmp_path / "loras" / "other.safetensors").write_bytes(b"x")
    (tmp_path / "embeddings").mkdir()
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / "demo-vae.safetensors").write_bytes(b"x")
    (tmp_path / "taesd").mkdir()
    (tmp_path / "taesd" / "taesd_decoder.safetensors").write_bytes(b"x")
    (tmp_path / "taesd" / "taesdxl_decoder.pth").write_bytes(b"x")
    (tmp_path / "pics").mkdir()
    (tmp_path / "pics" / "cat.png").write_bytes(b"x")
    (tmp_path / "pics" / "car.png").write_bytes(b"x")
    commands = {name: Command(name, f"!{name}", f"help of {name}", lambda a: None, complete)
                for name, complete in (("switch", "model"), ("fetch", "path"), ("help", None), ("N", None))}
    return DreamCompleter(lambda: ["demo", "sd15", "sdxl"], lambda: commands,
                          Library(Folders.under(tmp_path)))


def offered(completer, text: str) -> list[str]:
    return [c.text for c in completer.get_completions(Document(text, len(text)), None)]


TABLE = [
    ("a cat --ste", ["--steps"]),
    ("a cat -A k_eu", ["k_euler", "k_euler_a"]),
    ('a cat -A "DPM++ 2M K', ['"DPM++ 2M Karras"']),
    ("a cat --sampler unip", ["UniPC"]),
    ("a cat --schedule kar", ["karras"]),
    ("a cat --schedule sgm", ["sgm_uniform"]),
    ("a cat --model sd", ["sd15", "sdxl"]),
    ("a cat --hires_upscaler la", ["latent", "lanczos"]),
    ("a cat <lora:dem", ["demo_cross:1>"]),
    ("a cat <lora:", ["demo_cross:1>", "other:1>"]),
    ("a cat --vae dem", ["demo-vae.safetensors"]),
    ("a cat --preset l", ["lcm", "lightning"]),
    ("a cat --preset ", ["lcm", "turbo", "lightning", "hyper", "tcd", "dmd2"]),
    ("a cat --decoder ", ["taesd", "vae", "taesd_decoder.safetensors", "taesdxl_decoder.pth"]),
    ("a cat --decoder taesdx", ["taesdxl_decoder.pth"]),
    ("!sw", ["!switch"]),
    ("!switch sd", ["sd15", "sdxl"]),
    ("!help x", []),                    # a command that completes nothing
    ("a cat -S 5 -", None),             # every switch: checked below
]


@pytest.mark.parametrize("text, expected", [t for t in TABLE if t[1] is not None])
def test_what_is_offered(completer, text, expected):
    assert offered(completer, text) == expected


def test_a_lone_dash_offers_every_switch(completer):
    from dreamshell.line.switches import SWITCHES
    got = set(offered(completer, "a cat -S 5 -"))
    assert {s.long for s in SWITCHES} <= got and "-A" in got


def test_paths_after_an_image_switch_and_a_path_command(completer, tmp_path):
    pics = str(tmp_path / "pics") + "/ca"
    assert sorted(offered(completer, f"a cat -I {pics}")) == ["r.png", "t.png"]
    assert sorted(offered(completer, f"!fetch {pics}")) == ["r.png", "t.png"]


def test_only_samplers_that_run_here_are_offered(completer):
    from dreamshell.line.samplers import cannot_run
    for name in offered(completer, "a cat -A "):
        assert cannot_run(name.strip('"')) is None, name
