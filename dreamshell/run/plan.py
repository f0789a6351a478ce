"""A line planned once: the one place that turns a parsed request into the images to make (no torch).

Every way a line runs uses this: the shell and one-shot lines (run/session.py), `--from_file` and
`!replay` (through the session), the dry run (run/dryrun.py) and the Ray driver (batch/plan.py).

Planning has two steps, because the shell answers a typed line at once but runs it later, after the
jobs queued before it:
- `Planner.check(request)`: what the line alone can tell. Session defaults applied, the model it
  names, its limits, a sampler that cannot run here, its LoRA / embedding / VAE files (each folder
  scanned once), its `-I`/`-M` files. Raises `UserError`.
- `Planner.resolve(checked, state)`: what depends on the lines before it (`PlanState`): the model
  that is current, `-S -N`, `-I -1`, the size of an init image, random seeds, one request per image
  (`-n`, `-v`), and the recipe's hashes. Leaves `state` as it was; `state.after_line(plan)` moves it on
  for drivers that plan a whole file ahead (the dry run, Ray); the session moves it as images are saved.
"""

from __future__ import annotations

import importlib.util
import random
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path

from ..line.control import DEFAULT_PADDING, OUTCROP_STRENGTH, default_preprocessor, map_word, outcrop_size
from ..line.errors import UserError
from ..line.limits import MAX_SIZE, MIN_SIZE, check_denoised_steps, check_resolved
from ..line.parser import parse_line
from ..line.presets import apply_model_preset, apply_preset, prediction_needed
from ..line.rng import resolved_rng
from ..line.request import BangCommand, Blank, DreamRequest, HelpRequest
from ..line.safetext import shorten
from ..line.samplers import SamplerError, find_sampler
from ..line.samplers import plan as scheduler_plan
from ..weights import families
from ..weights.checkpoint import FAMILY_NAMES
from ..weights.decoders import WORDS as DECODER_WORDS
from ..weights.decoders import find_decoder, line_decoders
from ..weights.files import describe_kind, kind_of
from ..weights.library import Library, LineFiles, RecipeExtras
from ..weights.models import ModelsFileError, ModelSpec, Registry
from .resolve import UNKNOWN_SEEDS, apply_defaults, image_requests, resolve_request

LAST_IMAGE = "-1"     # -I -1: the last image made before the line


class Pending:
    """The image `-I -1` names when it is not written yet (a Ray batch plans ahead of its writer)."""

    def __repr__(self) -> str:
        return "<an earlier image of this file>"


PENDING = Pending()


@dataclass(frozen=True)
class CheckedLine:
    """A prompt line checked on its own: the session defaults applied, nothing resolved yet."""

    request: DreamRequest
    spec: ModelSpec | None       # the model the line names (None: the one current when it runs)
    files: LineFiles             # its LoRAs and embeddings (and a VAE it names), found once
    explicit_size: bool          # -W/-H given (on the line or at launch): an init image must match, or --fit
    notes: tuple[str, ...] = ()  # what the user should know before it runs (an embedding name with no file)
    preset: str | None = None    # the --preset it was filled from (the line's or the launch's), for the checks


@dataclass(frozen=True)
class LinePlan:
    """A line ready to run: every image's request, the files they use, the model."""

    line: DreamRequest                    # resolved: the first image's seed, steps, size, sampler, model ...
    spec: ModelSpec
    images: tuple[DreamRequest, ...]      # one per image (-n, -v); init_img may still be "-1" (PENDING)
    files: LineFiles
    explicit_size: bool
    notes: tuple[str, ...] = ()

    @cached_property
    def extras(self) -> RecipeExtras:
        """The files with A1111's hashes for the images' recipes (hashed once, when first saved)."""
        return self.files.recipe()

    @property
    def grid(self) -> bool:
        return self.line.grid and len(self.images) > 1

    def grid_request(self, first: DreamRequest) -> DreamRequest:
        """The grid's recipe: the line (-n N, its first seed) at the size its images were made."""
        return self.line.with_(grid=False, width=first.width, height=first.height, init_img=first.init_img)


