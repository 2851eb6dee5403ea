"""The ``sparcom-sft`` tuning set: other rows of HexaInst's sources, never HexaInst's own."""

from __future__ import annotations

import hashlib

import pytest

from sparcom.data import human, tuning_data
from sparcom.data.hexainst import load_ai_rows
from sparcom.data.schema import CATEGORIES, InstructionRow

pytestmark = pytest.mark.skipif(
    bool(human.missing_packages()),
    reason=f"HexaInst source packages are not installed ({human.pip_command_all()})",
)


@pytest.fixture(scope="module")
def hexainst() -> list[InstructionRow]:
    return load_ai_rows() + human.build_human_rows()


@pytest.fixture(scope="module")
def rows() -> list[InstructionRow]:
    return tuning_data.build_tuning_rows()


def _norm(text: str) -> str:
    return " ".join(text.split())


def test_no_tuning_row_repeats_a_hexainst_row(rows, hexainst):
    origins = {r.origin for r in hexainst if r.source == "human"}
    instructions = {_norm(r.instruction) for r in hexainst}
    inputs = {_norm(r.input) for r in hexainst if r.input.strip()}
    prompts = {(_norm(r.instruction), _norm(r.input)) for r in hexainst}
    outputs_by_input = {(_norm(r.input), _norm(r.output)) for r in hexainst}
    for row in rows:
        assert row.origin not in origins, row.id
        assert _norm(row.instruction) not in instructions, row.id
        assert _norm(row.input) not in inputs, row.id
        assert (_norm(row.instruction), _norm(row.input)) not in prompts, row.id
        assert (_norm(row.input), _norm(row.output)) not in outputs_by_input, row.id
    assert not tuning_data.overlapping_rows(rows)


def test_hexainst_rows_themselves_are_flagged(hexainst):
    flagged = set(tuning_data.overlapping_rows(hexainst))
    assert flagged == {r.id for r in hexainst}


def test_paraphrases_are_not_hexainst_instructions(hexainst):
    instructions = {_norm(r.instruction) for r in hexainst}
    for source, options in tuning_data.PARAPHRASES.items():
        assert len(set(options)) == len(options), source
        assert not {_norm(o) for o in options} & instructions, source


def test_set_is_deterministic_documented_and_within_the_length_policy(rows):
    again = tuning_data.build_tuning_rows(footprint=tuning_data.hexainst_footprint())
    assert tuning_data.rows_bytes(rows) == tuning_data.rows_bytes(again)
    assert len({r.id for r in rows}) == len(rows)
    assert len({(_norm(r.instruction), _norm(r.input)) for r in rows}) == len(rows)
    counts = {c: sum(r.category == c for r in rows) for c in CATEGORIES}
    plan = tuning_data.plan()
    for category, n in counts.items():
        assert 0 < n <= sum(q.count for q in plan[category]), category
    # every category but code (HumanEval has 164 problems, 100 in HexaInst) is full
    assert all(counts[c] >= 45 for c in CATEGORIES if c != "code")
    for row in rows:
        assert row.source == "human" and row.origin.count(":") >= 2 and row.license
        assert len(row.instruction) + len(row.input) <= tuning_data.MAX_PROMPT_CHARS
        assert 0 < len(row.output.strip()) <= tuning_data.MAX_OUTPUT_CHARS
    # labels stay balanced and from the stated label sets
    cls = [r for r in rows if r.category == "cls"]
    assert {r.output for r in cls} <= set(human.BBC_LABELS) | set(human.IMDB_LABELS)
    boolq = [r.output for r in rows if r.origin.startswith("boolq:")]
    assert abs(boolq.count("yes") - boolq.count("no")) <= 1


def test_recorded_sha256_matches_the_rows_bytes(rows, tmp_path):
    from sparcom.data.schema import write_rows

    path = tmp_path / "sft.jsonl"
    write_rows(rows, path)
    assert hashlib.sha256(path.read_bytes()).hexdigest() == hashlib.sha256(tuning_data.rows_bytes(rows)).hexdigest()
