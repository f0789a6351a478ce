"""100,000 random and mutated lines through the dry run's line path, in-process; prints the counts.

    python bench/fuzz_lines.py [--lines 100000] [--seed 0]
    python bench/fuzz_lines.py --worst        # time the worst single lines of issue 12
    python bench/fuzz_lines.py --compel       # compel's parse time on the worst prompts (imports torch)

Each line goes through what `dreamshell --dry_run --from_file` does for it (parse, limits, defaults,
the canonical command or the error), then its printed text through rich the way the shell prints an
error (markup off, and escaped into markup). Counted: exceptions other than the project's error
types, error messages over safetext.MESSAGE_LIMIT, messages over one line, raw control characters,
rich crashes and messages rich alters, and the longest message.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

# the checkout this script is in, or DREAMSHELL_CODE=DIR to time another (the code before a change)
sys.path.insert(0, os.environ.get("DREAMSHELL_CODE") or str(Path(__file__).resolve().parent.parent))

VALID = [
    "a lighthouse at dusk -S 42 -n 3 -s 30 -U 2", "a cat's hat -S 1", '"a -in b" -S 1',
    'outputs/000012.3355519391.png: "a fantastic alien landscape" -s 60 -S 3355519391 -W 576 -H 512 -C 7.5 -A k_lms',
    "a dog -s50 -b1 -W512 -H512 -C7.5 -mplms -S42", "x -U 4 0.5 -S -1 -I -1 -f 0.3",
    'x -A "DPM++ 2M Karras" -o "Bob\'s pics" --model demo', "x -V 42:0.1,77:0.2 -v 0.25",
    "a [blurry] [dark] (cat)1.2 ((dog)) :0.25 bird:0.75", "a red circle on a blue background -S 3 -n 2",
    "!fetch outputs/000001.2.png", "!replay log.txt", "# a comment",
]
FRAGMENTS = [
    "[/bold]", "[red]", "[/]", "[link=file:///etc/passwd]", "[@click=app.quit]", "\\[", "\\",
    "\x1b]0;title\x07", "\x1b[2J", "\r", "\x00", "\n", "\t", "\x9b", "\x7f", "\ud800", "\u2028", "\u202e",
    "9" * 400, "4294967295", "-4294967296", "1e309", "-1e309", "nan", "-inf", "-0", "0x10",
    "(", ")", "((((", "))", "[", "]", "\\(", '"', "'", ":", ":0", ":-1", "::", "#", "!", "=",
    " -n ", " -s ", " -S ", " -A ", " -o ", " -W ", " -H ", " -C ", " -U ", " -V ", " -v ", " -f ", " -I ",
    " -M ", " --model ", " --fit", " -h", " -b ", " -G ", " --embiggen ", " -- ", " - ", " -s2000",
    " -n4294967295", "東京", "🐱", "\u0301", "\ufeff",
]


def random_text(rng: random.Random, n: int) -> str:
    pools = [(0x20, 0x7e), (0x00, 0x1f), (0x80, 0x9f), (0xa0, 0x2fff), (0xd800, 0xdfff), (0x1f300, 0x1f64f)]
    out = []
    for _ in range(n):
        lo, hi = rng.choice(pools)
        out.append(chr(rng.randint(lo, hi)))
    return "".join(out)


def mutated_line(rng: random.Random) -> str:
    line = rng.choice(VALID)
    if rng.random() < 0.1:
        return random_text(rng, rng.randint(0, 200))
    for _ in range(rng.randint(1, 6)):
        at = rng.randint(0, len(line))
        action = rng.choice(["insert", "insert", "random", "delete", "repeat", "huge"])
        if action == "insert":
            line = line[:at] + rng.choice(FRAGMENTS) + line[at:]
        elif action == "random":
            line = line[:at] + random_text(rng, rng.randint(1, 8)) + line[at:]
        elif action == "delete":
            line = line[:at] + line[at + rng.randint(1, 12):]
        elif action == "repeat":
            line = line[:at] + rng.choice(FRAGMENTS) * rng.randint(2, 300) + line[at:]
        elif rng.random() < 0.2:
            line = line[:at] + rng.choice("x(9\x1b[") * rng.choice([2001, 10_001, 200_000]) + line[at:]
    return line


def _printed(console_file: io.StringIO, console, text: str, markup: bool) -> str:
    console_file.seek(0)
    console_file.truncate()
    console.print(text, markup=markup, emoji=False)
    return console_file.getvalue()[:-1]


def fuzz(lines: int, seed: int) -> None:
    from rich.console import Console

    from dreamshell.run.dryrun import DryRun
    from dreamshell.line.errors import ParseError
    from dreamshell.line.limits import check_request
    from dreamshell.weights.models import load_registry
    from dreamshell.line.parser import parse_line
    from dreamshell.line.request import DreamRequest
    from dreamshell.line.safetext import MESSAGE_LIMIT, first_unsafe, for_markup, one_line

    rng = random.Random(seed)
    registry = load_registry(None)
    checker = DryRun(registry)
    buf = io.StringIO()
    console = Console(file=buf, width=80, soft_wrap=True, highlight=False, color_system=None)
    counts = dict.fromkeys(["lines", "valid", "errors", "exceptions", "over-long errors", "multi-line errors",
                            "raw control characters", "rich crashes", "altered by rich"], 0)
    longest, slowest = 0, (0.0, "")
    t0 = time.perf_counter()
    for _ in range(lines):
        line = mutated_line(rng)
        counts["lines"] += 1
        t = time.perf_counter()
        messages = []
        try:
            item = parse_line(line)
            if isinstance(item, DreamRequest):
                check_request(item)
        except ParseError as e:
            messages.append(str(e))
        except Exception as e:  # noqa: BLE001 - counting what escapes
            counts["exceptions"] += 1
            print(f"exception {type(e).__name__}: {e!r:.200} for {line!r:.200}")
        try:
            valid, text = checker.describe(line)
        except Exception as e:  # noqa: BLE001
            counts["exceptions"] += 1
            print(f"exception {type(e).__name__}: {e!r:.200} for {line!r:.200}")
            continue
        spent = time.perf_counter() - t
        if spent > slowest[0]:
            slowest = (spent, line)
        counts["valid" if valid else "errors"] += 1
        if not valid:
            messages.append(text[len("error: "):])
        if "\n" in text or "\r" in text:
            counts["multi-line errors"] += 1
        if first_unsafe(text) is not None:
            counts["raw control characters"] += 1
        for message in messages:
            longest = max(longest, len(message))
            counts["over-long errors"] += len(message) > MESSAGE_LIMIT
            counts["multi-line errors"] += "\n" in message or "\r" in message
            counts["raw control characters"] += first_unsafe(message) is not None
            shown = one_line(message)
            try:
                plain = _printed(buf, console, shown, markup=False)
                marked = _printed(buf, console, "error: " + for_markup(message), markup=True)
            except Exception:  # noqa: BLE001 - rich's MarkupError and friends
                counts["rich crashes"] += 1
                continue
            counts["altered by rich"] += plain != shown or marked != "error: " + shown
    seconds = time.perf_counter() - t0
    for k, v in counts.items():
        print(f"{k:24} {v}")
    print(f"{'longest message':24} {longest} characters (limit {MESSAGE_LIMIT})")
    print(f"{'slowest line':24} {slowest[0] * 1000:.1f} ms ({len(slowest[1])} characters)")
    print(f"{'time':24} {seconds:.1f} s ({seconds / lines * 1e6:.0f} us a line)")


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def worst(iterations: int) -> None:
    """The single lines of issue 12 through the dry run, timed (and their peak memory)."""
    from dreamshell.run.dryrun import dry_run
    from dreamshell.line.request import DreamRequest

    cases = {
        "six unclosed '('": "a (a (a (a (a (a -S 1",
        f"-n {iterations}": f"a red circle -S 1 -n {iterations}",
        "100k-character prompt": "a " * 50_000 + "-S 1",
        "-s 10000000": "a red circle -S 1 -s 10000000",
        "200 KB garbage line": "\x1b[31m[/bold]" * 20_000,
    }
    for name, line in cases.items():
        with tempfile.TemporaryDirectory() as tmp:
            f = Path(tmp) / "cmds.txt"
            f.write_text(line + "\n", encoding="utf-8")
            out = io.StringIO()
            t = time.perf_counter()
            rc = dry_run(str(f), None, DreamRequest(prompt=""), out)
            seconds = time.perf_counter() - t
        first = out.getvalue().splitlines()[0]
        print(f"{name:24} rc {rc}  {seconds * 1000:8.1f} ms  peak RSS {_peak_mb():.0f} MB  "
              f"output {len(out.getvalue())} chars: {first[:110]!r}")


def compel_times() -> None:
    """What compel's prompt parser (run by the generator) takes on the worst prompts, refused or admitted."""
    from compel.prompt_parser import PromptParser

    from dreamshell.line.errors import ParseError
    from dreamshell.line.parser import parse_request

    prompts = {
        "five unclosed '(' (refused)": "a (a (a (a (a c",
        "((((( a ))))) (refused)": "(((((a)))))",
        "worst admitted: 13 x (((a)))": " ".join(["(((a)))"] * 13),
        "worst admitted: 40 x (a)": " ".join(["(a)"] * 40),
        "worst admitted: 2000 characters": ("a red cat, " * 200)[:2000],
    }
    parser = PromptParser()
    for name, prompt in prompts.items():
        try:
            parse_request(prompt)
            verdict = "admitted"
        except ParseError as e:
            verdict = f"refused: {str(e)[:70]}"
        t = time.perf_counter()
        parser.parse_conjunction(prompt)
        print(f"{name:34} compel {time.perf_counter() - t:6.2f} s   dreamshell {verdict}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=100_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--worst", action="store_true", help="time the worst single lines instead")
    ap.add_argument("--iterations", type=int, default=4294967295,
                    help="-n of the --worst line (the code before issue 12 needs 23 GB for the default)")
    ap.add_argument("--compel", action="store_true", help="time compel's parser on the worst prompts (torch)")
    args = ap.parse_args()
    if args.compel:
        compel_times()
    elif args.worst:
        worst(args.iterations)
    else:
        fuzz(args.lines, args.seed)
    return 0


if __name__ == "__main__":
    sys.exit(main())
