"""Everything under models/ that a user needs is installed with the package (setup.cfg data_files):
the demo model, its upscaler, the demo LoRA, embedding and VAE file that the README uses, and the demo's
tiny decoder (TAESD)."""

import configparser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_every_shipped_model_file_is_in_data_files():
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    installed = set()
    for target, sources in cfg["options.data_files"].items():
        for pattern in sources.replace("\n", ",").split(","):
            pattern = pattern.strip()
            if pattern:
                installed.update(p.resolve() for p in ROOT.glob(pattern) if p.is_file())
    shipped = {p.resolve() for p in (ROOT / "models").rglob("*") if p.is_file()
               and p.name != "models.yaml.example" and not p.name.endswith(".sha256")}
    missing = sorted(str(p.relative_to(ROOT)) for p in shipped - installed)
    assert not missing, f"not installed by pip install .: {missing}"
    for name in ("models/loras/demo_cross.safetensors", "models/embeddings/yolk.safetensors",
                 "models/vae/demo-vae.safetensors", "models/taesd/taesd_demo_decoder.safetensors",
                 "models/taesd/demo-taesd/diffusion_pytorch_model.safetensors", "models/taesd/demo-taesd/config.json"):
        assert (ROOT / name).resolve() in installed