@dataclass
class PlanState:
    """What earlier lines leave for the next: the current model, the seeds of the images made (`-S -N`),
    the last image (`-I -1`) and its size. `rng` draws the seeds a line leaves open; None leaves them
    unknown (the dry run shows `<random>`)."""

    model: ModelSpec
    rng: random.Random | None = field(default_factory=random.SystemRandom)
    seeds: list = field(default_factory=list)          # int, or None for a seed only known when it runs
    last_image: object = None                          # a path (str), PENDING, or None: none made yet
    last_size: tuple[int, int] | None = None           # the last image's size, when its file is not there yet
    images: int = 0                                    # images made (or planned) so far

    def after_line(self, plan: LinePlan) -> None:
        """Move on past a planned line as if its images were made."""
        self.model = plan.spec
        self.seeds.extend(one.seed for one in plan.images)
        self.images += len(plan.images)
        last = plan.images[-1]
        factor = last.upscale.factor if last.upscale else 1
        self.last_image = PENDING
        self.last_size = (round(last.width * factor), round(last.height * factor))

    def image_made(self, seed: int, path: str) -> None:
        """An image was saved (the session moves on image by image)."""
        self.seeds.append(seed)
        self.images += 1
        self.last_image, self.last_size = path, None


class Planner:
    """Plans lines for one registry, one set of session defaults and one library of files."""

    def __init__(self, registry: Registry, defaults: DreamRequest | None = None, library: Library | None = None):
        self.registry = registry
        self.launch_preset = defaults.preset if defaults is not None else None
        # a preset given at launch fills the launch's defaults once (what the launch switches leave open);
        # a line with a preset of its own takes the launch's switches without the launch's preset
        self.switches = defaults.with_(preset=None) if defaults is not None else None
        self.defaults = apply_preset(defaults) if defaults is not None else None
        self.library = library or Library(registry.folders)

    def model(self, name: str) -> ModelSpec:
        """A model by name or path, its weights there; one line when not."""
        spec = self.registry.get(name)
        check_weights(spec)
        return spec

    def check(self, request: DreamRequest, files: bool = True, pending=lambda path: False,
              current: ModelSpec | None = None) -> CheckedLine:
        """Everything the line alone can tell (`files`: also its -I/-M files). A file that is not there
        yet but that `pending(path)` says a queued line may make is looked for when the line runs.
        `current`: the model the line runs on when it names none (its family's rules are checked too)."""
        # precedence: the line's switches, its --preset, the launch's switches, the launch's --preset, then
        # (when it runs) the model's defaults and its models-file preset
        line_preset = request.preset
        request = apply_defaults(apply_preset(request), self.switches if line_preset else self.defaults)
        if request.inpaint_area and not request.init_mask:   # a session default for lines without -M
            request = request.with_(inpaint_area=None, inpaint_padding=None)
        spec = self.model(request.model) if request.model is not None else None
        check_sampler(request.sampler, request.schedule)
        # a model's own VAE: when it runs
        found = self.library.files_for(request.prompt, request.vae, request.control)
        check_family(request, spec or current, found)
        if request.decoder and request.decoder not in DECODER_WORDS:   # issue 17: a name is looked up now
            find_decoder(request.decoder, self.library.folders)
        explicit = bool(request.width or request.height)
        if files:
            images = [(request.init_img, "-I"), (request.init_mask, "-M")]
            images += [(one.image, f"--control {one.model}:") for one in request.control]
            for path, what in images:
                if path and path != LAST_IMAGE and not (pending(path) and not _exists(path)):
                    check_image_file(path, what)
            if request.init_img and request.init_img != LAST_IMAGE and not explicit and _exists(request.init_img):
                size_from_image(request.init_img)
        notes = tuple(self.library.missing_embedding_notes(request.prompt, found.embeddings))
        notes += tuple(control_notes(request, found))
        return CheckedLine(request, spec, found, explicit, notes, line_preset or self.launch_preset)

    def resolve(self, checked: CheckedLine, state: PlanState) -> LinePlan:
        """The line after the lines before it: model, seeds, -I -1, sizes, one request per image."""
        request, spec = checked.request, checked.spec or state.model
        check_weights(spec)
        request = apply_model_preset(request, spec.preset, spec.steps, spec.sampler, spec.cfg_scale)
        preset = checked.preset or spec.preset
        resolved = resolve_request(request, spec, state.seeds, state.rng).with_(
            model=spec.name, rng=resolved_rng(request.rng, spec.rng))
        if preset:
            why = prediction_needed(preset, resolved.steps, spec.prediction)
            if why:
                raise UserError(why)
        check_sampler(resolved.sampler, resolved.schedule)
        check_resolved(resolved)
        check_denoised_steps(resolved)
        check_family(resolved, spec, checked.files)
        resolved = families.family_defaults(resolved, spec)   # its schedule and guidance written out
        files = checked.files
        if resolved.vae and files.vae is None:   # the model's own VAE setting (the line named none)
            files = replace(files, vae=self.library.find_vae(resolved.vae))
        decoders = line_decoders(resolved.decoder, spec, self.library.folders)   # issue 17: tiny decoder, preview
        files = replace(files, decoder=decoders.decoder, preview=decoders.preview)
        if resolved.init_img == LAST_IMAGE:
            if state.last_image is None:
                raise UserError("-I -1 means the last image made, but none was made before this line")
            if state.last_image is not PENDING:
                resolved = resolved.with_(init_img=str(state.last_image))
        if resolved.init_img and not checked.explicit_size:
            if resolved.init_img == LAST_IMAGE:
                size = state.last_size
            else:
                size = size_from_image(resolved.init_img) if Path(resolved.init_img).expanduser().is_file() else None
            if size is not None:
                resolved = resolved.with_(width=size[0], height=size[1])
        resolved = resolve_control(resolved, checked.request, spec, files, state)
        images = tuple(image_requests(resolved, state.rng))
        return LinePlan(resolved, spec, images, files, checked.explicit_size, checked.notes)

    def plan(self, request: DreamRequest, state: PlanState, files: bool = True) -> LinePlan:
        return self.resolve(self.check(request, files), state)


