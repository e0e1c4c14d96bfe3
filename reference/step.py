"""Steps: one forward step of an emulator, returning a ``StepOutput``.

Public API
----------
``StepABC`` — subclass it to plug any model into :class:`reference.stepper.TrainStepper`.
Abstract members (the whole surface)::

    in_names: list[str]            # property: variables the step reads
    out_names: list[str]           # property: variables the step predicts (= loss variables)
    corrector_enabled: bool        # property: True iff a corrector can modify outputs
    modules: torch.nn.ModuleList   # property: the trainable modules (optimizer parameters)
    step(input: TensorMapping, detach_uncorrected: bool = True) -> StepOutput

Derived (concrete): ``prognostic_names`` (``out_names`` also in ``in_names``,
fed back during rollout), ``forcing_names`` (``in_names`` not in
``out_names``, read from the batch at each step), ``parameters()``,
``get_state()`` / ``load_state()`` (the modules' ``state_dict``).

Contract of ``step``:

- ``input``: every name of ``in_names``, physical units, shape
  ``(n_samples, *spatial)`` with ``n_samples = n_batch * n_ensemble``.
- returns ``StepOutput(output, uncorrected)``: ``output`` has every name of
  ``out_names`` (corrected values, physical units, same shape);
  ``uncorrected`` holds the pre-correction values of **exactly** the
  variables the corrector modified (empty when ``corrector_enabled`` is
  False).
- ``detach_uncorrected=True`` (the default: plain prediction) returns
  ``uncorrected`` cut from the autograd graph; ``False`` keeps the graph (the
  train stepper asks for that when a corrector loss feature needs it).
  Use :meth:`reference.step_output.StepOutput.detach_uncorrected`.

Concrete steps
--------------
- ``SingleModuleStep(module, normalizer, in_names, out_names, corrector=None)``:
  ``normalize -> module -> denormalize -> corrector``; ``corrector_enabled``
  is ``corrector is not None``.
- ``ResidualStep``: the same, but the module predicts the normalized
  *tendency* of prognostic variables (``out = in + denormalized delta``).

Correctors live in :mod:`reference.corrector.corrector`
(``ConservationCorrector``: global-mean conservation + positivity).
"""

import abc
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import nn

from reference.corrector.corrector import CorrectorABC
from reference.normalizer import StandardNormalizer
from reference.step_output import StepOutput
from reference.typing_ import TensorDict, TensorMapping


class StepABC(abc.ABC):
    """One step of an emulator; see the module docstring for the contract."""

    @property
    @abc.abstractmethod
    def in_names(self) -> list[str]:
        """Variables the step reads."""

    @property
    @abc.abstractmethod
    def out_names(self) -> list[str]:
        """Variables the step predicts; the train stepper's loss variables."""

    @property
    @abc.abstractmethod
    def corrector_enabled(self) -> bool:
        """True iff a corrector may modify outputs (and fill ``uncorrected``)."""

    @property
    @abc.abstractmethod
    def modules(self) -> nn.ModuleList:
        """The trainable modules; their parameters are optimized."""

    @abc.abstractmethod
    def step(self, input: TensorMapping, detach_uncorrected: bool = True) -> StepOutput:
        """One step; see the module docstring for shapes, units and detaching."""

    @property
    def prognostic_names(self) -> list[str]:
        """Outputs that are also inputs: fed back to the next step in rollout."""
        return [n for n in self.out_names if n in self.in_names]

    @property
    def forcing_names(self) -> list[str]:
        """Inputs that are not outputs: read from the batch at every step."""
        return [n for n in self.in_names if n not in self.out_names]

    def parameters(self) -> Iterator[nn.Parameter]:
        return self.modules.parameters()

    def get_state(self) -> dict[str, Any]:
        return {"modules": self.modules.state_dict()}

    def load_state(self, state: dict[str, Any]) -> None:
        self.modules.load_state_dict(state["modules"])


PASS_THROUGH: tuple[type[BaseException], ...] = (torch.OutOfMemoryError,)
"""Errors of a step that are never reworded as a shape problem: code that
catches them by type (out-of-memory handling) must still see them."""


class StepModuleError(ValueError):
    """The step's module does not fit its variables: it failed on the stacked
    input (``failed`` True), or returned the wrong number of channels."""

    def __init__(self, message: str, failed: bool = False):
        super().__init__(message)
        self.failed = failed


def _stack(data: TensorMapping, names: Sequence[str]) -> torch.Tensor:
    return torch.stack([data[n] for n in names], dim=1)


