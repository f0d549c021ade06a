"""Membership features: pairwise cosine similarities between an image's view embeddings.

EncoderMI (method.md, "Membership features"): for n views, the n(n-1)/2 cosine similarities of
their L2-normalised embeddings. An encoder that overfit its training images maps views of a
training image closer together than views of an unseen image.
"""

from __future__ import annotations

import torch

FEATURE_ALGORITHM = "pairwise-cosine-v1"


def n_features(n_views: int) -> int:
    """Number of membership features for ``n_views`` views (45 for 10)."""
    return n_views * (n_views - 1) // 2


def pairwise_cosine(embeddings: torch.Tensor) -> torch.Tensor:
    """(N, n, D) view embeddings -> (N, n(n-1)/2) cosine similarities.

    Embeddings are re-normalised here so the function is correct for any input; the pairs are
    the strict upper triangle in row-major order (the order is irrelevant to the classifiers).
    """
    e = torch.nn.functional.normalize(embeddings.float(), dim=-1)
    sims = e @ e.transpose(1, 2)
    n = e.shape[1]
    iu = torch.triu_indices(n, n, offset=1, device=e.device)
    return sims[:, iu[0], iu[1]]


def feature_config(n_views: int) -> dict:
    """The feature configuration recorded in bundles and reports."""
    return {"algorithm": FEATURE_ALGORITHM, "n_views": n_views, "n_features": n_features(n_views)}

