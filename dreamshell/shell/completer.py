"""Completion from the switch table: switch names with help, samplers after -A, models after
--model and !switch, paths after -I, -M, -o and !fetch, !replay, !fix, the LoRA folder after `<lora:`,
the VAE folder after --vae, the controlnets folder after --control (then the preprocessors after `/` and paths
after `:`), presets after --preset, taesd / vae / the decoders folder after --decoder."""

from __future__ import annotations

import re
import shlex

from prompt_toolkit.completion import Completer, Completion, PathCompleter
from prompt_toolkit.document import Document

from ..line.control import PREPROCESSORS
from ..line.hires import upscaler_names
from ..line.presets import preset_names
from ..line.samplers import sampler_names, schedule_names
from ..line.switches import BY_SPELLING, SWITCHES


class DreamCompleter(Completer):
    def __init__(self, model_names, command_table, library=None):
        self.model_names = model_names          # callable -> list[str]
        self.command_table = command_table      # callable -> {name: Command}
        self.library = library                  # extras.Library (LoRA and VAE folders), or None
        self.paths = PathCompleter(expanduser=True)

    def _values(self, kind: str, word: str):
        if kind == "sampler":
            for name in sampler_names():
                if name.lower().startswith(word.lower().strip('"')):
                    text = f'"{name}"' if " " in name else name
                    yield Completion(text, start_position=-len(word))
        elif kind == "schedule":
            for name in schedule_names():
                if name.lower().startswith(word.lower().strip('"')):
                    yield Completion(f'"{name}"' if " " in name else name, start_position=-len(word))
        elif kind == "model":
            for name in self.model_names():
                if name.startswith(word):
                    yield Completion(name, start_position=-len(word))
        elif kind == "hires_upscaler":
            for name in upscaler_names():
                if name.startswith(word):
                    yield Completion(name, start_position=-len(word))
        elif kind == "vae":
            names = sorted(p.name for p in self.library.vaes().values()) if self.library else []
            for name in names:
                if name.startswith(word):
                    yield Completion(name, start_position=-len(word), display_meta="VAE folder")
            if not names or "/" in word:
                yield from self.paths.get_completions(Document(word, len(word)), None)
        elif kind == "preset":
            for name in preset_names():
                if name.startswith(word.lower()):
                    yield Completion(name, start_position=-len(word), display_meta="few-step preset")
        elif kind == "decoder":
            from ..weights.decoders import decoders_in
            for name, meta in (("taesd", "the tiny decoder for the model"), ("vae", "the model's full VAE")):
                if name.startswith(word.lower()):
                    yield Completion(name, start_position=-len(word), display_meta=meta)
            folder = self.library.folders.decoders if self.library else None
            names = sorted(p.name for p in decoders_in(folder).values())
            for name in names:
                if name.startswith(word):
                    yield Completion(name, start_position=-len(word), display_meta="decoders folder")
            if "/" in word:
                yield from self.paths.get_completions(Document(word, len(word)), None)
        elif kind == "path":
            sub = Document(word, len(word))
            yield from self.paths.get_completions(sub, None)
        elif kind == "control":
            yield from self._control(word)
        elif kind == "inpaint_area":
            for name in ("whole", "masked"):
                if name.startswith(word):
                    yield Completion(name, start_position=-len(word))

    def _control(self, word: str):
        """--control MODEL[/PRE]:IMAGE: model names from the controlnets folder, then preprocessors, then paths."""
        head, colon, image = word.partition(":")
        if colon:
            for c in self.paths.get_completions(Document(image, len(image)), None):
                yield Completion(c.text, start_position=c.start_position, display=c.display)
            return
        model, slash, pre = head.partition("/")
        if slash:
            for name in PREPROCESSORS:
                if name.startswith(pre.lower()):
                    yield Completion(name + ":", start_position=-len(pre), display=name,
                                     display_meta=PREPROCESSORS[name][1])
            return
        names = sorted(self.library.controlnets()) if self.library else []
        for name in names:
            if name.lower().startswith(model.lower()):
                yield Completion(name + ":", start_position=-len(word), display=name, display_meta="controlnets folder")

    def get_completions(self, document, complete_event):
        text = document.text_before_cursor
        lora = re.search(r"<\s*lora\s*:([^:<>]*)$", text, re.I)
        if lora and not text.startswith("!"):
            partial = lora.group(1)
            for name in sorted(self.library.loras()) if self.library else []:
                if name.lower().startswith(partial.lower()):
                    yield Completion(name + ":1>", start_position=-len(partial), display=name, display_meta="LoRA")
            return
        tokens, quote = _tokens(text)
        word = "" if (text.endswith(" ") and not quote) or not tokens else quote + tokens[-1]
        previous = tokens[-1] if text.endswith(" ") and tokens else (tokens[-2] if len(tokens) > 1 else "")
        if text.startswith("!"):
            name = tokens[0][1:] if tokens else ""
            if len(tokens) <= 1 and not text.endswith(" "):
                for cmd in self.command_table().values():
                    if cmd.name != "N" and cmd.name.startswith(name):
                        yield Completion("!" + cmd.name, start_position=-len(text), display_meta=cmd.help)
                return
            cmd = self.command_table().get(name)
            if cmd is not None and cmd.complete:
                yield from self._values(cmd.complete, word)
            return
        sw = BY_SPELLING.get(previous)
        if sw is not None and sw.complete and not (word.startswith("-") and word != "-"):
            yield from self._values(sw.complete, word)
            return
        if word.startswith("-"):
            for s in SWITCHES:
                for spelling in list(s.short) + [s.long]:
                    if spelling.startswith(word):
                        yield Completion(spelling, start_position=-len(word), display_meta=s.help)


def _tokens(text: str) -> tuple[list[str], str]:
    """The typed words, and the quote a last word still has open (`-A "DPM++ 2M K`): "" when none."""
    for quote in ("", '"', "'"):
        try:
            return shlex.split(text + quote, posix=True), quote
        except ValueError:
            continue
    return text.split(), ""