def plan_file_line(planner: Planner, state: PlanState, text: str, ray: bool = False):
    """One line of a command file planned ahead (Ray and the dry run): a LinePlan (state moved past it),
    a ModelSpec for `!switch NAME`, or the parsed item for other lines; UserError for a bad line."""
    item = parse_line(text)
    if isinstance(item, Blank):
        return item
    if isinstance(item, HelpRequest):
        if ray:
            raise UserError("a help line makes no image; remove it from the file")
        return item
    if isinstance(item, BangCommand):
        if item.name == "switch" and item.args:
            state.model = planner.model(item.args.strip().strip("\"'"))
            return state.model
        if ray:
            raise UserError(f"!{item.name} is not run with --ray (only prompt lines and !switch NAME are)")
        return item
    plan = planner.plan(item, state)
    if ray and any(one.image == LAST_IMAGE for one in plan.line.control):
        raise UserError("--control ...:-1 names an image this file makes, which a --ray batch does not have when it "
                        "plans; give the image's path")
    state.after_line(plan)
    return plan


# ----- --control, --outcrop, --inpaint_area (line/control.py has their syntax)

def control_notes(request: DreamRequest, files: LineFiles) -> list[str]:
    """What a user should know before a --control line runs: an image taken as a map dreamshell cannot make."""
    notes = []
    for spec, used in zip(request.control, files.controls):
        word = map_word(used.name)
        if spec.pre() == "none" and word:
            notes.append(f"note: --control {used.name}: the image is used as a {word} map as it is (dreamshell has no "
                         f"{word} preprocessor: make the map elsewhere)")
    return notes


def resolve_control(resolved: DreamRequest, typed: DreamRequest, spec: ModelSpec, files: LineFiles,
                    state: PlanState) -> DreamRequest:
    """The control models by their file names (what the log line replays), each family checked against the model,
    -1 as the last image, outcrop's strength and size, the Only masked padding."""
    if resolved.control:
        family = (spec.kind or "").split("-")[0]
        kinds = {used.kind for used in files.controls}
        if len(kinds) > 1:
            raise UserError("--control: a line takes ControlNets or T2I-Adapters, not both")
        specs = []
        for one, used in zip(resolved.control, files.controls):
            if family and used.family and used.family != family:
                what = "ControlNet" if used.kind == "controlnet" else "T2I-Adapter"
                raise UserError(f"--control {used.name} is a {what} for {FAMILY_NAMES.get(used.family, used.family)}; "
                                f"model '{spec.name}' is {FAMILY_NAMES.get(family, family)}: use one made for it")
            if used.kind == "t2i-adapter":
                check_adapter(one, used, resolved, family)
            image = one.image
            if image == LAST_IMAGE:
                if state.last_image is None:
                    raise UserError(f"--control {one.model}:-1 means the last image made, but none was made before "
                                    "this line")
                if state.last_image is not PENDING:
                    image = str(state.last_image)
            pre = one.pre() if one.pre() != default_preprocessor(used.name) else None
            specs.append(replace(one, model=used.name, image=image, preprocessor=pre))
        resolved = resolved.with_(control=tuple(specs))
    if resolved.outcrop:
        if typed.strength is None:
            resolved = resolved.with_(strength=OUTCROP_STRENGTH)
        width, height = outcrop_size(resolved.width, resolved.height, resolved.outcrop)
        if max(width, height) > MAX_SIZE:
            raise UserError(f"--outcrop makes {width}x{height}; sides are at most {MAX_SIZE}")
    if resolved.inpaint_area == "masked" and resolved.inpaint_padding is None:
        resolved = resolved.with_(inpaint_padding=DEFAULT_PADDING)
    return resolved


