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


# ----- import directions: the stages of ARCHITECTURE.md's table, checked on every module's source

import ast  # noqa: E402

STAGES = ("line", "weights", "store", "engines", "run", "batch", "shell", "demo")
# what each stage may import (besides the standard library, third-party packages and `dreamshell`'s
# own __version__); the same table is in ARCHITECTURE.md
ALLOWED = {
    "line": {"line"},
    "weights": {"line", "weights"},
    "store": {"line", "weights", "store"},
    "engines": {"line", "weights", "engines"},
    "run": {"line", "weights", "store", "run", "engines.protocols"},
    "batch": {"line", "weights", "store", "run", "batch", "engines"},
    "shell": {"line", "weights", "store", "run", "shell"},
    "demo": {"demo", "line", "weights", "run", "engines"},
}


def stage_of(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in STAGES else None


def imported_modules(module: str, source: str, is_package: bool = False) -> list[str]:
    """The dreamshell modules `module`'s source imports (at any depth: function-level imports count)."""
    package = module if is_package else module.rsplit(".", 1)[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            if target.startswith("dreamshell"):
                for alias in node.names:     # `from ..store import output`: output is a module of store
                    sub = f"{target}.{alias.name}"
                    found.append(sub if _is_module(sub) else target)
        elif isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.startswith("dreamshell")]
    return found


def _is_module(name: str) -> bool:
    path = PACKAGE.joinpath(*name.split(".")[1:])
    return path.with_suffix(".py").exists() or (path / "__init__.py").exists()


def wrong_way_imports(module: str, source: str, is_package: bool = False) -> list[str]:
    """`module -> target` for each import the table does not allow."""
    stage = stage_of(module)
    if stage is None:            # app, cli, __main__: the composition root may import anything
        return []
    bad = []
    for target in imported_modules(module, source, is_package):
        if target in ("dreamshell", "dreamshell.__version__"):
            continue
        rel = target.split(".", 1)[1] if "." in target else ""
        if not any(rel == a or rel.startswith(a + ".") for a in ALLOWED[stage]):
            bad.append(f"{module} -> {target}")
    return bad


def all_modules():
    for info in pkgutil.walk_packages([str(PACKAGE)], prefix="dreamshell."):
        rel = info.name.split(".")[1:]
        path = PACKAGE.joinpath(*rel)
        path = path / "__init__.py" if info.ispkg else path.with_suffix(".py")
        yield info.name, path.read_text(encoding="utf-8"), info.ispkg


def test_imports_run_only_down_the_stages():
    bad = [b for name, source, pkg in all_modules() for b in wrong_way_imports(name, source, pkg)]
    assert bad == []


def test_every_module_is_in_a_stage_folder_or_the_composition_root():
    top = {name for name, _, _ in all_modules() if stage_of(name) is None}
    assert top == {"dreamshell.app", "dreamshell.cli", "dreamshell.__main__"}


def test_the_check_catches_an_upward_import():
    # the session reaching up into the shell, the parser into the output folder, run into the generator
    assert wrong_way_imports("dreamshell.run.session", "from ..shell.repl import DreamShell\n") == [
        "dreamshell.run.session -> dreamshell.shell.repl"]
    assert wrong_way_imports("dreamshell.line.parser", "def f():\n    from ..store import output\n") == [
        "dreamshell.line.parser -> dreamshell.store.output"]
    assert wrong_way_imports("dreamshell.run.image", "from ..engines.generator import DiffusersGenerator\n") == [
        "dreamshell.run.image -> dreamshell.engines.generator"]
    assert wrong_way_imports("dreamshell.batch.worker", "from ..engines.generator import DiffusersGenerator\n") == []


def test_the_architecture_page_shows_the_same_table():
    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text(encoding="utf-8")
    for stage, allowed in ALLOWED.items():
        row = f"| `{stage}/` | " + ", ".join(f"`{a}`" for a in sorted(allowed)) + " |"
        assert row in text, row


def test_the_module_table_names_every_module_and_only_modules_that_exist():
    """ARCHITECTURE.md's table of each module's job matches the files (`a.py`, `a.py`, `b.py` or a
    folder in a row count)."""
    import re
    text = (PACKAGE.parent / "ARCHITECTURE.md").read_text(encoding="utf-8")
    table = text[text.index("## Each module's one job"):text.index("## What may import what")]
    named = set()
    for cell in re.findall(r"^\| ([^|]+) \|", table, re.M):
        named |= {m for m in re.findall(r"`([\w/]+(?:\.py|/))`", cell)}
    files = {str(p.relative_to(PACKAGE)) for p in PACKAGE.rglob("*.py")
             if p.name != "__init__.py" and "formats" not in p.parts}
    files |= {"store/formats/"}
    assert files <= named, sorted(files - named)
    assert named <= files, sorted(named - files)
