"""Tests for auditmi.features: the pairwise-cosine membership features of EncoderMI."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from auditmi.features import FEATURE_ALGORITHM, feature_config, n_features, pairwise_cosine


@pytest.mark.parametrize("n,expected", [(2, 1), (3, 3), (10, 45), (16, 120)])
def test_n_features_is_number_of_pairs(n: int, expected: int) -> None:
    assert n_features(n) == expected


@pytest.mark.parametrize("n_views", [2, 5, 10])
def test_pairwise_cosine_shape_and_range(n_views: int) -> None:
    emb = torch.randn(7, n_views, 33, generator=torch.Generator().manual_seed(n_views))
    f = pairwise_cosine(emb)
    assert f.shape == (7, n_features(n_views))
    assert f.dtype == torch.float32
    assert (f >= -1 - 1e-6).all() and (f <= 1 + 1e-6).all()


def test_identical_views_give_all_ones() -> None:
    one = torch.randn(3, 1, 16)
    emb = one.expand(3, 10, 16) * torch.rand(3, 10, 1).add(0.5)  # same direction, different norms
    f = pairwise_cosine(emb)
    assert torch.allclose(f, torch.ones_like(f), atol=1e-6)


def test_opposite_views_give_minus_one() -> None:
    v = torch.randn(1, 1, 8)
    f = pairwise_cosine(torch.cat([v, -v], dim=1))
    assert torch.allclose(f, torch.tensor([[-1.0]]), atol=1e-6)


def test_matches_brute_force_loop_in_upper_triangle_order() -> None:
    emb = torch.randn(4, 6, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    f = pairwise_cosine(emb)
    for b in range(4):
        expected = [
            torch.nn.functional.cosine_similarity(emb[b, i], emb[b, j], dim=0).item()
            for i in range(6)
            for j in range(i + 1, 6)
        ]
        assert np.allclose(f[b].numpy(), expected, atol=1e-6)


def test_scale_invariance_and_half_precision_input() -> None:
    emb = torch.randn(2, 5, 20)
    f = pairwise_cosine(emb)
    assert torch.allclose(f, pairwise_cosine(emb * 7.5), atol=1e-6)
    assert torch.allclose(f, pairwise_cosine(emb.half()), atol=2e-3)


def test_feature_config() -> None:
    assert feature_config(10) == {"algorithm": FEATURE_ALGORITHM, "n_views": 10, "n_features": 45}