def check_adapter(one, used, request: DreamRequest, family: str) -> None:
    """What diffusers' T2I-Adapter pipelines can do: images from noise; SD 1.x/2.x adapters for all the steps,
    SDXL ones from the first step to a fraction of them."""
    if request.init_img or request.hires_fix:
        raise UserError(f"--control {used.name} is a T2I-Adapter: diffusers' adapter pipelines make images from "
                        "noise only (no -I, -M or --hires_fix); use a ControlNet")
    if one.start != 0 or (one.end != 1 and family != "sdxl"):
        raise UserError(f"--control {used.name}: a T2I-Adapter acts from the first step"
                        + (" to END" if family == "sdxl" else " to the last") + "; leave out START"
                        + ("" if family == "sdxl" else " and END"))


# ----- checks shared by every path (the same words on each)

def check_weights(spec: ModelSpec) -> None:
    if not spec.weights.exists():
        raise ModelsFileError(f"model '{spec.name}': {spec.weights} does not exist; fix 'weights' in the models "
                              "file or give --model a path that exists")


def check_family(request: DreamRequest, spec: ModelSpec | None, files: LineFiles | None = None) -> None:
    """The switches the model's family does not take (guidance on SD, clip skip on FLUX.1, a FLUX.1 LoRA on
    SDXL, ...): one line, the same words the engine would say."""
    why = families.check_line(request, spec, files)
    if why:
        raise UserError(why)


def check_sampler(sampler: str | None, schedule: str | None) -> None:
    """A sampler and schedule that can run here (diffusers has them, and the packages they need)."""
    if not sampler:
        if schedule:
            scheduler_plan("k_euler", schedule)   # an unknown schedule name is refused by the parser
        return
    try:
        planned = scheduler_plan(sampler, schedule)
    except SamplerError as e:
        raise UserError(str(e)) from None
    if planned.needs and importlib.util.find_spec(planned.needs) is None:
        found = find_sampler(sampler)
        raise UserError(f"sampler '{found.name if found else sampler}' needs the '{planned.needs}' package: "
                        f"pip install {planned.needs}")


def _exists(path: str) -> bool:
    try:
        return Path(path).expanduser().exists()
    except OSError:      # a name too long for the file system: check_image_file says so
        return True


def check_image_file(path: str, what: str) -> None:
    """-I / -M name a regular file (a FIFO or a device would block the queue or never end)."""
    kind = kind_of(path)
    if kind in ("missing", "too long"):
        raise UserError(f"{what} {shorten(path, 120)}: {describe_kind(kind)}")
    if kind != "file":
        raise UserError(f"{what} {shorten(path, 120)}: is {describe_kind(kind)}; give an image file")


def size_from_image(path: str) -> tuple[int, int]:
    """The size a line without -W/-H takes from its init image: its own, rounded down to a multiple of 8
    (the header is read, not the pixels); one line when that is outside the size limits."""
    from .image import read_image_size
    width, height = read_image_size(path, "-I")
    w, h = width // 8 * 8, height // 8 * 8
    if not (MIN_SIZE <= w <= MAX_SIZE and MIN_SIZE <= h <= MAX_SIZE):
        raise UserError(f"-I {width}x{height} image: without -W/-H the image's own size is used, and sizes go "
                        f"from {MIN_SIZE} to {MAX_SIZE}; add -W/-H and --fit")
    return w, h


def batch_groups(images: tuple[DreamRequest, ...], size: int, together: bool) -> list[list[DreamRequest]]:
    """Images made together (`--batch_size N`): consecutive txt2img images of one line that differ only
    in seed and variations (each keeps its own seed's noise); one at a time otherwise. Decided here once."""
    groups: list[list[DreamRequest]] = []
    for one in images:
        same = (together and groups and len(groups[-1]) < size and one.init_img is None and not one.hires_fix
                and groups[-1][0].with_(seed=0, with_variations=()) == one.with_(seed=0, with_variations=()))
        if same:
            groups[-1].append(one)
        else:
            groups.append([one])
    return groups


__all__ = ["CheckedLine", "LinePlan", "PENDING", "UNKNOWN_SEEDS", "plan_file_line", "PlanState", "Planner", "batch_groups",
           "check_family", "check_image_file", "check_sampler", "check_weights", "size_from_image"]
