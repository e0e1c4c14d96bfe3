"""Optimization: the optimizer plus the loss-accumulation policy.

Mirrors fme's ``Optimization``:

- ``accumulate_loss(loss)`` is called once per optimized step with that
  step's total loss (a 0-d tensor with a graph). With
  ``use_gradient_accumulation`` it back-propagates at once and keeps only the
  detached value; otherwise it adds the loss (with its graph) to a running sum.
- ``step_weights()`` back-propagates the running sum (without accumulation),
  then steps the optimizer.
- ``detach_if_using_gradient_accumulation(state)`` cuts the rollout state
  from the graph when accumulating, so each step's backward sees a graph one
  step deep and nothing back-propagates through a graph already freed.

Gradients are zeroed by ``zero_grad()`` at the *start* of a batch, so after
``step_weights()`` every parameter's ``.grad`` holds the gradient of the
batch's loss (taken at the weights before the update).
"""

import copy
import dataclasses
import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import torch

from reference.typing_ import TensorDict, TensorMapping


class NonFiniteLossError(FloatingPointError):
    """The training loss became NaN or infinite."""


class Optimization:
    """See the module docstring.

    Args:
        parameters: the parameters to optimize.
        optimizer_type: ``Adam`` or ``SGD``.
        lr: learning rate, finite and >= 0.
        kwargs: extra optimizer arguments.
        use_gradient_accumulation: back-propagate each step's loss at once.
    """

    def __init__(
        self,
        parameters: Iterable[torch.nn.Parameter],
        optimizer_type: Literal["Adam", "SGD"] = "Adam",
        lr: float = 1e-3,
        kwargs: Mapping[str, Any] | None = None,
        use_gradient_accumulation: bool = False,
    ):
        self.parameters = [p for p in parameters if p.requires_grad]
        cls = {"Adam": torch.optim.Adam, "SGD": torch.optim.SGD}[optimizer_type]
        self.optimizer = cls(self.parameters, lr=lr, **dict(kwargs or {}))
        self.use_gradient_accumulation = use_gradient_accumulation
        self._accumulated: torch.Tensor | None = None
        self._n_accumulated = 0

    def zero_grad(self) -> None:
        """Start a batch: clear gradients and the accumulated loss."""
        self.optimizer.zero_grad(set_to_none=True)
        self._accumulated = None
        self._n_accumulated = 0

    def accumulate_loss(self, loss: torch.Tensor) -> None:
        """Add one optimized step's total loss (0-d, physical graph attached).

        Raises:
            NonFiniteLossError: the loss is NaN or infinite.
        """
        value = float(loss.detach())
        if not math.isfinite(value):
            raise NonFiniteLossError(
                f"The training loss of optimized step {self._n_accumulated} is {value}. "
                "Check the loss type (type 'NaN' cannot be trained on), the inputs "
                "and the learning rate."
            )
        if self.use_gradient_accumulation:
            loss.backward()
            loss = loss.detach()
        self._accumulated = loss if self._accumulated is None else self._accumulated + loss
        self._n_accumulated += 1

    def get_accumulated_loss(self) -> torch.Tensor:
        """The sum of the losses accumulated since ``zero_grad`` (detached)."""
        if self._accumulated is None:
            return torch.zeros(())
        return self._accumulated.detach()

    def step_weights(self) -> None:
        """Back-propagate (unless already done per step), then step the optimizer."""
        if self._accumulated is None:
            raise RuntimeError("step_weights() called before any accumulate_loss().")
        if not self.use_gradient_accumulation and self._accumulated.requires_grad:
            self._accumulated.backward()
        self.optimizer.step()

    def detach_if_using_gradient_accumulation(self, state: TensorMapping) -> TensorDict:
        """``state`` detached when accumulating gradients, else unchanged."""
        if self.use_gradient_accumulation:
            return {k: v.detach() for k, v in state.items()}
        return dict(state)

    def get_state(self) -> dict[str, Any]:
        return {"optimizer": self.optimizer.state_dict()}

    def load_state(self, state: Mapping[str, Any]) -> None:
        # a deep copy: torch would otherwise share the moment tensors with `state`
        self.optimizer.load_state_dict(copy.deepcopy(state["optimizer"]))


@dataclasses.dataclass
class OptimizationConfig:
    """Optimizer settings.

    Args:
        optimizer_type: ``Adam`` or ``SGD``.
        lr: learning rate, finite and >= 0.
        kwargs: extra optimizer arguments (e.g. ``betas``, ``momentum``).
        use_gradient_accumulation: back-propagate each optimized step's loss
            at once and detach the rollout state between steps, so memory is
            one step deep. The gradient is then truncated to one step: the
            sum over steps of each step's gradient with its input state held
            fixed (without accumulation it also flows back through the
            rollout).
    """

    optimizer_type: Literal["Adam", "SGD"] = "Adam"
    lr: float = 1e-3
    kwargs: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    use_gradient_accumulation: bool = False

    def __post_init__(self) -> None:
        if self.optimizer_type not in ("Adam", "SGD"):
            raise ValueError(
                f"Unknown optimizer_type {self.optimizer_type!r}; choose 'Adam' or 'SGD'."
            )
        if isinstance(self.lr, bool) or not (math.isfinite(self.lr) and self.lr >= 0):
            raise ValueError(f"lr is {self.lr}; it must be finite and >= 0.")

    def build(self, parameters: Iterable[torch.nn.Parameter]) -> Optimization:
        return Optimization(
            parameters,
            optimizer_type=self.optimizer_type,
            lr=self.lr,
            kwargs=self.kwargs,
            use_gradient_accumulation=self.use_gradient_accumulation,
        )
