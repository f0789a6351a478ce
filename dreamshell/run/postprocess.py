"""`!fix PATH -U F [S]` and `!fix PATH --outcrop DIR PIXELS ...`: post-process an existing image into a new file
(no torch here).

`--outcrop` (InvokeAI 2.x's `!fix IMG --outcrop top 64 ...`, alias `-c`) makes a new image like any line: the
image's own recipe (its prompt, seed, steps, sampler, model) with `-I IMAGE --outcrop ...`, so its log line
replays it; `-S` and `-f` on the `!fix` line replace the recipe's seed and the strength (InvokeAI took -S too).

Writes `NNNNNN.SEED.upscale.png` beside the original (then `-01`, `-02`, ...), never overwriting. When
the original has a recipe, the result's recipe is that recipe plus `-U`, exactly what a line with
`-U` writes, and so is its log line: replaying the log makes the image again and upscales it, the
same bytes as the `!fix` result (under a new number, as every replayed image).
"""

from __future__ import annotations

import shlex
from pathlib import Path

from .. import __version__
from ..line.errors import UserError
from ..line.limits import check_upscaled
from ..line.parser import parse_switches
from ..line.request import DreamRequest, ImageRecord
from ..store.output import OutputFolder
from ..store.pngmeta import ImageMeta, MetadataError, read_recipe
from ..weights.library import RecipeExtras
from .dispatch import Command, Dispatcher, Outcome, Work
from .image import _load_image, read_image_size
from .plan import check_image_file
from .session import Session
from .types import Control, Listener

FIX_SWITCHES = {"upscale"}
OUTCROP_SWITCHES = {"outcrop", "seed", "strength"}


def check_fix(path: Path, values: dict, pending=lambda path: False) -> None:
    """Refuse at once what !fix cannot do (nothing to do, other switches, no such file)."""
    if "upscale" not in values and "outcrop" not in values:
        raise UserError("!fix needs something to do: !fix PATH -U 4 (factor, then an optional strength), or "
                        "!fix PATH --outcrop right 64")
    if "upscale" in values and "outcrop" in values:
        raise UserError("!fix does one thing at a time: -U or --outcrop")
    allowed = OUTCROP_SWITCHES if "outcrop" in values else FIX_SWITCHES
    extra = set(values) - allowed
    if extra:
        took = "--outcrop with -S and -f" if "outcrop" in values else "only -U"
        raise UserError(f"!fix takes {took}; {', '.join(sorted(extra))} belong on a prompt line")
    if not (pending(str(path)) and not path.exists()):
        check_image_file(str(path), "!fix")


def upscale_file(session: Session, path: Path, spec) -> tuple[ImageRecord, object]:
    """Upscale the image at path into STEM.upscale[-NN].png beside it, never overwriting."""
    check_image_file(str(path), "!fix")
    try:
        recipe: DreamRequest | None = read_recipe(path)
    except MetadataError:
        recipe = None
    width, height = read_image_size(str(path), "!fix")
    check_upscaled(width, height, spec.factor, "!fix -U")
    image = _load_image(str(path), "!fix", "RGB")
    host = session.host
    up = host.call(lambda: host.upscale(image, spec.factor, spec.strength))
    folder = OutputFolder(path.parent, log=session.log_enabled)
    if recipe is None:
        return ImageRecord(str(folder.save_fix(path, up, None)), -1, ""), up
    request = recipe.with_(upscale=spec)
    post = ({"type": "esrgan", "scale": spec.factor, "strength": spec.strength},)
    try:   # the source image's LoRAs, embeddings and VAE, where their files are here
        extras = session.library.recipe_extras(recipe.prompt, recipe.vae)
    except (UserError, OSError):
        extras = None
    meta = ImageMeta(request, host.generator.model_hash if host.generator else "", __version__, post,
                     "img2img" if recipe.init_img else "txt2img", extras or RecipeExtras())
    out = folder.save_fix(path, up, meta)
    return ImageRecord(str(out), request.seed, meta.command), up


