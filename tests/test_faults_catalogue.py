"""docs/errors.md and the fault tests name the same cases: every catalogue row has its test (or says which check
covers it), every fault test has its row, the catalogue has the 40 cases the issue asked for, and every line the
catalogue quotes is compared with what sparcom really prints in its case (tests/faults.py: ``assert_error`` and
``assert_catalogue_line`` match the line against the row's quote while the case's test runs)."""

from __future__ import annotations

import ast
import re
from pathlib import Path

from faults import CASE, cases_of, catalogue_quotes, catalogue_rows, quote_pattern

ROOT = Path(__file__).parents[1]
#: The helpers that compare a line with the catalogue's quote for the running test's case.
COMPARING = {"assert_error", "assert_interrupted", "assert_catalogue_line"}


def fault_tests() -> dict[str, tuple[set[str], set[str]]]:
    """Every fault test's name → (the case ids it covers, the names it calls)."""
    tests = {}
    for module in sorted((ROOT / "tests").glob("test_faults_*.py")):
        for node in ast.parse(module.read_text(encoding="utf-8")).body:
            if not (isinstance(node, ast.FunctionDef) and node.name.startswith("test_")):
                continue
            ids = set(cases_of(node.name))
            for text in ast.walk(node):  # parametrized cases carry theirs in their ids ("C1-scope")
                if isinstance(text, ast.Constant) and isinstance(text.value, str):
                    ids.update(re.findall(rf"^({CASE})-", text.value))
            calls = {call.func.id for call in ast.walk(node)
                     if isinstance(call, ast.Call) and isinstance(call.func, ast.Name)}
            tests[node.name] = (ids, calls)
    return tests


def case_ids_of_tests() -> set[str]:
    return set().union(*(ids for ids, _ in fault_tests().values()))


def by_case(cases) -> list[str]:
    return sorted(cases, key=lambda c: (c[0], int(c[1:])))


def test_every_case_has_a_test_and_every_test_a_case():
    rows = catalogue_rows()
    covered_elsewhere = {case for case, row in rows.items() if "covered by" in row}
    missing = by_case(set(rows) - covered_elsewhere - case_ids_of_tests())
    unlisted = by_case(case_ids_of_tests() - set(rows))
    assert not missing, f"catalogue cases without a test: {missing}"
    assert not unlisted, f"fault tests without a catalogue row: {unlisted}"


def test_every_quoted_line_is_compared_with_what_sparcom_prints():
    compared = set().union(*(ids for ids, calls in fault_tests().values() if calls & COMPARING))
    assert len(catalogue_quotes()) >= 40
    assert not by_case(set(catalogue_quotes()) - compared), "quoted lines no test compares with the real output"


def test_a_quote_matches_only_its_line():
    """The comparison can fail: placeholders stand for one path, ``(...)`` for left-out text, the rest is literal."""
    quote = "error: RUN: manifest.json says counted_tokens code = 50 but the counts say 45: restore (...)"
    pattern = quote_pattern(quote)
    line = "error: /tmp/x/run: manifest.json says counted_tokens code = 50 but the counts say 45: restore the run"
    assert pattern.fullmatch(line)
    assert not pattern.fullmatch(line.replace("= 50", "= 51"))
    assert not pattern.fullmatch(line.replace("/tmp/x/run", "/tmp/my run"))  # one path, no spaces
    assert not pattern.fullmatch(line.replace("error: ", "warning: "))
    assert cases_of("tests/test_faults_inputs.py::test_C1_to_C5_compare[C3-dtype] (call)") == ["C3"]
    assert cases_of("tests/test_faults_newer.py::test_A1_I9_I10_interrupted (call)") == ["A1", "I9", "I10"]
    assert cases_of("tests/test_faults_inputs.py::test_C1_to_C5_compare (call)") == ["C1", "C2", "C3", "C4", "C5"]


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
