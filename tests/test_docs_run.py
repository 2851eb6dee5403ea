"""Every ```python block of README.md and docs/*.md runs, as written, on tiny models built from configs.

A block runs in a fresh working folder where the relative paths it reads exist (``data/hexainst.jsonl``,
``runs/...``, ``analysis/...``: made by the ``docs_world`` fixture from tiny models and packaged HexaInst rows), a
built-in model name stands for a tiny model folder of its family (the only change to the text), and the names a
block takes as given (``model``, ``groups``, ...) are defined by :data:`GIVEN` for its page. A block that cannot run
here says why right above it in the markdown, visibly: ``<!-- not run: REASON -->``; those are skipped with the
reason (``pytest -ra`` lists them).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from moe_tiny import tiny_moe_model
from tiny import tiny_model, tiny_tokenizer
from validity_data import synthetic_groups

ROOT = Path(__file__).parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
NOT_RUN = re.compile(r"<!--\s*not run:\s*(.*?)\s*-->")
#: Rows a category of the pages' data/hexainst.jsonl, and of the other instructions (packaged HexaInst AI-half rows).
PER_CATEGORY, OTHER_PER_CATEGORY = 24, 12


@dataclass(frozen=True)
class Block:
    page: str
    line: int
    code: str
    not_run: str | None


def python_blocks() -> list[Block]:
    """Every ```python block (its first line's number), with the reason of a ``not run`` comment right above it."""
    blocks = []
    for page in PAGES:
        lines = page.read_text(encoding="utf-8").splitlines()
        index = 0
        while index < len(lines):
            if lines[index].strip() == "```python":
                end = next(j for j in range(index + 1, len(lines)) if lines[j].strip() == "```")
                above = next((lines[j] for j in range(index - 1, -1, -1) if lines[j].strip()), "")
                marked = NOT_RUN.search(above)
                blocks.append(Block(str(page.relative_to(ROOT)), index + 2, "\n".join(lines[index + 1:end]),
                                    marked.group(1) if marked else None))
                index = end
            index += 1
    return blocks


BLOCKS = python_blocks()


def rows_for_docs() -> tuple[list[dict], list[dict]]:
    """Packaged HexaInst rows, texts cut short: PER_CATEGORY a category for data/hexainst.jsonl, and
    OTHER_PER_CATEGORY others. Alternate rows are labelled "human": the human half needs its data packages, and
    the label only splits the rows into two sources here."""
    from sparcom.data.hexainst import load_ai_rows

    data, other, taken = [], [], {}
    for row in load_ai_rows():
        n = taken.get(row.category, 0)
        taken[row.category] = n + 1
        text = row.to_dict()
        short = {**text, "source": "ai" if n % 2 else "human", "instruction": text["instruction"][:200],
                 "input": text["input"][:200], "output": text["output"][:120]}
        if n < PER_CATEGORY:
            data.append(short)
        elif n < PER_CATEGORY + OTHER_PER_CATEGORY:
            other.append(short)
    return data, other