def inpainting_variant(registry, name: str | None) -> str | None:
    """The models file's inpainting model for the model `name`: of its family, the one whose name holds the
    model's name (`sd15` -> `sd15-inpainting`), else the only one; None when there is none."""
    spec = registry.models.get(name or "")
    if spec is None or not spec.kind or spec.kind.endswith("-inpaint"):
        return None
    family = spec.kind.split("-")[0]
    found = [s.name for s in registry.models.values() if s.kind == f"{family}-inpaint"]
    named = [n for n in found if spec.name.lower() in n.lower()]
    return (named or found)[0] if len(named) == 1 or len(found) == 1 else None


def outcrop_request(path: Path, values: dict, registry=None) -> tuple[DreamRequest, str | None]:
    """The line `!fix PATH --outcrop ...` runs: the image's recipe, from the image, grown (on the models file's
    inpainting variant of its model, when there is one: the note says so)."""
    try:
        recipe = read_recipe(path)
    except MetadataError as e:
        raise UserError(f"!fix --outcrop: {e}; outcrop such an image with a line: PROMPT -I {path} --outcrop ...") \
            from None
    plain = DreamRequest(prompt=recipe.prompt)
    keep = {f: getattr(recipe, f) for f in ("steps", "seed", "cfg_scale", "sampler", "schedule", "model",
                                             "seamless", "clip_skip", "vae")}
    keep.update({k: values[k] for k in ("seed", "strength") if k in values})
    request = plain.with_(**keep, init_img=str(path), outcrop=values["outcrop"])
    variant = inpainting_variant(registry, request.model) if registry is not None else None
    if variant is None:
        return request, None
    return request.with_(model=variant), (f"outcrop with {variant}, the models file's inpainting model for "
                                          f"{request.model}")


def fix_image(session: Session, path: Path, values: dict, listener: Listener) -> Path:
    """Upscale the image at path as `values` say; the result is an image made like any other: shown (with
    its thumbnail), and the one `-I -1` names next."""
    check_fix(path, values)
    spec = values["upscale"]
    record, image = upscale_file(session, path, spec)
    if not record.command:
        listener.note(f"{record.path}: upscaled x{spec.factor:g} (the original has no recipe, so none is written)")
    else:
        session.state.image_made(record.seed, record.path)
        listener.image_saved(record, image)
    return Path(record.path)


def register_fix(dispatcher: Dispatcher) -> None:
    def handler(args: str) -> Work:
        try:
            tokens = shlex.split(args)
        except ValueError as e:
            raise UserError(f"!fix: cannot read '{args}': {e}") from None
        if not tokens:
            raise UserError("!fix needs a path and -U: !fix outputs/000001.42.png -U 4")
        try:
            values, _ = parse_switches(tokens[1:])
        except UserError as e:
            raise UserError(f"!fix: {e}") from None
        path = Path(tokens[0]).expanduser()
        check_fix(path, values, pending=dispatcher.may_be_made)
        if "outcrop" in values:
            def outcrop(control: Control, listener: Listener) -> Outcome:
                request, note = outcrop_request(path, values, dispatcher.session.registry)
                if note:
                    listener.note(f"note: {note}")
                return dispatcher._dream(dispatcher.session.check(request), control, listener)
            return Work(f"!fix {args}", outcrop)

        def run(control: Control, listener: Listener) -> Outcome:
            fix_image(dispatcher.session, path, values, listener)
            return Outcome()
        return Work(f"!fix {args}", run)

    dispatcher.register(Command("fix", "!fix PATH -U F [S] | --outcrop DIR PX ...",
                                "upscale an existing image into NNNNNN.SEED.upscale.png (never overwrites), or grow "
                                "it (--outcrop top 64 right 128, InvokeAI's -c) into a new image", handler, "path"))