def _unstack(x: torch.Tensor, names: Sequence[str]) -> TensorDict:
    return {n: x[:, i] for i, n in enumerate(names)}


class SingleModuleStep(StepABC):
    """``normalize -> module -> denormalize -> corrector``.

    Args:
        module: maps ``(n_samples, len(in_names), *spatial)`` to
            ``(n_samples, len(out_names), *spatial)``, both in the network's
            normalized space (``normalizer``; it need not be the loss
            normalizer).
        normalizer: the network normalizer; must cover in and out names.
        in_names, out_names: the variables read and predicted.
        corrector: applied to the physical-unit output, or None (then
            ``corrector_enabled`` is False and ``uncorrected`` is empty).
    """

    def __init__(
        self,
        module: nn.Module,
        normalizer: StandardNormalizer,
        in_names: Sequence[str],
        out_names: Sequence[str],
        corrector: CorrectorABC | None = None,
    ):
        missing = [n for n in [*in_names, *out_names] if n not in normalizer.stds]
        if missing:
            raise ValueError(
                f"The step normalizer has no statistics for {sorted(set(missing))}; "
                "add them to the normalizer."
            )
        if len(set(out_names)) != len(out_names) or len(set(in_names)) != len(in_names):
            raise ValueError("in_names and out_names must not repeat a name.")
        if corrector is not None:
            corrector.validate(in_names, out_names)
        self._modules = nn.ModuleList([module])
        self.normalizer = normalizer
        self._in_names = list(in_names)
        self._out_names = list(out_names)
        self.corrector = corrector
        self._modified = [] if corrector is None else corrector.modified_names(out_names)

    @property
    def in_names(self) -> list[str]:
        return list(self._in_names)

    @property
    def out_names(self) -> list[str]:
        return list(self._out_names)

    @property
    def corrector_enabled(self) -> bool:
        return self.corrector is not None

    @property
    def modules(self) -> nn.ModuleList:
        return self._modules

    def _call_module(self, x: torch.Tensor) -> torch.Tensor:
        """The module on the stacked, normalized input ``(n_samples, n_in, *spatial)``;
        a ``StepModuleError`` naming the variables if it does not fit them."""
        n_in, n_out = len(self._in_names), len(self._out_names)
        try:
            y = self._modules[0](x)
        except PASS_THROUGH:
            raise  # not about the shapes: as torch raised it
        except RuntimeError as err:
            raise StepModuleError(
                f"The step's module failed on its input of shape {tuple(x.shape)} = "
                f"(n_samples, {n_in} channels for in_names {self._in_names}, *spatial): "
                f"{err}. It must map (n_samples, {n_in}, *spatial) to (n_samples, "
                f"{n_out}, *spatial); fix its channel counts (or the data's shape).",
                failed=True,
            ) from err
        if not isinstance(y, torch.Tensor) or y.ndim < 2 or y.shape[1] != n_out:
            shape = tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__
            raise StepModuleError(
                f"The step's module returned {shape} for an input of shape "
                f"{tuple(x.shape)}; it must return (n_samples, {n_out} channels for "
                f"out_names {self._out_names}, *spatial). Fix its output channels."
            )
        return y

    def _generate(self, input: TensorMapping) -> TensorDict:
        """The raw network output, physical units."""
        x = _stack(self.normalizer.normalize({n: input[n] for n in self._in_names}), self._in_names)
        return self.normalizer.denormalize(_unstack(self._call_module(x), self._out_names))

    def step(self, input: TensorMapping, detach_uncorrected: bool = True) -> StepOutput:
        missing = [n for n in self._in_names if n not in input]
        if missing:
            raise ValueError(f"The step input lacks {missing}; pass every name of in_names.")
        gen = self._generate(input)
        if self.corrector is None:
            return StepOutput(output=gen)
        output = self.corrector(input, gen)
        step_output = StepOutput(output=output, uncorrected={n: gen[n] for n in self._modified})
        return step_output.detach_uncorrected() if detach_uncorrected else step_output


class ResidualStep(SingleModuleStep):
    """Like ``SingleModuleStep``, but for prognostic variables the module
    predicts the normalized tendency: ``out = input + std * module(...)``
    (diagnostic outputs stay full values)."""

    def _generate(self, input: TensorMapping) -> TensorDict:
        x = _stack(self.normalizer.normalize({n: input[n] for n in self._in_names}), self._in_names)
        y = _unstack(self._call_module(x), self._out_names)
        out = self.normalizer.denormalize(y)
        for name in self.prognostic_names:
            out[name] = input[name] + y[name] * self.normalizer.stds[name]
        return out
