"""Machine checks for the AI-written HexaInst code and math rows.

Every code row's reference solution is executed together with its asserts from code_checks.jsonl in a fresh
interpreter, and every math row's final ``Answer:`` line must match math_answers.jsonl, whose independent ``check``
expression must evaluate to the same number.
"""

from __future__ import annotations

import itertools
import json
import math
import os
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from fractions import Fraction
from pathlib import Path

import pytest

DATA = Path(__file__).resolve().parents[1] / "sparcom" / "data" / "hexainst_ai"
FIELDS = ["id", "category", "source", "origin", "instruction", "input", "output", "license"]
FENCE = re.compile(r"```python\n(.*?)```", re.DOTALL)
NUMBER = re.compile(r"^-?\d+(?:\.\d+)?(?:/\d+)?$")


def _read(name: str) -> list[dict]:
    with (DATA / name).open(encoding="utf-8") as handle:
        return [json.loads(line) for line in handle if line.strip()]


CODE_ROWS = _read("code.jsonl")
MATH_ROWS = _read("math.jsonl")
CODE_CHECKS = {c["id"]: c["test"] for c in _read("code_checks.jsonl")}
MATH_ANSWERS = {a["id"]: a for a in _read("math_answers.jsonl")}


def _code_of(output: str) -> str:
    match = FENCE.search(output)
    return match.group(1) if match else output


@pytest.mark.parametrize(("rows", "category"), [(CODE_ROWS, "code"), (MATH_ROWS, "math")], ids=["code", "math"])
def test_rows_have_schema_and_ids(rows: list[dict], category: str) -> None:
    assert len(rows) == 100
    assert [r["id"] for r in rows] == [f"hexainst-ai-{category}-{n:03d}" for n in range(1, 101)]
    for row in rows:
        assert list(row) == FIELDS, row["id"]
        assert all(isinstance(row[f], str) for f in FIELDS), row["id"]
        assert row["category"] == category and row["source"] == "ai"
        assert row["origin"] == "sparcom-authored" and row["license"] == "Apache-2.0"
        assert row["instruction"].strip() and row["output"].strip(), row["id"]


def test_every_code_row_has_exactly_one_check() -> None:
    assert set(CODE_CHECKS) == {r["id"] for r in CODE_ROWS}
    assert len(CODE_CHECKS) == len(_read("code_checks.jsonl"))


def _run_code_row(row: dict, workdir: Path) -> str | None:
    """Run one row's solution followed by its asserts in a fresh interpreter; return a failure message or None."""
    script = workdir / f"{row['id']}.py"
    script.write_text(_code_of(row["output"]) + "\n\n" + CODE_CHECKS[row["id"]], encoding="utf-8")
    try:
        proc = subprocess.run(
            [sys.executable, "-I", str(script)], cwd=workdir, capture_output=True, text=True, timeout=15
        )
    except subprocess.TimeoutExpired:
        return f"{row['id']}: timed out"
    if proc.returncode != 0:
        lines = proc.stderr.strip().splitlines()
        return f"{row['id']}: {lines[-1] if lines else f'exit code {proc.returncode}'}"
    return None


def test_code_solutions_pass_their_checks(tmp_path: Path) -> None:
    # One interpreter per row keeps namespaces apart; a small pool keeps the whole test to a few seconds.
    with ThreadPoolExecutor(max_workers=min(16, (os.cpu_count() or 2) * 2)) as pool:
        results = pool.map(lambda row: _run_code_row(row, tmp_path), CODE_ROWS)
        failures = [message for message in results if message]
    assert not failures, "\n".join(failures)


def test_every_math_row_has_exactly_one_answer() -> None:
    assert set(MATH_ANSWERS) == {r["id"] for r in MATH_ROWS}
    assert len(MATH_ANSWERS) == len(_read("math_answers.jsonl"))


@pytest.mark.parametrize("row", MATH_ROWS, ids=[r["id"] for r in MATH_ROWS])
def test_math_answer_line_and_check(row: dict) -> None:
    expected = MATH_ANSWERS[row["id"]]
    answer = expected["answer"]
    assert NUMBER.match(answer), answer
    last_line = row["output"].rstrip("\n").splitlines()[-1]
    assert last_line == f"Answer: {answer}"
    value = eval(expected["check"], {"__builtins__": __builtins__, "math": math, "Fraction": Fraction})
    assert math.isclose(float(value), float(Fraction(answer)), rel_tol=1e-9, abs_tol=1e-9), (value, answer)


def _trigrams(row: dict) -> set[tuple[str, ...]]:
    words = re.findall(r"\w+", (row["instruction"] + " " + row["input"]).lower())
    return {tuple(words[i : i + 3]) for i in range(len(words) - 2)}


def test_no_near_duplicate_prompts() -> None:
    rows = CODE_ROWS + MATH_ROWS
    grams = [_trigrams(r) for r in rows]
    for (a, ga), (b, gb) in itertools.combinations(zip(rows, grams, strict=True), 2):
        if ga and gb:
            assert len(ga & gb) / len(ga | gb) <= 0.5, (a["id"], b["id"])
