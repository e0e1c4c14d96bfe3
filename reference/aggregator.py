"""Epoch aggregation of train metrics.

``TrainAggregator`` averages every metric of the batches it records,
weighted by the batch's number of samples, so an epoch value equals the
value on all samples at once. A metric that some batches lack (e.g.
``loss_step_3`` in a shorter rollout) is averaged over the batches that have
it. Works on anything with ``metrics: dict[str, Tensor]`` and ``n_batch: int``
(a :class:`reference.stepper.TrainOutput`).

Under data parallelism nothing is reduced here: the train stepper's metrics
are already whole-batch values (sample means reduced across ranks) and its
``n_batch`` counts the global batch, so every rank's epoch means equal one
process's on the same batches.
"""

from typing import Protocol

import torch


class HasMetrics(Protocol):
    metrics: dict[str, torch.Tensor]
    n_batch: int


class TrainAggregator:
    """Sample-weighted epoch means of train metrics.

    ``get_metrics()`` gives ``{name: mean}`` with the batch metric names
    (``loss``, ``corrector_regularization``, ``loss_step_{i}``, ``loss/{name}``
    ...); ``get_logs(label)`` the same as ``{label}/mean/{name}``.
    """

    def __init__(self) -> None:
        self._sums: dict[str, torch.Tensor] = {}
        self._counts: dict[str, int] = {}

    def record_batch(self, output: HasMetrics) -> None:
        if output.n_batch < 1:
            raise ValueError(f"n_batch is {output.n_batch}; a recorded batch needs samples.")
        for name, value in output.metrics.items():
            weighted = value.detach().double() * output.n_batch
            self._sums[name] = self._sums[name] + weighted if name in self._sums else weighted
            self._counts[name] = self._counts.get(name, 0) + output.n_batch

    def get_metrics(self) -> dict[str, float]:
        """Epoch means (floats); empty before any batch."""
        return {name: float(total / self._counts[name]) for name, total in self._sums.items()}

    def get_logs(self, label: str) -> dict[str, float]:
        return {f"{label}/mean/{name}": value for name, value in self.get_metrics().items()}
