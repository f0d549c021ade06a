"""Tests of the EncoderMI inference classifiers (auditmi.attacks)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.numpy import load_file, save_file
from sklearn.metrics import roc_auc_score

from auditmi.attacks import (
    ATTACKS,
    Attack,
    SetAttack,
    ThresholdAttack,
    VectorAttack,
    attack_from_state,
    make_attack,
)
from auditmi.errors import CalibrationError, InputError

N_FEATURES = 45  # 10 views
# Few epochs and a larger lr for V keep the suite fast; the architecture is the default one.
FAST = {"T": {}, "V": {"epochs": 15, "lr": 1e-3}, "S": {"epochs": 15}}


def synthetic(n: int, seed: int, member_a: float = 12.0) -> tuple[np.ndarray, np.ndarray]:
    """Members' similarities ~ Beta(member_a, 3) (mean 0.8), non-members' ~ Beta(6, 3) (0.67)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2)
    a = np.where(labels == 1, member_a, 6.0)
    features = rng.beta(a[:, None], 3.0, size=(n, N_FEATURES)).astype(np.float32)
    return features, labels


TRAIN = synthetic(400, seed=1)
TEST = synthetic(400, seed=2)


@pytest.fixture(scope="module", params=["T", "V", "S"])
def fitted(request: pytest.FixtureRequest) -> Attack:
    return make_attack(request.param, **FAST[request.param]).fit(*TRAIN, seed=3)


def test_registry_maps_kinds_to_classes() -> None:
    assert {"T": ThresholdAttack, "V": VectorAttack, "S": SetAttack} == ATTACKS
    assert [c.name for c in ATTACKS.values()] == ["EncoderMI-T", "EncoderMI-V", "EncoderMI-S"]


def test_each_attack_separates_easy_problem(fitted: Attack) -> None:
    x, y = TEST
    scores = fitted.score(x)
    assert scores.shape == (len(y),) and scores.dtype == np.float64
    assert roc_auc_score(y, scores) > 0.9
    proba = fitted.member_probability(x)
    assert proba.shape == (len(y),)
    assert np.all((proba >= 0) & (proba <= 1))
    assert roc_auc_score(y, proba) > 0.9


def test_score_is_deterministic(fitted: Attack) -> None:
    x, _ = TEST
    np.testing.assert_array_equal(fitted.score(x), fitted.score(x))


def test_state_round_trip_through_json_and_safetensors(fitted: Attack, tmp_path: Path) -> None:
    params, arrays = fitted.get_state()
    assert params["kind"] == fitted.kind and params["n_features"] == N_FEATURES
    assert all(a.dtype == np.float32 for a in arrays.values())
    path = tmp_path / "attack.safetensors"
    save_file(arrays, str(path))
    loaded_arrays = load_file(str(path))
    loaded_params = json.loads(json.dumps(params, allow_nan=False))
    for cls_load in (type(fitted).from_state, attack_from_state):
        again = cls_load(loaded_params, loaded_arrays)
        assert type(again) is type(fitted)
        np.testing.assert_array_equal(again.score(TEST[0]), fitted.score(TEST[0]))
        np.testing.assert_array_equal(
            again.member_probability(TEST[0]), fitted.member_probability(TEST[0])
        )
        assert again.get_state()[0] == params


@pytest.mark.parametrize("kind", ["V", "S"])
def test_fitting_twice_with_same_seed_gives_identical_scores(kind: str) -> None:
    x, y = TRAIN[0][:200], TRAIN[1][:200]
    first = make_attack(kind, epochs=3).fit(x, y, seed=7).score(TEST[0])
    second = make_attack(kind, epochs=3).fit(x, y, seed=7).score(TEST[0])
    other = make_attack(kind, epochs=3).fit(x, y, seed=8).score(TEST[0])
    np.testing.assert_array_equal(first, second)
    assert not np.array_equal(first, other)