def write_rows(path: Path, rows: list[dict]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def doc_moe_model():
    """A tiny Qwen-MoE deep and wide enough for the pages' examples: 13 layers, dense MLPs of 520 neurons except
    layers 4 and 5 (routed experts), so ``neuron`` layer 3 index 512, ``neuron`` layer 12 and ``expert`` layer 5
    exist."""
    dense = [j for j in range(13) if j not in (4, 5)]
    return tiny_moe_model("qwen2_moe", seed=5, num_hidden_layers=13, intermediate_size=520, mlp_only_layers=dense,
                          num_experts=4)


@pytest.fixture(scope="module")
def docs_world(tmp_path_factory) -> dict[str, Path]:
    """The inputs the pages' examples read, by their relative paths, and the tiny model folders."""
    from sparcom import ProfileSettings, identify, profile

    root = tmp_path_factory.mktemp("docs")
    tokenizer = tiny_tokenizer()
    dense, moe = root / "models" / "tiny-llama", root / "models" / "tiny-qwen2-moe"
    tiny_model("llama", seed=1).save_pretrained(dense)
    doc_moe_model().save_pretrained(moe)
    for folder in (dense, moe):
        tokenizer.save_pretrained(folder)
    data, other = rows_for_docs()
    inputs = {"data/hexainst.jsonl": write_rows(root / "data" / "hexainst.jsonl", data)}
    grouped = ProfileSettings(group_by="instruction")
    inputs["runs/smol-instr"] = profile(str(dense), inputs["data/hexainst.jsonl"], root / "runs" / "smol-instr",
                                        grouped, progress=False).path
    inputs["runs/smol-other-instructions"] = profile(str(dense), write_rows(root / "other.jsonl", other),
                                                     root / "runs" / "smol-other-instructions", grouped,
                                                     progress=False).path
    inputs["runs/qwen-base"] = profile(str(moe), inputs["data/hexainst.jsonl"], root / "runs" / "qwen-base",
                                       ProfileSettings(per_category=4), progress=False).path
    inputs["analysis/smollm2"] = root / "analysis" / "smollm2"
    identify(inputs["runs/smol-instr"], rule="percentile", epsilon=0.05, sweep=False, plots=False, out=inputs["analysis/smollm2"])
    return {"root": root, "inputs": inputs, "builtins": {"smollm2-135m-instruct": dense}, "moe": moe}


def causal_givens(world) -> dict:
    """docs/causal.md: per-row NLL sums of six categories (base, selected sets, random sets), and a model with an
    input."""
    from sparcom.models.loading import load_model

    rng = np.random.default_rng(0)
    categories = ["cls", "code", "qa", "gen", "math", "sum"]
    row_categories = [c for c in categories for _ in range(8)]
    tokens = rng.integers(5, 60, len(row_categories))
    base = rng.uniform(1, 2, len(row_categories)) * tokens
    selected = base + rng.uniform(0, 0.5, (6, len(row_categories))) * tokens
    random = base + rng.uniform(0, 0.1, (6, 20, len(row_categories))) * tokens
    loaded = load_model(str(world["moe"]), dtype="float32")
    return {"base_sums": base, "selected_sums": selected, "random_sums": random, "tokens": tokens,
            "row_categories": row_categories, "categories": categories, "model": loaded.model,
            "input_ids": torch.tensor([loaded.tokenizer("Write a short poem about the sea.")["input_ids"]])}


def validity_givens(world) -> dict:
    """docs/validity.md: per-instruction counts of one kind, the same for other instructions, and a fixed mask."""
    groups, truth = synthetic_groups(seed=0)
    other_groups, _ = synthetic_groups(seed=1)
    return {"groups": groups, "other_groups": other_groups, "mask": truth}


#: The names a page's blocks take as given, made for its examples.
GIVEN = {"docs/causal.md": causal_givens, "docs/validity.md": validity_givens}


@pytest.mark.parametrize("block", BLOCKS, ids=[f"{b.page}:{b.line}" for b in BLOCKS])
def test_the_python_examples_of_the_docs_run(block, docs_world, tmp_path, monkeypatch):
    if block.not_run is not None:
        pytest.skip(f"{block.page}:{block.line} is marked not run: {block.not_run}")
    for relative, source in docs_world["inputs"].items():
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / relative).symlink_to(source)
    monkeypatch.chdir(tmp_path)
    code = block.code
    for name, folder in docs_world["builtins"].items():
        code = code.replace(f'"{name}"', repr(str(folder)))
    namespace = {"__name__": "__docs__", **GIVEN.get(block.page, lambda world: {})(docs_world)}
    exec(compile(code, f"{block.page}:{block.line}", "exec"), namespace)


def test_every_block_is_found_and_every_skip_says_why():
    fences = sum(page.read_text(encoding="utf-8").count("```python") for page in PAGES)
    assert len(BLOCKS) == fences
    for block in BLOCKS:
        assert block.not_run != "", f"{block.page}:{block.line}: 'not run' needs a reason"
    assert set(GIVEN) <= {b.page for b in BLOCKS}
