import os
import signal
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
if os.environ.get("PYTEST_XDIST_WORKER"):  # one thread per worker: the workers share the cores (before torch loads)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
sys.path.insert(0, str(Path(__file__).parent))

# A suite started with SIGINT ignored (`nohup make test &`, `trap '' INT`, some CI runners) would pass that on to
# every process it starts, and sparcom rightly leaves an ignored signal alone: the Ctrl-C tests would see runs that
# cannot be interrupted. The suite's own process gets Python's Ctrl-C handler back (so children start with the
# default), and the helpers that send signals also reset them in the child (tests/faults.py).
if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
    signal.signal(signal.SIGINT, signal.default_int_handler)

import pytest
from tiny import tiny_tokenizer, write_dataset

#: What a skip may not hide when ``SPARCOM_REQUIRE`` names it (CI sets all three in .ci/run): the marker of the tests
#: that skip without it.
REQUIREMENTS = {"browser": "browser", "weights": "smoke", "readonly": "readonly"}


def required() -> set[str]:
    names = {name.strip() for name in os.environ.get("SPARCOM_REQUIRE", "").split(",") if name.strip()}
    unknown = names - set(REQUIREMENTS)
    if unknown:
        raise pytest.UsageError(f"SPARCOM_REQUIRE: unknown {sorted(unknown)}; choose from {sorted(REQUIREMENTS)}")
    return names


def pytest_configure(config):
    required()  # a misspelt requirement stops the run instead of requiring nothing


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A skip of a test whose requirement SPARCOM_REQUIRE names is a failure (CI must not lose those tests)."""
    outcome = yield
    report = outcome.get_result()
    if not report.skipped or hasattr(report, "wasxfail"):
        return
    needs = [name for name in sorted(required()) if item.get_closest_marker(REQUIREMENTS[name])]
    if needs:
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome = "failed"
        report.longrepr = f"skipped, but SPARCOM_REQUIRE requires {', '.join(needs)}: {reason}"


@pytest.fixture
def cli(capfd):
    """``cli(*args)``: one ``sparcom`` command run in this process through ``sparcom.cli.main`` (what the console
    script runs), as a CompletedProcess with its exit code, stdout and stderr."""
    from faults import run_cli

    return lambda *args: run_cli(capfd, *args)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "rows.jsonl")


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


def session_cache(tmp_path_factory, name: str) -> Path:
    """A cache folder for the whole run: under pytest-xdist one folder that every worker shares (the workers'
    temporary folders sit in one root), so a built-in is converted once — the first worker converts it under the
    cache's lock, the others wait for the lock and find it built (sparcom.zoo.builtin.resolve_builtin)."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return tmp_path_factory.mktemp(name)
    folder = tmp_path_factory.getbasetemp().parent / name
    folder.mkdir(exist_ok=True)
    return folder


@pytest.fixture(scope="session")
def smol_cache(tmp_path_factory) -> Path:
    """A session cache dir holding SmolLM2-135M-Instruct converted once from its GGUF (about 20-40 s)."""
    from sparcom.zoo.builtin import resolve_builtin

    cache = session_cache(tmp_path_factory, "sparcom-cache")
    resolve_builtin("smollm2-135m-instruct", cache)
    return cache


@pytest.fixture(scope="session")
def gemma_cache(tmp_path_factory) -> Path:
    """A session cache dir holding Gemma-3-270M converted once from its GGUF parts (about 35 s)."""
    from sparcom.zoo.builtin import resolve_builtin

    cache = session_cache(tmp_path_factory, "sparcom-gemma-cache")
    resolve_builtin("gemma-3-270m", cache)
    return cache


@pytest.fixture(scope="session")
def gemma_tuned(gemma_cache, tmp_path_factory) -> Path:
    """The demo's tuned Gemma: the committed LoRA adapter merged into the converted base, as `sparcom demo` does."""
    from sparcom.demo import DEMO_ADAPTER, materialise_tuned

    out = tmp_path_factory.mktemp("gemma-tuned") / "gemma-3-270m-sparcom-sft"
    materialise_tuned(str(gemma_cache / "gemma-3-270m"), DEMO_ADAPTER, out)
    return out


@pytest.fixture(scope="session")
def tiny_study(tmp_path_factory) -> dict[str, Path]:
    """Every output of a small study (profile, identify, compare, ablate, examples) for the report tests."""
    from report_study import build_study

    return build_study(tmp_path_factory.mktemp("study"))


@pytest.fixture(scope="session")
def fault_study(tmp_path_factory) -> dict[str, Path]:
    """Model folders, datasets, runs and selections for the fault catalogue's cases (tests/faults.py)."""
    from faults import build_study

    return build_study(tmp_path_factory.mktemp("faults"))
