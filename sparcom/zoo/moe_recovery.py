"""Recovery of a MoEfied layer: refit the down projections so the routed MLP matches the dense one.

With k of E experts routed, a token loses the contribution of the neurons left out. SmolLM2's SiLU activations are
dense, so that loss is large and no linear router can avoid it (docs/moe.md). The routed output is linear in the
down projection D, so the D that best reproduces the dense MLP on calibration tokens, with the routing fixed, is a
ridge least-squares problem with a closed form:

    D = argmin_D Σ_t ||D (h_t ⊙ m_t) − down h_t||² + λ ||D − down||²_F,   λ = penalty × mean diag of Σ_t (h⊙m)(h⊙m)ᵀ

(h_t: the neurons' values on token t, m_t: the neurons the token uses — shared ones and those of its k experts; the
penalty pulls D towards the dense down projection). Gate and up rows stay exact, so every expert neuron still fires
exactly when its dense neuron does; only what the neurons write back changes. Fitted on the calibration tokens of
all but a held-out eighth of the rows and kept only when it lowers the relative error on those held-out rows (the
held-out check; the numbers go into the build record). Deterministic: no randomness, float64 solve.
"""

from __future__ import annotations

import torch

from sparcom.errors import SparcomError


def relative_error(predicted: torch.Tensor, target: torch.Tensor) -> float:
    """Σ ||predicted − target||² / Σ ||target||² over rows (0: exact; 1: as bad as predicting zero)."""
    return float(((predicted - target) ** 2).sum() / (target**2).sum().clamp_min(1e-30))


def refit_down(h: torch.Tensor, mask: torch.Tensor, down: torch.Tensor, held: torch.Tensor,
               penalty: float) -> tuple[torch.Tensor | None, dict[str, float]]:
    """(refitted [H, I] down projection or None when it does not help held-out rows, the numbers of the check).

    ``h`` [T, I] neuron values, ``mask`` [T, I] the neurons each token uses, ``down`` [H, I] the dense down
    projection, ``held`` [T] the held-out tokens, ``penalty`` the relative ridge penalty (module docstring).
    """
    if not bool(held.any()) or bool(held.all()):
        raise SparcomError("the down-projection refit needs calibration rows both to fit and to hold out; raise "
                           "--calibration-tokens or turn the refit off (--refit 0)")
    used = (h * mask).to(torch.float64)
    dense = down.to(torch.float64)
    target = h.to(torch.float64) @ dense.T
    fit = ~held
    gram = used[fit].T @ used[fit]
    lam = penalty * float(gram.diagonal().mean())
    eye = torch.eye(gram.shape[0], dtype=torch.float64)
    refit = torch.linalg.solve(gram + lam * eye, used[fit].T @ target[fit] + lam * dense.T).T
    before = relative_error(used[held] @ dense.T, target[held])
    after = relative_error(used[held] @ refit.T, target[held])
    kept = after < before
    stats = {"refit_heldout_error_before": before, "refit_heldout_error_after": after, "refit_kept": float(kept),
             "refit_relative_change": float((refit - dense).norm() / dense.norm())}
    return (refit.to(torch.float32) if kept else None), stats