def test_fitting_leaves_global_torch_state_alone() -> None:
    torch.manual_seed(123)
    rng_before = torch.random.get_rng_state()
    threads_before = torch.get_num_threads()
    VectorAttack(epochs=1).fit(*TRAIN, seed=0)
    SetAttack(epochs=1).fit(*TRAIN, seed=0).score(TEST[0])
    assert torch.equal(torch.random.get_rng_state(), rng_before)
    assert torch.get_num_threads() == threads_before


def test_order_of_columns_does_not_matter(fitted: Attack) -> None:
    # V sorts, S is a set function, T takes a mean: all must ignore the pair order.
    x, _ = TEST
    perm = np.random.default_rng(0).permutation(N_FEATURES)
    np.testing.assert_allclose(fitted.score(x[:, perm]), fitted.score(x), rtol=0, atol=1e-6)
    # Rows permuted independently too: the pair order may differ from image to image.
    shuffled = np.random.default_rng(1).permuted(x, axis=1)
    np.testing.assert_allclose(fitted.score(shuffled), fitted.score(x), rtol=0, atol=1e-6)


def test_set_attack_is_invariant_to_permutations_with_mean_pooling() -> None:
    attack = SetAttack(epochs=2, pool="mean").fit(*TRAIN)
    x = TEST[0]
    shuffled = np.random.default_rng(1).permuted(x, axis=1)
    np.testing.assert_allclose(attack.score(shuffled), attack.score(x), rtol=0, atol=1e-6)


def test_wrong_feature_count_is_rejected_with_expected_and_got(fitted: Attack) -> None:
    expected_and_got = r"45 similarities.*10 views.*28 similarities.*8 views"
    with pytest.raises(CalibrationError, match=expected_and_got):
        fitted.score(TEST[0][:, :28])
    with pytest.raises(CalibrationError):
        fitted.member_probability(TEST[0][:, :44])


@pytest.mark.parametrize("kind", ["V", "S"])
def test_from_state_rejects_missing_or_ill_shaped_arrays(kind: str) -> None:
    params, arrays = make_attack(kind, epochs=1).fit(*TRAIN).get_state()
    missing = dict(arrays)
    name = sorted(missing)[-1]
    del missing[name]
    with pytest.raises(CalibrationError, match="missing"):
        attack_from_state(params, missing)
    reshaped = dict(arrays, **{name: arrays[name][..., :-1]})
    with pytest.raises(CalibrationError, match="shape"):
        attack_from_state(params, reshaped)
    poisoned = dict(arrays, **{name: np.full_like(arrays[name], np.nan)})
    with pytest.raises(CalibrationError, match="NaN"):
        attack_from_state(params, poisoned)
    with pytest.raises(CalibrationError, match="unexpected"):
        attack_from_state(params, dict(arrays, extra=np.zeros(2, np.float32)))


def test_from_state_rejects_wrong_or_unknown_kind() -> None:
    params, arrays = VectorAttack(epochs=1).fit(*TRAIN).get_state()
    with pytest.raises(CalibrationError, match="'V'"):
        SetAttack.from_state(params, arrays)
    with pytest.raises(CalibrationError, match="unknown attack kind"):
        attack_from_state(dict(params, kind="X"), arrays)
    with pytest.raises(CalibrationError, match="shape"):
        attack_from_state(dict(params, n_features=30), arrays)
    with pytest.raises(CalibrationError, match="n_features"):
        attack_from_state(dict(params, n_features="45"), arrays)
    with pytest.raises(CalibrationError, match="hyper-parameters"):
        attack_from_state(dict(params, hyper={**params["hyper"], "epochs": -1}), arrays)


def test_threshold_state_needs_its_threshold_and_platt_parameters() -> None:
    params, arrays = ThresholdAttack().fit(*TRAIN).get_state()
    broken = {k: v for k, v in params.items() if k != "accuracy_threshold"}
    with pytest.raises(CalibrationError, match="accuracy_threshold"):
        attack_from_state(broken, arrays)
    with pytest.raises(CalibrationError, match="platt"):
        attack_from_state(dict(params, platt={"slope": 1.0}), arrays)


