"""Recipes in image files, ours and the peers': writing the three PNG chunks, reading any of them.

`fetch_recipe(path)` returns the request with notes naming everything that could not be carried
over; `dreamshell.pngmeta` keeps the older names. Metadata is data: parsed, never evaluated.
"""

from __future__ import annotations

import json
from pathlib import Path

from ..formatter import format_request
from ..samplers import cannot_run
from .a1111 import a1111_parameters, parse_a1111, read_a1111
from .comfyui import read_comfyui
from .common import MAX_COMMAND, ImageMeta, MetadataError, Recipe, short
from .container import read_texts
from .invokeai import dream_text, read_dream, read_invokeai_metadata, read_sd_metadata, sd_metadata

__all__ = ["ImageMeta", "MetadataError", "Recipe", "a1111_parameters", "dream_text", "fetch_recipe",
           "parse_a1111", "read_texts", "sd_metadata"]


def _with_model(recipe: Recipe, texts: dict[str, str]) -> Recipe:
    """A Dream line carries no --model (InvokeAI's parser rejects it): take it from sd-metadata or Model:."""
    if recipe.request.model:
        return recipe
    model = None
    try:
        data = json.loads(texts.get("sd-metadata", "{}"))
        model = data.get("model_id") if isinstance(data, dict) else None
    except ValueError:
        pass
    if not model and "parameters" in texts:
        model = parse_a1111(texts["parameters"])[2].get("Model")
    if model and not isinstance(model, str):
        model = None
    return Recipe(recipe.request.with_(model=model), recipe.notes, recipe.source) if model else recipe


def _app(texts: dict[str, str]) -> tuple[str, str]:
    """(app_id, app_version) of the file's sd-metadata, or empty strings."""
    try:
        data = json.loads(texts.get("sd-metadata", "{}"))
    except ValueError:
        return "", ""
    if not isinstance(data, dict):
        return "", ""
    return str(data.get("app_id") or ""), str(data.get("app_version") or "")


def _readers(kind: str, texts: dict[str, str]):
    """(chunk, reader) pairs in the order they are trusted."""
    if kind != "PNG":
        where = f"A1111 parameters ({kind} EXIF UserComment)"
        return [("exif", lambda t: read_a1111(t, where)),
                ("comment", lambda t: read_a1111(t, f"A1111 parameters ({kind} comment)"))]
    own = "parameters" in texts and "\nSteps: " in "\n" + texts["parameters"] and "Dreamshell: " in texts["parameters"]
    pairs = [("parameters", read_a1111)] if own else []
    app = _app(texts)
    source = f"Dream ({app[0]} {app[1]})" if app[0] else "Dream (InvokeAI 1.x/2.x or dreamshell)"
    pairs += [("Dream", lambda t: _with_model(read_dream(t, source, app), texts)),
              ("sd-metadata", read_sd_metadata), ("parameters", read_a1111),
              ("invokeai_metadata", read_invokeai_metadata), ("prompt", read_comfyui)]
    return pairs


def fetch_recipe(path) -> Recipe:
    """The request that made the image at path, the notes on what was not carried over, and its source."""
    path = Path(path)
    kind, texts, skipped = read_texts(path)
    errors: list[str] = []
    for key, reader in _readers(kind, texts):
        if key not in texts:
            continue
        try:
            recipe = reader(texts[key])
        except (MetadataError, ValueError, TypeError, KeyError, AttributeError) as e:
            errors.append(f"{key}: {short(e, 300)}")
            continue
        return _checked(path, recipe, skipped)
    why = "; ".join(errors + skipped)
    if errors or skipped:
        raise MetadataError(f"{path}: its recipe cannot be read ({why})")
    raise MetadataError(f"{path}: no recipe in this image (no Dream, sd-metadata, parameters, invokeai_metadata "
                        "or ComfyUI prompt text)")


def _checked(path: Path, recipe: Recipe, skipped: list[str]) -> Recipe:
    """Refuse an absurdly long command; add notes for skipped chunks and samplers that cannot run here."""
    command = format_request(recipe.request)
    if len(command) > MAX_COMMAND:
        raise MetadataError(f"{path}: the recovered command is {len(command):,} characters, over the "
                            f"{MAX_COMMAND:,} a line may hold; not put on the input line")
    notes = list(recipe.notes)
    if skipped:
        notes.insert(0, "skipped: " + "; ".join(skipped))
    why = cannot_run(recipe.request.sampler, recipe.request.schedule)
    if why:
        notes.append(f"cannot run here as it is: {why}")
    return Recipe(recipe.request, tuple(notes), recipe.source)
