"""docs/errors.md and the fault tests name the same cases: every catalogue row has its test (or says which check
covers it), every fault test has its row, and the catalogue has the 40 cases the issue asked for."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[1]
CASE = r"[A-Z]\d+"


def catalogue_rows() -> dict[str, str]:
    """Case id → its table row in docs/errors.md."""
    rows = {}
    for line in (ROOT / "docs" / "errors.md").read_text(encoding="utf-8").splitlines():
        found = re.match(rf"\|\s*({CASE})\s*\|", line)
        if found:
            assert found.group(1) not in rows, f"case {found.group(1)} appears twice"
            rows[found.group(1)] = line
    return rows


def case_ids_of_tests() -> set[str]:
    """Case ids of the fault tests: a test's name starts with its id(s) (test_I5_I6_…, or a range test_C1_to_C5_…),
    and parametrized cases carry theirs in their ids ("C1-scope")."""
    ids: set[str] = set()
    for module in sorted((ROOT / "tests").glob("test_faults_*.py")):
        text = module.read_text(encoding="utf-8")
        for name in re.findall(r"def test_([A-Za-z0-9_]+)", text):
            ranged = re.match(rf"({CASE})_to_({CASE})_", name)
            if ranged:
                first, last = ranged.groups()
                ids.update(f"{first[0]}{n}" for n in range(int(first[1:]), int(last[1:]) + 1))
                continue
            parts = name.split("_")
            while parts and re.fullmatch(CASE, parts[0]):
                ids.add(parts.pop(0))
        ids.update(re.findall(rf'"({CASE})-[^"]*"', text))
    return ids


def test_every_case_has_a_test_and_every_test_a_case():
    rows = catalogue_rows()
    covered_elsewhere = {case for case, row in rows.items() if "covered by" in row}
    missing = sorted(set(rows) - covered_elsewhere - case_ids_of_tests(), key=lambda c: (c[0], int(c[1:])))
    unlisted = sorted(case_ids_of_tests() - set(rows), key=lambda c: (c[0], int(c[1:])))
    assert not missing, f"catalogue cases without a test: {missing}"
    assert not unlisted, f"fault tests without a catalogue row: {unlisted}"


def test_the_catalogue_covers_every_command_with_at_least_40_tested_cases():
    rows = catalogue_rows()
    assert len(set(rows) & case_ids_of_tests()) >= 40
    commands = " ".join(rows.values())
    for command in ("profile", "merge", "show", "identify", "compare", "ablate", "tune", "data", "models", "demo",
                    "report", "examples"):
        assert f"`{command}" in commands, command


def test_readme_states_the_number_of_cases():
    readme = re.sub(r"\s+", " ", (ROOT / "README.md").read_text(encoding="utf-8"))
    assert f"the catalogue: {len(catalogue_rows())} cases over every command" in readme
