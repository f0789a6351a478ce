"""Every test runs in its own working folder with its own data folder, offline."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def isolated_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    home.mkdir()
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.setenv("DREAMSHELL_DATA_DIR", str(home))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.chdir(work)
    return work


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory):
    """Two tiny random SD 1.x pipelines (diffusers folders) and a registry naming them."""
    from tiny_pipeline import make_tiny_pipeline

    from dreamshell.models import ModelSpec, Registry

    root = tmp_path_factory.mktemp("models")
    a = make_tiny_pipeline(root / "a", seed=0)
    b = make_tiny_pipeline(root / "b", seed=1)
    specs = {
        "tiny": ModelSpec("tiny", a, "sd1", "tiny random model", width=64, height=64, steps=4, cfg_scale=5.0,
                          sampler="k_euler", default=True),
        "tiny2": ModelSpec("tiny2", b, "sd1", "another", width=64, height=64, steps=4, cfg_scale=5.0,
                           sampler="k_euler"),
    }
    return lambda: Registry(dict(specs))


@pytest.fixture(scope="session")
def shared_generator():
    from dreamshell.engines.generator import DiffusersGenerator
    return DiffusersGenerator(device="cpu")


@pytest.fixture
def make_session(tiny_models, shared_generator, tmp_path):
    from dreamshell.session import Session

    def make(outdir=None, echo=None, **kw):
        registry = tiny_models()
        lines = []
        session = Session(registry, lambda: shared_generator, outdir or tmp_path / "out",
                          echo=echo or lines.append, **kw)
        session.echoed = lines
        session.start_loading(registry.default)
        return session
    return make
