import os
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

import pytest
from tiny import tiny_tokenizer, write_dataset


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    return write_dataset(tmp_path / "rows.jsonl")


@pytest.fixture(scope="session")
def tokenizer():
    return tiny_tokenizer()


@pytest.fixture(scope="session")
def smol_cache(tmp_path_factory) -> Path:
    """A session cache dir holding SmolLM2-135M-Instruct converted once from its GGUF (about 20-40 s)."""
    from sparcom.zoo.builtin import resolve_builtin

    cache = tmp_path_factory.mktemp("sparcom-cache")
    resolve_builtin("smollm2-135m-instruct", cache)
    return cache


@pytest.fixture(scope="session")
def gemma_cache(tmp_path_factory) -> Path:
    """A session cache dir holding Gemma-3-270M converted once from its GGUF parts (about 60 s)."""
    from sparcom.zoo.builtin import resolve_builtin

    cache = tmp_path_factory.mktemp("sparcom-gemma-cache")
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
