"""Shared machinery of the neural inference classifiers (EncoderMI-V and -S): :class:`NeuralAttack`
(seeded torch training in a thread-local, single-threaded context; scoring in chunks; state as
named arrays) and feature standardisation."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from scipy.special import expit
from torch import nn

from auditmi.attacks.base import _SCORE_CHUNK, Attack
from auditmi.errors import CalibrationError
from auditmi.validate import nonnegative_float, positive_int


@contextmanager
def _local_torch(seed: int | None = None, threads: int = 1) -> Iterator[None]:
    """Seed torch and cap its threads inside the block only, restoring the caller's state.

    The global RNG is forked so fitting neither depends on nor perturbs the caller's random
    stream. One thread is used because these networks are tiny (per-batch matmuls of
    100x256): extra threads cost more in synchronisation than they save, and a fixed thread
    count keeps float reduction order, hence the fitted weights, reproducible.
    """
    old_threads = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):
        if seed is not None:
            torch.manual_seed(seed)
        if old_threads != threads:
            torch.set_num_threads(threads)
        try:
            yield
        finally:
            if old_threads != threads:
                torch.set_num_threads(old_threads)


class NeuralAttack(Attack):
    """Base of the attacks that train a small 2-way torch classifier (EncoderMI-V and -S).

    Subclasses provide ``_build`` (the network for F features), ``_inputs`` (standardised
    float32 network inputs from float64 features) and the standardisation statistics.
    The score is the softmax member probability, computed in float64 from the logit
    difference so that it saturates at 1 far later than a float32 softmax would (ties at the
    top of the ranking would blur thresholds at low false-positive rates).
    """

    def __init__(
        self, *, epochs: int, lr: float, batch_size: int, weight_decay: float
    ) -> None:
        super().__init__()
        self.epochs = positive_int("epochs", epochs)
        self.lr = nonnegative_float("lr", lr, strictly_positive=True)
        self.batch_size = positive_int("batch_size", batch_size)
        self.weight_decay = nonnegative_float("weight_decay", weight_decay)
        self._net: nn.Module | None = None
        self._stats: dict[str, np.ndarray] = {}

    def hyperparameters(self) -> dict[str, Any]:
        return {
            "epochs": self.epochs,
            "lr": self.lr,
            "batch_size": self.batch_size,
            "weight_decay": self.weight_decay,
        }

    # subclasses -------------------------------------------------------------
    @abstractmethod
    def _build(self, n_features: int) -> nn.Module:
        """A freshly initialised network mapping ``_inputs`` output to 2 logits."""

    @abstractmethod
    def _fit_standardisation(self, x: np.ndarray) -> dict[str, np.ndarray]:
        """Float32 standardisation arrays fitted on training features."""

    @abstractmethod
    def _inputs(self, x: np.ndarray, stats: dict[str, np.ndarray]) -> torch.Tensor:
        """Network input tensor for float64 features ``x``."""

    @abstractmethod
    def _stat_shapes(self, n_features: int) -> dict[str, tuple[int, ...]]:
        """Names and shapes of the standardisation arrays."""

    # Attack -----------------------------------------------------------------
    def _fit(self, x: np.ndarray, y: np.ndarray, seed: int) -> None:
        stats = self._fit_standardisation(x)
        inputs = self._inputs(x, stats)
        targets = torch.from_numpy(y)
        with _local_torch(seed):
            # Initialisation and dropout draw from the forked, seeded global RNG; batch
            # order from a dedicated generator.
            net = self._build(x.shape[1])
            shuffle = torch.Generator().manual_seed(seed)
            opt = torch.optim.Adam(net.parameters(), lr=self.lr, weight_decay=self.weight_decay)
            loss_fn = nn.CrossEntropyLoss()
            n = inputs.shape[0]
            net.train()
            for _ in range(self.epochs):
                order = torch.randperm(n, generator=shuffle)
                for start in range(0, n, self.batch_size):
                    idx = order[start : start + self.batch_size]
                    opt.zero_grad(set_to_none=True)
                    loss = loss_fn(net(inputs[idx]), targets[idx])
                    loss.backward()
                    opt.step()
            net.eval()
        self._net = net
        self._stats = stats

    def _score(self, x: np.ndarray) -> np.ndarray:
        assert self._net is not None
        inputs = self._inputs(x, self._stats)
        margins = np.empty(inputs.shape[0], dtype=np.float64)
        with _local_torch(), torch.no_grad():
            for start in range(0, inputs.shape[0], _SCORE_CHUNK):
                logits = self._net(inputs[start : start + _SCORE_CHUNK]).numpy().astype(np.float64)
                margins[start : start + _SCORE_CHUNK] = logits[:, 1] - logits[:, 0]
        # softmax([z0, z1])[1] == sigmoid(z1 - z0)
        return expit(margins)

    def _state(self) -> tuple[dict[str, Any], dict[str, np.ndarray]]:
        assert self._net is not None
        arrays = {f"stats.{k}": v for k, v in self._stats.items()}
        for key, tensor in self._net.state_dict().items():
            arrays[f"net.{key}"] = tensor.detach().cpu().numpy()
        return {}, arrays

    def _expected_arrays(self) -> dict[str, tuple[int, ...]]:
        assert self._n_features is not None
        shapes = {f"stats.{k}": s for k, s in self._stat_shapes(self._n_features).items()}
        with _local_torch(0):  # building draws initial weights; keep the caller's RNG intact
            template = self._build(self._n_features)
        for key, tensor in template.state_dict().items():
            shapes[f"net.{key}"] = tuple(tensor.shape)
        return shapes

    def _load_state(self, params: Mapping[str, Any], arrays: dict[str, np.ndarray]) -> None:
        assert self._n_features is not None
        self._stats = {
            k[len("stats.") :]: v for k, v in arrays.items() if k.startswith("stats.")
        }
        if "std" in self._stats and (self._stats["std"] <= 0).any():
            raise CalibrationError(f"{self.name} state array 'stats.std' must be positive.")
        with _local_torch(0):
            net = self._build(self._n_features)
        weights = {k[len("net.") :]: v for k, v in arrays.items() if k.startswith("net.")}
        net.load_state_dict({k: torch.from_numpy(v) for k, v in weights.items()})
        net.eval()
        self._net = net


def standardise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """(x - mean) / std in float64 with float32 statistics, returned as float32.

    The statistics are used in their stored float32 form both right after fitting and after
    loading, so a save/load round trip gives bit-identical scores.
    """
    return ((x - mean.astype(np.float64)) / std.astype(np.float64)).astype(np.float32)


def safe_std(values: np.ndarray, axis: int | None = None) -> np.ndarray:
    """Standard deviation with zeros (constant inputs) replaced by 1, as float32."""
    std = np.std(values, axis=axis, dtype=np.float64)
    return np.where(std > 1e-12, std, 1.0).astype(np.float32)

