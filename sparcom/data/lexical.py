"""A bag of the counted tokens of every row: what the words alone say about a row's category (issue 23).

"The neurons carry the category" means little if the words do too: code prompts contain code tokens. The lexical
baseline decodes a row's category from how often each token id occurs among the row's *counted* tokens — the same
tokenizer, template and scope as a profile run (:func:`sparcom.data.formatting.encode_row` and
:meth:`~sparcom.data.formatting.EncodedExample.scope_mask`, the one place roles become a mask), so its
denominators equal the run's counted tokens per instruction, which the caller checks.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sparcom.data.formatting import FormatSettings, encode_row
from sparcom.data.schema import InstructionRow, read_rows
from sparcom.errors import SparcomError
from sparcom.provenance import file_sha256


@dataclass(frozen=True)
class TokenBags:
    """Per row, how often each token id occurs among its counted tokens (only ids that occur somewhere)."""

    row_ids: tuple[str, ...]  # [R]
    token_ids: np.ndarray  # [V] the token ids of the columns, ascending
    counts: np.ndarray  # [R, V] int64
    scope: str

    @property
    def tokens(self) -> np.ndarray:
        """[R] counted tokens of each row."""
        return self.counts.sum(axis=1)

    def rows_for(self, labels: Sequence[str]) -> np.ndarray:
        """Indices of the rows with ids ``labels`` (a run's instruction groups), in that order."""
        position = {row_id: i for i, row_id in enumerate(self.row_ids)}
        return np.array([position[label] for label in labels], dtype=np.int64)


def token_bags(rows: Sequence[InstructionRow], tokenizer, template: str, settings: FormatSettings) -> TokenBags:
    """The bags of ``rows`` under ``settings`` (``template`` already resolved to chat or raw)."""
    bags: list[np.ndarray] = []
    for index, row in enumerate(rows):
        encoded = encode_row(row, index, tokenizer, template, settings.system_prompt, settings.needs_response)
        ids = np.asarray(encoded.input_ids, dtype=np.int64)
        bags.append(ids[np.asarray(encoded.scope_mask(settings.scope), dtype=bool)])
    vocabulary = np.unique(np.concatenate(bags)) if bags else np.zeros(0, dtype=np.int64)
    counts = np.zeros((len(rows), vocabulary.size), dtype=np.int64)
    for r, ids in enumerate(bags):
        np.add.at(counts[r], np.searchsorted(vocabulary, ids), 1)
    return TokenBags(tuple(row.id for row in rows), vocabulary, counts, settings.scope)


def run_token_bags(manifest: Mapping[str, Any], tokenizer) -> TokenBags:
    """The bags of a profile run's rows, formatted as the run formatted them: its dataset (checked by sha256), its
    resolved template, scope and system prompt."""
    dataset = manifest.get("dataset") or {}
    path = dataset.get("path")
    try:
        digest = file_sha256(path)
    except (OSError, TypeError):
        raise SparcomError(f"the run's dataset {path} cannot be read; the lexical baseline needs the rows the run "
                           "profiled") from None
    if dataset.get("sha256") and digest != dataset["sha256"]:
        raise SparcomError(f"the run's dataset {path} changed since profiling (sha256 differs); the lexical baseline "
                           "needs the rows the run profiled")
    settings = FormatSettings(manifest.get("scope", "instruction"), system_prompt=manifest.get("system_prompt"))
    return token_bags(read_rows(path), tokenizer, manifest.get("template", "chat"), settings)
