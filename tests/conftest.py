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

    from dreamshell.weights.models import ModelSpec, Registry

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


# Tests that compare bytes run at both precisions: "auto" is bfloat16 only on CPUs with native bf16 (the
# CI machines vary), so these name the precision (DiffusersGenerator(precision="bfloat16") runs bf16 on any CPU).
PRECISIONS = ("float32", "bfloat16")
_generators: dict = {}


def generator_at(precision: str):
    """A CPU DiffusersGenerator at this precision, one per precision for the whole run (nothing loaded)."""
    if precision not in _generators:
        from dreamshell.engines.generator import DiffusersGenerator
        _generators[precision] = DiffusersGenerator(device="cpu", precision=precision)
    return _generators[precision]


@pytest.fixture(scope="module")
def demo_generator():
    """The real generator with the built-in demo model loaded (one per test module: adapters loaded by one
    module do not reach another)."""
    from dreamshell.engines.generator import DiffusersGenerator
    from dreamshell.weights.models import demo_spec
    gen = DiffusersGenerator(device="cpu")
    gen.load(demo_spec())
    return gen


def fake_session_at(folder, step_delay: float = 0.0, steps: int = 3):
    """A session on the fake generator (no torch) with models `fake` (the default) and `other`, writing to
    folder/out; `session.fake` is the generator (gates for steps and loads)."""
    from fake_generator import FakeGenerator

    from dreamshell.run.model_host import ModelHost
    from dreamshell.run.session import Session
    from dreamshell.weights.models import ModelSpec, Registry
    weights = Path(folder) / "weights"
    weights.mkdir(parents=True, exist_ok=True)
    specs = {n: ModelSpec(n, weights, "sd1", width=64, height=64, steps=steps, cfg_scale=5.0, sampler="k_euler",
                          default=(n == "fake")) for n in ("fake", "other")}
    gen = FakeGenerator(step_delay)
    session = Session(Registry(specs), ModelHost(lambda: gen), Path(folder) / "out")
    session.fake = gen
    session.echoed = []
    return session


@pytest.fixture
def fake_session(tmp_path):
    """fake_session(step_delay=0.0, steps=3): a new session on the fake generator (see fake_session_at)."""
    return lambda step_delay=0.0, steps=3: fake_session_at(tmp_path, step_delay, steps)


@pytest.fixture(scope="session")
def shared_generator():
    from dreamshell.engines.generator import DiffusersGenerator
    return DiffusersGenerator(device="cpu")


@pytest.fixture
def make_session(tiny_models, shared_generator, tmp_path):
    """A Session on the tiny models with its own model host; `session.echoed` collects what a
    TextListener would print (run lines with `run_line`)."""
    from dreamshell.run.model_host import ModelHost
    from dreamshell.run.session import Session

    def make(outdir=None, upscaler_factory=None, precision=None, **kw):
        registry = tiny_models()
        generator = shared_generator if precision is None else generator_at(precision)
        host = ModelHost(lambda: generator, upscaler_factory)
        session = Session(registry, host, outdir or tmp_path / "out", **kw)
        session.echoed = []
        return session
    return make


def run_line(session, line, control=None, listener=None):
    """Run one prompt line on a session as a batch would, collecting its text in session.echoed."""
    from dreamshell.line.parser import parse_request
    from dreamshell.run.report import TextListener
    return session.run(parse_request(line), listener or TextListener(session.echoed.append), control)


class ShellDriver:
    """The dream> shell on a pipe, running in a thread, typed into like a person would."""

    def __init__(self, session, dispatcher=None, register=None, **kw):
        import threading

        from prompt_toolkit.input import create_pipe_input
        from prompt_toolkit.output import DummyOutput

        from dreamshell.run.dispatch import Dispatcher
        from dreamshell.shell.repl import DreamShell

        self.session = session
        self.out: list[str] = []
        self.dispatcher = dispatcher or Dispatcher(session, echo=self.out.append)
        if register is not None:
            register(self.dispatcher)
        self._pipe = create_pipe_input()
        self.inp = self._pipe.__enter__()
        self.shell = DreamShell(session, self.dispatcher, input=self.inp, output=DummyOutput(),
                                echo=self.out.append, **kw)
        self.code = None
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        self.code = self.shell.run()

    def type(self, text: str) -> None:
        self.inp.send_text(text)

    def wait_for(self, condition, timeout: float = 60.0, what: str = "") -> None:
        import time
        deadline = time.monotonic() + timeout
        while not condition():
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out waiting for {what or condition}; output: {self.out[-10:]}")
            time.sleep(0.02)

    def wait_output(self, text: str, timeout: float = 60.0) -> str:
        self.wait_for(lambda: any(text in line for line in self.out), timeout, repr(text))
        return next(line for line in self.out if text in line)

    def finish(self, timeout: float = 60.0) -> int:
        """Wait until the queue is idle, then Ctrl-D; return the exit code."""
        self.wait_for(lambda: not self.shell.jobs.busy(), timeout, "the queue to empty")
        self.type("\x04")
        self.thread.join(timeout)
        assert not self.thread.is_alive(), f"the shell did not leave; output: {self.out[-10:]}"
        self._pipe.__exit__(None, None, None)
        return self.code


@pytest.fixture
def drive_shell(make_session):
    drivers = []

    def start(session=None, **kw):
        driver = ShellDriver(session or make_session(), **kw)
        drivers.append(driver)
        return driver
    yield start
    for d in drivers:
        if d.thread.is_alive():
            d.shell.jobs.close()
            d.type("\x04\x04")
            d.thread.join(10)
