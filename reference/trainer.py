"""A minimal trainer loop: one epoch over batches, logging as fme's trainer does.

Every batch's metrics are logged with the ``batch_`` prefix (``batch_loss``,
``batch_corrector_regularization`` ...) by one generic rule, so a new metric
needs no trainer code; the epoch's aggregated metrics are logged as
``train/mean/<name>``.

Under data parallelism (:mod:`reference.distributed`) every rank runs the
loop on its own shares; the stepper's metrics are already whole-batch values
(identical on every rank, ``n_batch`` the global samples), so the epoch means
are too, and only rank 0 logs (every rank still gets the epoch logs back).
"""

from collections.abc import Callable, Iterable

from reference.stepper import TrainStepper
from reference.typing_ import TensorMapping

Logger = Callable[[dict[str, float]], None]


def batch_logs(metrics: dict) -> dict[str, float]:
    """``{"batch_" + name: float(value)}`` for every metric."""
    return {f"batch_{name}": float(value) for name, value in metrics.items()}


class Trainer:
    """Trains a ``TrainStepper`` epoch by epoch.

    Args:
        stepper: the train stepper.
        log: called with each batch's logs and then with the epoch's logs
            (on rank 0 only under data parallelism); by default they are
            appended to ``self.logged``.
    """

    def __init__(self, stepper: TrainStepper, log: Logger | None = None):
        self.stepper = stepper
        self.logged: list[dict[str, float]] = []
        self.log: Logger = log if log is not None else self.logged.append

    def train_one_epoch(self, batches: Iterable[TensorMapping]) -> dict[str, float]:
        """Train on every batch; returns (and logs) ``train/mean/<name>`` epoch logs."""
        aggregator = self.stepper.get_aggregator()
        is_root = self.stepper.distributed.is_root
        for batch in batches:
            output = self.stepper.train_on_batch(batch)
            aggregator.record_batch(output)
            if is_root:
                self.log(batch_logs(output.metrics))
        logs = aggregator.get_logs("train")
        if is_root:
            self.log(logs)
        return logs
