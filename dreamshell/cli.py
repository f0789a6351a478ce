"""argv -> config: the launcher's switches, the session defaults, and the run (app.py builds the parts).

Heavy modules (torch, diffusers) are imported only when a model is really loaded, so `--help`,
`--version`, `--dry_run` and the first `dream>` prompt appear at once.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import __version__
from .line.errors import LimitError
from .line.limits import check_request
from .line.request import REQUEST_DEFAULTS, DreamRequest
from .line.safetext import shorten
from .line.switches import SWITCHES, SwitchError
from .weights.files import describe_kind, kind_of

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")
os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")


LAUNCHER_OWNED = {"outdir", "model"}  # at launch these pick the folder and the resident model
LINE_ONLY = {"control", "outcrop"}    # name an image of one line: not a session default


def _table_type(sw):
    def convert(token: str):
        try:
            return sw.convert([token] if sw.nargs[1] > 1 else token)
        except SwitchError as e:
            raise argparse.ArgumentTypeError(str(e)) from None
    convert.__name__ = sw.metavar or sw.field
    return convert


def _positive_int(token: str) -> int:
    try:
        value = int(token)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"'{token}' is not a whole number of 1 or more")
    return value


class _Formatter(argparse.HelpFormatter):
    """argparse's help, but a switch of one or two values shows as `-U F [S]`, as it is typed."""

    def _format_args(self, action, default_metavar):
        shown = getattr(action, "shown_args", None)
        return shown or super()._format_args(action, default_metavar)


def build_argparser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(
        formatter_class=_Formatter,
        prog="dreamshell",
        description="An interactive dream> shell for Stable Diffusion: one resident model, prompts with "
                    "inline switches, every image logged and replayable.",
        epilog="Prompt switches given here (e.g. -s 30 -W 64) are session defaults for every line.")
    ap.add_argument("line", nargs="?", help="run this one dream> line and exit (e.g. \"a red circle -S 1\")")
    ap.add_argument("--version", action="version", version=f"dreamshell {__version__}")
    ap.add_argument("--config", type=Path, default=None,
                    help="models file (default: models/models.yaml if present, else the built-in demo model)")
    ap.add_argument("-o", "--outdir", type=Path, default=Path("outputs"), help="where images and dream_log.txt go")
    ap.add_argument("--model", default=None, help="the model to load: a name from the models file or a path")
    ap.add_argument("--lora_dir", metavar="DIR", default=None,
                    help="folder of LoRA .safetensors files for <lora:NAME:WEIGHT> (default: 'loras:' in the models "
                         "file, else models/loras in the working folder if there is one, else the installed demo "
                         "folder)")
    ap.add_argument("--embedding_dir", metavar="DIR", default=None,
                    help="folder of textual-inversion embeddings, used by file name as a word of the prompt "
                         "(default: 'embeddings:' in the models file, else models/embeddings in the working folder "
                         "if there is one, else the installed demo folder)")
    ap.add_argument("--vae_dir", metavar="DIR", default=None,
                    help="folder --vae NAME looks in (default: 'vaes:' in the models file, else models/vae in the "
                         "working folder if there is one, else the installed demo folder)")
    ap.add_argument("--controlnet_dir", metavar="DIR", default=None,
                    help="folder of ControlNet and T2I-Adapter files and folders for --control MODEL:IMAGE (default: "
                         "'controlnets:' in the models file, else models/controlnets in the working folder if there "
                         "is one, else the installed demo folder)")
    ap.add_argument("--decoder_dir", metavar="DIR", default=None,
                    help="folder of tiny decoders (TAESD files or AutoencoderTiny folders) --decoder looks in "
                         "(default: 'decoders:' in the models file, else models/taesd in the working folder if there "
                         "is one, else the installed demo folder)")
    ap.add_argument("--from_file", metavar="FILE|-", help="run each line of FILE (a dream_log.txt as it is), then exit")
    ap.add_argument("--dry_run", action="store_true",
                    help="with --from_file: print the canonical command of each line (or its error) "
                         "without loading a model")
    ap.add_argument("--ray", nargs="?", const="local", default=None, metavar="ADDRESS",
                    help="with --from_file: make the images on a Ray cluster (ADDRESS as ray.init takes it, "
                         "e.g. auto; none starts a local Ray), one worker per GPU")
    ap.add_argument("--ray_cpus_per_worker", type=int, default=4, metavar="N",
                    help="with --ray on nodes without a GPU: one worker per N cores (default 4)")
    ap.add_argument("--ray_workers", type=int, default=None, metavar="K",
                    help="with --ray: at most K workers (default: as many as the cluster has room for)")
    ap.add_argument("--resume", action="store_true",
                    help="with --ray: skip the images the output folder's log already has (a rerun "
                         "continues a stopped batch)")
    ap.add_argument("--precision", choices=("auto", "float32", "float16", "bfloat16"), default="auto",
                    help="auto: float16 on CUDA/MPS; on CPU bfloat16 where the CPU has it natively "
                         "(AVX512-BF16/AMX), else float32")
    ap.add_argument("--vae_precision", choices=("auto", "float32"), default="auto",
                    help="beside a bfloat16 model on a CPU, the VAE and tiny decoder: auto decodes in bfloat16 "
                         "where that was measured close to float32 (SD 1.x/2.x/XL; SD 3 and FLUX.1 stay "
                         "float32), float32 always keeps them float32 (A1111's --no-half-vae)")
    ap.add_argument("--lowvram", action="store_true",
                    help="CUDA/MPS: keep each part of the model in CPU memory until it runs (model CPU offload) "
                         "and decode in tiles; slower, for 4-8 GB GPUs and 8 GB Macs")
    ap.add_argument("--compile", action="store_true",
                    help="torch.compile the UNet (compiled once per model and image size; the first image is slow)")
    ap.add_argument("--batch_size", type=_positive_int, default=1, metavar="N",
                    help="run up to N images of -n as one batch (GPU; each keeps its own seed's noise)")
    ap.add_argument("--device", choices=("auto", "cuda", "mps", "cpu"), default="auto",
                    help="where the model runs: auto (a CUDA GPU, then Apple's MPS, then the CPU), cuda, mps or cpu")
    ap.add_argument("--history_file", type=Path, default=None, metavar="FILE",
                    help="prompt history (default: the user data folder; env DREAMSHELL_HISTORY)")
    ap.add_argument("--no_log", action="store_true", help="do not append to dream_log.txt")
    ap.add_argument("--preview", choices=("auto", "kitty", "iterm", "sixel", "blocks", "off"), default="auto",
                    help="thumbnails after each image and a live preview while one draws: the terminal's "
                         "graphics protocol, 24-bit half-blocks, or off (default: detected)")
    defaults = ap.add_argument_group("prompt switches as session defaults")
    for sw in SWITCHES:
        if sw.field in LAUNCHER_OWNED | LINE_ONLY:
            continue
        names = list(sw.short) + [sw.long]
        if sw.is_flag:
            defaults.add_argument(*names, dest=f"d_{sw.field}", action="store_true", help=sw.help)
        else:
            multi = sw.nargs[1] > 1  # -U F [S]: converted together in session_defaults
            action = defaults.add_argument(*names, dest=f"d_{sw.field}", type=str if multi else _table_type(sw),
                                           nargs="+" if multi else None, metavar=sw.metavar, help=sw.help)
            action.shown_args = sw.metavar if multi else None
    return ap


