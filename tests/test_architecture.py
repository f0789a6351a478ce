"""Only dreamshell/engines/ imports torch: every other module imports without it (the prompt and the
parser appear at once, and the model loads while the user types)."""

import pkgutil
import subprocess
import sys
from pathlib import Path

import dreamshell

PACKAGE = Path(dreamshell.__file__).resolve().parent


def modules_outside_engines() -> list[str]:
    names = []
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="dreamshell."):
        if info.name in ("dreamshell.engines", "dreamshell.__main__") or info.name.startswith("dreamshell.engines."):
            continue
        names.append(info.name)
    return names


def heavy_imports(modules: list[str]) -> str:
    """Import each module in a fresh interpreter; name the first that pulls in torch/diffusers/transformers."""
    code = ("import sys, importlib\n"
            f"for m in {modules!r}:\n"
            "    importlib.import_module(m)\n"
            "    heavy = [h for h in ('torch', 'diffusers', 'transformers') if h in sys.modules]\n"
            "    if heavy:\n"
            "        print(m, 'imported', ','.join(heavy)); break\n")
    # run beside the package under test, not whichever copy is installed
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                          cwd=PACKAGE.parent).stdout.strip()


def test_every_module_outside_engines_imports_without_torch():
    modules = modules_outside_engines()
    assert {"dreamshell.run.session", "dreamshell.run.jobs", "dreamshell.run.model_host", "dreamshell.store.output",
            "dreamshell.shell.repl", "dreamshell.run.dispatch", "dreamshell.app", "dreamshell.line.parser"} <= set(modules)
    assert heavy_imports(modules) == ""


def test_the_check_catches_a_module_that_imports_torch():
    assert heavy_imports(["dreamshell.line.parser", "dreamshell.engines.upscaler"]).startswith(
        "dreamshell.engines.upscaler imported torch")


def test_dry_run_does_not_import_torch(tmp_path):
    f = tmp_path / "cmds.txt"
    f.write_text("a red circle -S 1\n")
    code = ("import sys\nfrom dreamshell.cli import main\nrc = main(['--dry_run', '--from_file', sys.argv[1]])\n"
            "print('TORCH' if 'torch' in sys.modules else 'CLEAN', rc)")
    out = subprocess.run([sys.executable, "-c", code, str(f)], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "CLEAN 0"
