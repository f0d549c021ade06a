"""The neighbourhood signal of EncoderMI-R: how close an image sits to its nearest reference images.

Contrastive pre-training pulls an image's views together and pushes its embedding away from every
other image in the batch, so an encoder that trained on an image tends to leave it further from
look-alike images than its difficulty explains. For each encoder (the audited one and every
shadow) an image's ``nn_ref`` signal is the mean cosine of its whole-image embedding to its
:data:`NN_K` nearest reference images (known non-members) under that same encoder; EncoderMI-R
then calibrates it against the shadows like every other signal (:mod:`auditmi.difficulty`), and
the shadow game (:mod:`auditmi.shadow_game`) decides whether and with what weight the score uses it.

Exchangeability with the reference: a reference image's neighbours are the other ``n - 1``
reference images (itself left out); a suspect's are ``n - 1`` of the ``n`` reference images,
one left out at random (fixed by the scan seed and the suspect's sha256), so under the null a
suspect and a reference image are scored alike. The signal depends only on the image, the
encoder and the reference set, never on other suspects.

Pure numpy; the whole-image embeddings come from :func:`auditmi.measures.embed_whole`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from auditmi.stats import tie_breakers

NN_K = 5  # neighbours averaged: a few, so one near-duplicate in the reference does not decide it


def knn_similarity(query: np.ndarray, neighbours: np.ndarray, exclude: np.ndarray | None = None, k: int = NN_K) -> np.ndarray:
    """Mean cosine of each (unit-norm) query embedding to its ``k`` nearest ``neighbours``.

    ``exclude[i]`` is an index into ``neighbours`` that query ``i`` must not use (-1: none).
    """
    q = np.asarray(query, dtype=np.float64)
    r = np.asarray(neighbours, dtype=np.float64)
    sims = q @ r.T
    if exclude is not None:
        ex = np.asarray(exclude)
        rows = np.flatnonzero(ex >= 0)
        sims[rows, ex[rows]] = -np.inf
    usable = r.shape[0] - (0 if exclude is None else 1)
    kk = max(1, min(k, usable))
    top = -np.partition(-sims, kk - 1, axis=1)[:, :kk]
    return top.mean(axis=1)


def reference_nn(reference: np.ndarray, k: int = NN_K) -> np.ndarray:
    """``nn_ref`` of the reference images themselves: each against the other ``n - 1``."""
    n = np.asarray(reference).shape[0]
    return knn_similarity(reference, reference, np.arange(n), k)


def dropped_reference(shas: Sequence[str], seed: int, n_reference: int) -> np.ndarray:
    """For each suspect, the reference image it leaves out (so it too has ``n - 1`` neighbours)."""
    u = tie_breakers(list(shas), seed=seed + 7919)  # not the p-values' tie-breakers: an independent draw
    return np.minimum((u * n_reference).astype(int), n_reference - 1)


def suspect_nn(suspects: np.ndarray, reference: np.ndarray, shas: Sequence[str], seed: int, k: int = NN_K) -> np.ndarray:
    """``nn_ref`` of suspect images against the reference (one reference image left out each)."""
    n = np.asarray(reference).shape[0]
    return knn_similarity(suspects, reference, dropped_reference(shas, seed, n), k)