def session_defaults(args: argparse.Namespace, ap: argparse.ArgumentParser) -> DreamRequest:
    values = {}
    for sw in SWITCHES:
        if sw.field in LAUNCHER_OWNED | LINE_ONLY:
            continue
        v = getattr(args, f"d_{sw.field}", None)
        if sw.nargs[1] > 1 and v is not None:
            if len(v) > sw.nargs[1]:
                ap.error(f"{sw.spelling} takes at most {sw.nargs[1]} values: {sw.spelling} {sw.metavar}")
            try:
                v = sw.convert(v)
            except SwitchError as e:
                ap.error(f"{sw.spelling}: {e}")
        if v not in (None, False):
            values[sw.field] = v
    values = {k: v for k, v in values.items() if v != REQUEST_DEFAULTS[k]}
    if any(k.startswith("hires_") for k in values):
        values["hires_fix"] = True   # as on a line: --hires_scale and the rest imply the hires fix
    if "inpaint_padding" in values and "inpaint_area" not in values:
        values["inpaint_area"] = "masked"   # as on a line
    if values.get("timesteps"):      # as on a line: explicit timesteps set -s and stand without --schedule
        count = len(values["timesteps"])
        if values.get("schedule"):
            ap.error("--timesteps sets the noise levels itself; give it without --schedule")
        if values.get("steps", count) != count:
            ap.error(f"-s {values['steps']} but --timesteps names {count}; give one of them")
        values["steps"] = count
    defaults = DreamRequest(prompt="", **values)
    try:
        check_request(defaults)
    except LimitError as e:
        ap.error(str(e))
    return defaults


def default_models_file() -> Path | None:
    """models/models.yaml in the working folder, if there is one (the LoRA, embedding and VAE folders
    follow the same rule: weights/models.default_folders)."""
    p = Path("models/models.yaml")
    return p if p.exists() else None


def main(argv: list[str] | None = None) -> int:
    ap = build_argparser()
    args = ap.parse_args(argv)
    if args.dry_run and not args.from_file:
        ap.error("--dry_run needs --from_file FILE (the file to check)")
    if args.ray is not None and not args.from_file:
        ap.error("--ray needs --from_file FILE (the command file to run on the cluster)")
    if args.resume and args.ray is None:
        ap.error("--resume works with --ray: dreamshell --from_file FILE --ray --resume")
    if args.ray_cpus_per_worker < 1 or (args.ray_workers is not None and args.ray_workers < 1):
        ap.error("--ray_cpus_per_worker and --ray_workers take a whole number of at least 1")
    if args.config is not None and kind_of(args.config) in ("missing", "too long"):
        print(f"error: models file {shorten(str(args.config), 120)}: {describe_kind(kind_of(args.config))}",
              file=sys.stderr)
        return 2
    config = args.config or default_models_file()
    if args.dry_run:
        from .app import launch_folders
        from .run.dryrun import dry_run
        return dry_run(args.from_file, config, session_defaults(args, ap), sys.stdout, launch_folders(args))
    from .app import run_app
    return run_app(args, config, session_defaults(args, ap))


if __name__ == "__main__":
    sys.exit(main())
