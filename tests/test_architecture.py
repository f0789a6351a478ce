"""The parser, formats and shell never import torch; only the engines do."""

import subprocess
import sys

LIGHT = ["dreamshell.cli", "dreamshell.parser", "dreamshell.formatter", "dreamshell.dreamlog",
         "dreamshell.pngmeta", "dreamshell.naming", "dreamshell.models", "dreamshell.dryrun",
         "dreamshell.switches", "dreamshell.samplers", "dreamshell.resolve"]


def test_light_modules_do_not_import_torch():
    code = ("import sys\n" + "".join(f"import {m}\n" for m in LIGHT) +
            "heavy = [m for m in ('torch', 'diffusers', 'transformers') if m in sys.modules]\n"
            "print(','.join(heavy))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def test_dry_run_does_not_import_torch(tmp_path):
    f = tmp_path / "cmds.txt"
    f.write_text("a red circle -S 1\n")
    code = ("import sys\nfrom dreamshell.cli import main\nrc = main(['--dry_run', '--from_file', sys.argv[1]])\n"
            "print('TORCH' if 'torch' in sys.modules else 'CLEAN', rc)")
    out = subprocess.run([sys.executable, "-c", code, str(f)], capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "CLEAN 0"
