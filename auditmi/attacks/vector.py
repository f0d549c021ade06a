"""EncoderMI-V: the sorted similarity vector, classified by an MLP (method.md, "The three
inference classifiers")."""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from auditmi.attacks.neural import NeuralAttack, safe_std, standardise
from auditmi.errors import InputError
from auditmi.validate import positive_int


class VectorAttack(NeuralAttack):
    """EncoderMI-V: similarities sorted ascending, then an MLP with a 2-way softmax output.

    Defaults are the reference code's settings (method.md): two hidden layers of 256 tanh
    units, Adam with lr 1e-4, batch 100, 300 epochs, L2 (Adam weight decay) 1e-6. Sorting
    makes the vector independent of the arbitrary order of the view pairs. Each sorted
    position is standardised with a mean and standard deviation fitted on the training set
    (stored with the weights). ``score`` is the member probability.

    Args:
        epochs: passes over the training set.
        lr: Adam learning rate.
        batch_size: mini-batch size.
        hidden: widths of the tanh hidden layers.
        weight_decay: L2 penalty applied by Adam.
    """

    kind: ClassVar[str] = "V"
    name: ClassVar[str] = "EncoderMI-V"

    def __init__(
        self,
        *,
        epochs: int = 300,
        lr: float = 1e-4,
        batch_size: int = 100,
        hidden: Sequence[int] = (256, 256),
        weight_decay: float = 1e-6,
    ) -> None:
        super().__init__(epochs=epochs, lr=lr, batch_size=batch_size, weight_decay=weight_decay)
        if isinstance(hidden, (str, bytes)) or not isinstance(hidden, Sequence) or not hidden:
            raise InputError(f"hidden must be a non-empty list of layer widths, got {hidden!r}.")
        self.hidden = tuple(positive_int("hidden width", h) for h in hidden)

    def hyperparameters(self) -> dict[str, object]:
        return {**super().hyperparameters(), "hidden": list(self.hidden)}

    def _build(self, n_features: int) -> nn.Module:
        layers: list[nn.Module] = []
        width = n_features
        for h in self.hidden:
            layers += [nn.Linear(width, h), nn.Tanh()]
            width = h
        layers.append(nn.Linear(width, 2))
        return nn.Sequential(*layers)

    def _stat_shapes(self, n_features: int) -> dict[str, tuple[int, ...]]:
        return {"mean": (n_features,), "std": (n_features,)}

    def _fit_standardisation(self, x: np.ndarray) -> dict[str, np.ndarray]:
        v = np.sort(x, axis=1)
        return {"mean": v.mean(axis=0).astype(np.float32), "std": safe_std(v, axis=0)}

    def _inputs(self, x: np.ndarray, stats: dict[str, np.ndarray]) -> torch.Tensor:
        return torch.from_numpy(standardise(np.sort(x, axis=1), stats["mean"], stats["std"]))