def test_threshold_maximises_training_accuracy_and_platt_is_calibrated() -> None:
    x, y = synthetic(2000, seed=5, member_a=7.0)  # overlapping classes
    attack = ThresholdAttack().fit(x, y)
    tau = attack.get_state()[0]["accuracy_threshold"]
    scores = attack.score(x)
    np.testing.assert_allclose(scores, x.astype(np.float64).mean(axis=1))
    best = max(np.mean((scores >= t) == y) for t in np.unique(scores))
    assert np.mean((scores >= tau) == y) == pytest.approx(best)
    # Platt: probabilities increase with the score, and match the member rate on average.
    proba = attack.member_probability(x)
    order = np.argsort(scores)
    assert np.all(np.diff(proba[order]) >= 0)
    assert proba.mean() == pytest.approx(y.mean(), abs=0.01)
    # The probability is about one half where the accuracy threshold lies.
    near = np.argsort(np.abs(scores - tau))[:50]
    assert abs(proba[near].mean() - 0.5) < 0.15


def test_threshold_platt_stays_finite_on_separable_data() -> None:
    x = np.array([[0.1, 0.2], [0.2, 0.3], [0.8, 0.9], [0.9, 1.0]], dtype=np.float32)
    y = np.array([0, 0, 1, 1])
    attack = ThresholdAttack().fit(x, y)
    params = attack.get_state()[0]
    assert 0.25 < params["accuracy_threshold"] < 0.85
    proba = attack.member_probability(x)
    assert np.all(np.isfinite(proba)) and proba[0] < 0.5 < proba[-1]


def test_make_attack_rejects_unknown_kinds_and_hyperparameters() -> None:
    valid = r"T \(EncoderMI-T\), V \(EncoderMI-V\), S \(EncoderMI-S\)"
    with pytest.raises(InputError, match=valid):
        make_attack("Q")
    with pytest.raises(InputError, match="epochz"):
        make_attack("V", epochz=3)
    with pytest.raises(InputError, match="no hyper-parameter"):
        make_attack("T", epochs=3)
    with pytest.raises(InputError, match="epochs"):
        make_attack("S", epochs=0)
    with pytest.raises(InputError, match="pool"):
        make_attack("S", pool="sum")
    assert isinstance(make_attack("encodermi-v"), VectorAttack)
    assert VectorAttack().hyperparameters() == {
        "epochs": 300, "lr": 1e-4, "batch_size": 100, "weight_decay": 1e-6, "hidden": [256, 256],
    }


@pytest.mark.parametrize(
    ("features", "labels", "match"),
    [
        (np.zeros(10), np.zeros(10), "2-D"),
        (np.full((4, 3), np.nan), [0, 1, 0, 1], "NaN"),
        (np.zeros((4, 3)), [1, 1, 1, 1], "both members and non-members"),
        (np.zeros((4, 3)), [0, 1, 2, 1], "0 \\(non-member\\) or 1"),
        (np.zeros((4, 3)), [0, 1, 0], "one entry per feature row"),
        (np.array([["a", "b"], ["c", "d"]]), [0, 1], "numeric"),
    ],
)
def test_fit_rejects_malformed_inputs(features: object, labels: object, match: str) -> None:
    for kind in ATTACKS:
        with pytest.raises(InputError, match=match):
            make_attack(kind, **FAST[kind]).fit(features, labels)  # type: ignore[arg-type]


def test_unfitted_attack_says_so() -> None:
    with pytest.raises(CalibrationError, match="not fitted"):
        SetAttack().score(TEST[0])
    with pytest.raises(CalibrationError, match="not fitted"):
        ThresholdAttack().get_state()
