"""Resample ablation's donors: which row gives each scored row its values, and how positions are aligned.

Each scored row r gets one donor row d(r), drawn from the check's rows of *other* categories with a seed fixed by
the check's seed and r's id (so every condition — the selected set and each random set — uses the same donors,
and a resumed check draws them again identically). Positions are aligned by class (template, user text, response:
:data:`sparcom.causal.nll.POSITION_CLASSES`): the q-th token of class k in r takes the donor's q-th token of class k,
cycling when the donor has fewer (a row without tokens of a class keeps its own values there).

Per batch of scored rows, the donor rows are run once through the unablated decoder stack, the selected neurons'
activations are kept (only those: [donors, T_d, k] per site), and gathered into the batch's positions; the patched
forward then replaces the selected activations with them. A condition thus costs one donor forward (no LM head)
plus one patched forward per batch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from sparcom.causal.nll import ScoredExample
from sparcom.causal.scoring import ScoringBatch, build_batch
from sparcom.errors import SparcomError
from sparcom.seeding import stream_seed


@dataclass(frozen=True)
class DonorPlan:
    """Every scored row's donor (positions in the check's examples) and what a donor batch needs."""

    examples: Sequence[ScoredExample]
    donor_of: np.ndarray  # [n] int64
    pad_id: int

    @classmethod
    def draw(cls, examples: Sequence[ScoredExample], seed: int, pad_id: int) -> DonorPlan:
        """One donor per row from another category, fixed by ``seed`` and the row's id."""
        categories = np.array([e.category for e in examples])
        donor_of = np.zeros(len(examples), dtype=np.int64)
        for i, example in enumerate(examples):
            others = np.flatnonzero(categories != example.category)
            if others.size == 0:
                raise SparcomError("--intervention resample takes each row's values from a row of another "
                                   f"category, but every scored row is {example.category}; score several categories")
            rng = np.random.default_rng(stream_seed(seed, "resample", example.row_id))
            donor_of[i] = others[rng.integers(others.size)]
        return cls(examples, donor_of, pad_id)

    def align(self, rows: Sequence[int], width: int) -> tuple[ScoringBatch, torch.Tensor, torch.Tensor, torch.Tensor]:
        """For scored ``rows`` padded to ``width``: the donor batch, and per target position the donor batch row,
        the donor position and whether it is patched ([B, T] each)."""
        donors = list(dict.fromkeys(int(self.donor_of[r]) for r in rows))
        batch = build_batch(self.examples, donors, self.pad_id)
        donor_row = np.zeros((len(rows), width), dtype=np.int64)
        donor_pos = np.zeros((len(rows), width), dtype=np.int64)
        patched = np.zeros((len(rows), width), dtype=bool)
        for b, r in enumerate(rows):
            d = int(self.donor_of[r])
            donor_row[b] = donors.index(d)
            target, donor = np.asarray(self.examples[r].classes), np.asarray(self.examples[d].classes)
            for k in np.unique(target):
                at, source = np.flatnonzero(target == k), np.flatnonzero(donor == k)
                if source.size:
                    donor_pos[b, at] = source[np.arange(at.size) % source.size]
                    patched[b, at] = True
        return batch, torch.from_numpy(donor_row), torch.from_numpy(donor_pos), torch.from_numpy(patched)


class DonorValues:
    """The donor activations of the batch being scored, per patched site; filled by :meth:`prepare` before each
    forward (with the patch hooks in capture mode), read by the patch hooks during it."""

    def __init__(self, backbone: torch.nn.Module, plan: DonorPlan) -> None:
        self.backbone, self.plan = backbone, plan
        self.capturing = False
        self.captured: dict[str, torch.Tensor] = {}
        self.where: tuple[torch.Tensor, torch.Tensor, torch.Tensor] | None = None
        self.donor_shape: tuple[int, int] = (0, 0)

    def prepare(self, rows: Sequence[int], batch: ScoringBatch) -> None:
        """Run the donors of ``rows`` (the batch's positions in the check's examples) unablated and keep the
        selected activations."""
        donor_batch, donor_row, donor_pos, patched = self.plan.align(rows, batch.input_ids.shape[1])
        device = next(self.backbone.parameters()).device
        self.captured = {}
        self.capturing = True
        try:
            with torch.no_grad():
                self.backbone(input_ids=donor_batch.input_ids.to(device),
                              attention_mask=donor_batch.attention.to(device), use_cache=False)
        finally:
            self.capturing = False
        self.where = (donor_row, donor_pos, patched)
        self.donor_shape = tuple(donor_batch.input_ids.shape)

    def capture(self, site: str, values: torch.Tensor) -> None:
        self.captured[site] = values

    def values(self, site: str, current: torch.Tensor) -> torch.Tensor:
        """The replacement of ``current`` [..., k] (the selected activations of the scored batch, [B, T, k] or
        flattened [B·T, k]) at ``site``: the aligned donor values where patched, ``current`` elsewhere."""
        if self.where is None or site not in self.captured:
            raise SparcomError(f"resample ablation at {site}: a forward ran without its donor batch prepared; only "
                               "the NLL passes of the causal check prepare donors")
        donor_row, donor_pos, patched = (t.to(current.device) for t in self.where)
        batch, width = donor_row.shape
        donor = self.captured[site]
        donor = donor.reshape(self.donor_shape[0], self.donor_shape[1], donor.shape[-1])
        gathered = donor[donor_row, donor_pos].to(current.dtype)  # [B, T, k]
        shaped = current.reshape(batch, width, current.shape[-1])
        return torch.where(patched[..., None], gathered, shaped).reshape(current.shape)
