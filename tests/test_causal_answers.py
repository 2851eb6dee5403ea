"""Exact-match extraction for the checkable categories."""

from __future__ import annotations

import pytest

from sparcom.causal.answers import is_correct, label_set, make_check, normalize, predicted
from sparcom.data.schema import InstructionRow


def row(category: str, output: str, instruction: str = "Answer.") -> InstructionRow:
    return InstructionRow("r", category, "ai", "tests", instruction, "", output, "CC0-1.0")


def test_normalize_and_label_sets():
    assert normalize("  The  Jane Austen. ") == "jane austen"
    assert label_set("Classify the sentiment of this review as one of: positive, negative, neutral. Answer with "
                     "the label only.") == ["positive", "negative", "neutral"]
    assert label_set("Choose one of: business, entertainment, politics, sport or tech.") == \
        ["business", "entertainment", "politics", "sport", "tech"]
    assert label_set("Is this message spam? Answer yes or no.") == []


@pytest.mark.parametrize(("generation", "correct"), [
    ("negative", True), ("Negative.", True), ("The sentiment is negative, not positive.", True),
    ("positive", False), ("", False), ("I think it's neutral", False),
])
def test_cls_label(generation, correct):
    check = make_check(row("cls", "negative", "Label the sentiment as one of: positive, negative, neutral. Reply."))
    assert check.kind == "label" and check.labels == ("positive", "negative", "neutral")
    assert is_correct(check, generation) is correct


def test_cls_yes_no_without_a_label_set():
    check = make_check(row("cls", "no", "Is this message spam? Answer yes or no."))
    assert is_correct(check, "No, it is a normal message.")
    assert is_correct(check, "The answer is no.")
    assert not is_correct(check, "Yes.")


@pytest.mark.parametrize(("generation", "correct"), [
    ("3 × 2.45 = 7.35\nAnswer: 1.35", True), ("Answer: $1.35", True), ("#### 1.350", True),
    ("The change is 1.35 dollars", True), ("Answer: 1.36", False), ("no idea", False),
    ("Answer: 1.35\nCheck: 10 - 8.65 = 1.35\nAnswer: 2", False),
])
def test_math_final_number(generation, correct):
    check = make_check(row("math", "Total: 8.65 dollars.\nChange: 10 − 8.65 = 1.35 dollars.\nAnswer: 1.35"))
    assert check.kind == "number" and check.reference == "1.35"
    assert is_correct(check, generation) is correct


def test_math_thousands_and_gsm8k_marker():
    check = make_check(row("math", "2.5 × 100,000 = 250,000 cm.\n#### 250,000"))
    assert is_correct(check, "Answer: 250000")
    assert make_check(row("math", "no final number here")) is None


@pytest.mark.parametrize(("generation", "correct"), [
    ("Jane Austen.", True), ("jane austen", True), ("Jane Austen. She wrote it in 1813.", True),
    ("Charlotte Brontë.", False), ("\n\nJane Austen\nmore text", True),
    ("The novel was written by Jane Austen in 1813.", True), ("Austen.", False),
    ("Charlotte Brontë. Jane Austen did not write it.", False),
])
def test_short_qa(generation, correct):
    check = make_check(row("qa", "Jane Austen."))
    assert check.kind == "short"
    assert is_correct(check, generation) is correct


def test_long_qa_answers_and_other_categories_are_not_checked():
    assert make_check(row("qa", "Because the wind blew hard all night long and the sea rose.")) is None
    assert make_check(row("gen", "A poem.")) is None
    assert make_check(row("sum", "A summary.")) is None
    yes = make_check(row("qa", "Yes."))
    assert is_correct(yes, "Yes, the passage says so.") and predicted(yes, "no") == "no"
    assert is_correct(yes, "The answer is yes.") and not is_correct(yes, "No. But yes in a way.")
