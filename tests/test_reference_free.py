"""Issue 14 item 5: the reference-free binomial test holds its level.

The calibrated false-positive rate of a threshold is measured on a small held-out set of shadow
non-members. These null simulations run the scan job's own ``score`` and ``statistics`` steps
with a classifier whose held-out non-member scores and whose suspect scores come from the same
distribution (perfect calibration transfer, no suspect used): the fraction of p-values below
alpha must stay at or below alpha, at every --fpr the scan accepts.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest

from auditmi.calibration import AttackCalibration
from auditmi.errors import InputError
from auditmi.jobs import scan as job
from auditmi.pipeline import FeatureSet, ImageRow


class _FirstColumn:
    """A stand-in classifier: the score is the first feature."""

    name = "first-column"

    def score(self, x: np.ndarray) -> np.ndarray:
        return np.asarray(x, dtype=np.float64)[:, 0]

    def member_probability(self, x: np.ndarray) -> np.ndarray:
        return self.score(x)


def _calibration(rng: np.random.Generator, n0: int) -> AttackCalibration:
    held = np.r_[rng.random(n0), rng.random(n0) ** 0.5]  # non-members U(0,1); members score higher
    labels = np.r_[np.zeros(n0, np.int64), np.ones(n0, np.int64)]
    return AttackCalibration(attack=_FirstColumn(), thresholds={"accuracy": 0.5}, metrics={"roc_auc": 0.67}, roc={"fpr": [], "tpr": []},  # type: ignore[arg-type]
                             heldout_scores=held, heldout_labels=labels)


def _suspects(rng: np.random.Generator, n: int) -> FeatureSet:
    x = rng.random((n, 3)).astype(np.float64)  # null: suspects score like the non-members
    rows = [ImageRow(Path(f"s{i}.png"), f"{i:064x}", (8, 8)) for i in range(n)]
    return FeatureSet(rows=rows, features=x, stats=np.zeros((n, 2)), skipped=[], duplicates=[])


def _p(ac: AttackCalibration, fs: FeatureSet, fpr: float | None, alpha: float = 0.05) -> float:
    setup: Any = SimpleNamespace(attack=ac, calibration=SimpleNamespace(attacks={"T": ac}), kind="T")
    opts = job.ScanOptions(encoder="-", calibration="-", fpr=fpr, alpha=alpha)
    sc = job.score(fs, None, ac, fpr)
    st, _, _ = job.statistics(sc, fs, None, setup, opts)
    assert st.binomial_test is not None
    return st.binomial_test.p_value


@pytest.mark.parametrize("fpr", [0.025, 0.05, 0.1, None])  # None: the accuracy threshold
def test_reference_free_test_holds_its_level_with_40_held_out_non_members(fpr: float | None) -> None:
    rng = np.random.default_rng(14 if fpr is None else int(fpr * 1000))
    splits, alpha = 1000, 0.05
    rejected = 0
    for _ in range(splits):
        ac = _calibration(rng, 40)
        if fpr is None:  # the accuracy threshold, here: the held-out non-members' median
            ac.thresholds["accuracy"] = float(np.median(ac.heldout_scores[ac.heldout_labels == 0]))
        rejected += _p(ac, _suspects(rng, 200), fpr, alpha) < alpha
    rate, se = rejected / splits, (alpha * (1 - alpha) / splits) ** 0.5
    assert rate <= alpha + 2 * se, f"rejection rate {rate:.3f} at --fpr {fpr} (alpha {alpha}, s.e. {se:.3f})"


def test_fpr_finer_than_the_held_out_set_resolves_is_refused() -> None:
    ac = _calibration(np.random.default_rng(0), 40)
    with pytest.raises(InputError, match=r"supports --fpr from 0\.025 \(1/40\) up to 1.*needs at least 100 held-out"):
        job.score(_suspects(np.random.default_rng(1), 10), None, ac, 0.01)
    job.score(_suspects(np.random.default_rng(1), 10), None, ac, 0.025)  # exactly 1/40 is accepted


def test_the_report_shows_the_bound_it_tested_against() -> None:
    rng = np.random.default_rng(3)
    ac = _calibration(rng, 40)
    fs = _suspects(rng, 200)
    setup: Any = SimpleNamespace(attack=ac, calibration=SimpleNamespace(attacks={"T": ac}), kind="T")
    sc = job.score(fs, None, ac, 0.05)
    st, _, _ = job.statistics(sc, fs, None, setup, job.ScanOptions(encoder="-", calibration="-", fpr=0.05, alpha=0.05))
    b = st.binomial_test
    assert b is not None and b.heldout_non_members == 40 and b.bound_confidence == pytest.approx(0.975)
    assert b.expected_fpr > b.calibrated_fpr  # type: ignore[operator]
    assert b.p_value >= 0.025  # the bound's own error probability is part of the p-value
