"""Recipes in image files, ours and the peers': writing the three PNG chunks, reading any of them.

`fetch_recipe(path)` returns the request with notes naming everything that could not be carried
over; `dreamshell.store.pngmeta` keeps the older names. Metadata is data: parsed, never evaluated.
`fetch_recipe(path, library)` also checks the LoRA, embedding and VAE files the image names against the
session's folders (`extras.Library`): one missing, or with another hash than the image records, is a note.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ...line.formatter import format_request
from ...line.prompt import PromptError, split_prompt
from ...line.samplers import cannot_run
from .a1111 import a1111_parameters, parse_a1111, read_a1111
from .comfyui import read_comfyui
from .common import APP_ID, MAX_COMMAND, ImageMeta, MetadataError, Recipe, load_json, short
from .container import read_texts
from .invokeai import (
    dream_text,
    read_dream,
    read_invokeai_metadata,
    read_sd_metadata,
    sd_metadata,
)

__all__ = ["ImageMeta", "MetadataError", "Recipe", "a1111_parameters", "dream_text", "fetch_recipe",
           "parse_a1111", "read_texts", "sd_metadata"]


def _with_model(recipe: Recipe, texts: dict[str, str]) -> Recipe:
    """A Dream line carries no --model (InvokeAI's parser rejects it): take it from sd-metadata or Model:."""
    if recipe.request.model:
        return recipe
    model = None
    try:
        data = load_json(texts.get("sd-metadata", "{}"), "sd-metadata")
        model = data.get("model_id") if isinstance(data, dict) else None
    except MetadataError:
        pass
    if not model and "parameters" in texts:
        model = parse_a1111(texts["parameters"])[2].get("Model")
    if model and not isinstance(model, str):
        model = None
    return replace(recipe, request=recipe.request.with_(model=model)) if model else recipe


def _app(texts: dict[str, str]) -> tuple[str, str]:
    """(app_id, app_version) of the file's sd-metadata, or empty strings."""
    try:
        data = load_json(texts.get("sd-metadata", "{}"), "sd-metadata")
    except MetadataError:
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
    dream = [("Dream", lambda t: _with_model(read_dream(t, source, app), texts))]
    sd = [("sd-metadata", read_sd_metadata)]
    # our own Dream holds only what InvokeAI 2.x reads; our sd-metadata holds the rest
    pairs += (sd + dream if app[0] == APP_ID else dream + sd) + [("parameters", read_a1111),
              ("invokeai_metadata", read_invokeai_metadata), ("prompt", read_comfyui)]
    return pairs


def fetch_recipe(path, library=None) -> Recipe:
    """The request that made the image at path, the notes on what was not carried over, and its source.
    With `library` (an `extras.Library`), the LoRAs, embeddings and VAE the image used are looked up in the
    session's folders and their hashes compared with those the image records."""
    path = Path(path)
    kind, texts, skipped = read_texts(path)
    errors: list[str] = []
    for key, reader in _readers(kind, texts):
        if key not in texts:
            continue
        try:
            recipe = reader(texts[key])
        except (MetadataError, ValueError, TypeError, KeyError, AttributeError, IndexError, OverflowError,
                RecursionError) as e:   # a hostile chunk may break a reader in any of these ways
            errors.append(f"{key}: {short(e, 300) or type(e).__name__}")
            continue
        return _checked(path, recipe, skipped, library)
    why = "; ".join(errors + skipped)
    if errors or skipped:
        raise MetadataError(f"{path}: its recipe cannot be read ({why})")
    raise MetadataError(f"{path}: no recipe in this image (no Dream, sd-metadata, parameters, invokeai_metadata "
                        "or ComfyUI prompt text)")


def _checked(path: Path, recipe: Recipe, skipped: list[str], library=None) -> Recipe:
    """Refuse an absurdly long command; add notes for skipped chunks, samplers that cannot run here and
    extras that differ from the session's files."""
    recipe = controls_at_hand(path, recipe)
    command = format_request(recipe.request)
    if len(command) > MAX_COMMAND:
        raise MetadataError(f"{path}: the recovered command is {len(command):,} characters, over the "
                            f"{MAX_COMMAND:,} a line may hold; not put on the input line")
    notes = list(recipe.notes)
    if skipped:
        notes.insert(0, "skipped: " + "; ".join(skipped))
    r = recipe.request
    why = cannot_run(r.sampler, r.schedule, r.timesteps, r.eta)
    if why:
        notes.append(f"cannot run here as it is: {why}")
    for spec in recipe.request.control:
        if spec.image != "-1" and not Path(spec.image).expanduser().is_file():
            notes.append(f"--control {short(spec.model, 60)}: its image {short(spec.image, 80)} is not at hand; "
                         "put its path on the line")
    if library is not None:
        notes += library_notes(recipe, library)
    return replace(recipe, notes=tuple(notes))


def controls_at_hand(path: Path, recipe: Recipe) -> Recipe:
    """A control image the recipe names by file name only (InvokeAI's gallery names, ComfyUI's input names) that
    lies beside the fetched image: the line gets its path there."""
    if not recipe.request.control:
        return recipe
    specs = []
    for spec in recipe.request.control:
        image = Path(spec.image).expanduser()
        beside = path.parent / image.name
        if spec.image != "-1" and not image.is_absolute() and not image.is_file() and beside.is_file():
            spec = replace(spec, image=str(beside))
        specs.append(spec)
    return replace(recipe, request=recipe.request.with_(control=tuple(specs)))


def _differs(what: str, path: Path, have: str, recorded: str) -> str:
    return (f"{what}: the file here ({short(path.name, 60)}, hash {have}) is not the one the image was made with "
            f"(hash {short(recorded, 20)}); the image may come out different")


def library_notes(recipe: Recipe, library) -> list[str]:
    """Notes for the LoRAs, embeddings and VAE of a recipe that are missing from the session's folders or whose
    files have other hashes than the image records (A1111's: `extras.lora_hash`, `embedding_hash`,
    `vae_hash`). Hashing reads each file once (cached); a file that cannot be read is named, not fatal."""
    from ...weights.library import ExtraError, embedding_hash, lora_hash, vae_hash
    notes: list[str] = []
    rec = recipe.recorded
    try:
        tags = split_prompt(recipe.request.prompt).loras
    except PromptError:
        tags = ()
    try:
        found = library.loras() if tags else {}
        hashes = {name.translate(str.maketrans("", "", ":,")): digest for name, _, digest in rec.loras}
        for tag in tags:
            path = found.get(tag.name)
            digest = hashes.get(tag.name.translate(str.maketrans("", "", ":,")))
            if path is None:
                folder = short(str(library.folders.loras), 80)
                notes.append(f"LoRA {short(tag.name, 60)} is not in the LoRA folder {folder}"
                             + (f" (the image records its hash {short(digest, 20)})" if digest else ""))
            elif digest and lora_hash(path).lower() != digest.lower():
                notes.append(_differs(f"LoRA {short(tag.name, 60)}", path, lora_hash(path), digest))
        if rec.embeddings:
            have = library.embeddings()
            lowered = {k.lower(): v for k, v in have.items()}
            for word, digest in rec.embeddings:
                path = have.get(word) or lowered.get(word.lower())
                if path is None:
                    notes.append(f"embedding {short(word, 60)} is not in the embeddings folder "
                                 f"{short(str(library.folders.embeddings), 80)}: the word is read as plain text")
                elif embedding_hash(path).lower() != digest.lower():
                    notes.append(_differs(f"embedding {short(word, 60)}", path, embedding_hash(path), digest))
        vae = recipe.request.vae
        if vae:
            try:
                path = library.find_vae(vae)
            except ExtraError as e:
                notes.append(str(e))
            else:
                digest = rec.vae[1] if rec.vae else ""
                if digest and path.is_file() and vae_hash(path).lower() != digest.lower():
                    notes.append(_differs(f"VAE {short(vae, 60)}", path, vae_hash(path), digest))
        notes += control_library_notes(recipe, library)
        notes += _civitai_notes(recipe, library, {t.name for t in tags})
    except OSError as e:
        notes.append(f"the LoRA, embedding and VAE files could not all be checked ({short(e, 120)})")
    return notes


def control_library_notes(recipe: Recipe, library) -> list[str]:
    """The recipe's ControlNets (its --control, or the units an A1111 file records) missing from the controlnets
    folder or with another hash than recorded (A1111's 8-hex `Model: NAME [hash]`)."""
    from ...weights.library import ExtraError, control_hash
    notes: list[str] = []
    hashes = {name.lower(): digest for name, digest in recipe.recorded.controls}
    names = [spec.model for spec in recipe.request.control] or [name for name, _ in recipe.recorded.controls]
    for name in names:
        try:
            used = library.find_control(name)
        except ExtraError as e:
            notes.append(str(e))
            continue
        digest = hashes.get(name.lower(), "")
        if digest and control_hash(used.path).lower() != digest.lower()[:8]:
            notes.append(_differs(f"ControlNet {short(name, 60)}", used.path, control_hash(used.path), digest))
    return notes


_FOLDER_OF = {"lora": ("LoRA", "loras"), "embedding": ("embedding", "embeddings"), "vae": ("VAE", "vaes")}


def _civitai_notes(recipe: Recipe, library, tagged: set[str]) -> list[str]:
    """The files CivitAI's `Hashes` names by the start of their sha256, looked up in the session's folders: by
    name first (a file with another hash is a note), else by hash (a file with the recorded hash under another
    name is named). LoRAs and embeddings that A1111's own hashes already cover, and checkpoints, are left out."""
    from ...weights.library import ExtraError, sha256_file
    rec = recipe.recorded
    covered = {("lora", n) for n, _, _ in rec.loras} | {("embedding", n) for n, _ in rec.embeddings}
    if rec.vae and rec.vae[1]:
        covered.add(("vae", ""))
    notes: list[str] = []
    for kind, name, digest in rec.sha256:
        if kind not in _FOLDER_OF or (kind, name) in covered or (kind == "lora" and name not in tagged):
            continue
        what, folder = _FOLDER_OF[kind]
        files = getattr(library, folder)()
        label = f"{what} {short(name, 60)}" if name else f"the {what}"
        path = files.get(name) or {k.lower(): v for k, v in files.items()}.get(name.lower()) if name else None
        if kind == "vae" and recipe.request.vae:
            try:
                path = library.find_vae(recipe.request.vae)
            except ExtraError:      # already named by library_notes
                continue
        if path is not None and path.is_file():
            have = sha256_file(path)
            if not have.startswith(digest):
                notes.append(_differs(label, path, have[:len(digest)], digest))
            continue
        match = next((p for p in sorted(set(files.values()), key=str) if p.is_file() and
                      sha256_file(p).startswith(digest)), None)
        where = short(str(getattr(library.folders, folder)), 80)
        if match is not None:
            use = {"lora": f"tag it <lora:{match.stem}>", "embedding": f"write {match.stem} in the prompt",
                   "vae": f"add --vae {match.name}"}[kind]
            notes.append(f"{label}: CivitAI records sha256 {digest}, which is {short(match.name, 60)} in {where} "
                         f"({use})")
        elif kind == "embedding":   # a missing LoRA is named by library_notes; a VAE CivitAI names is optional
            notes.append(f"{label} is not in the embeddings folder {where} (CivitAI records sha256 {digest}): the "
                         "word is read as plain text")
    return notes
