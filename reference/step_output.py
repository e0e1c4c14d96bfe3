"""The output of one step of a stepper."""

import dataclasses
from typing import Any

import torch

from reference.typing_ import TensorDict, TensorMapping


@dataclasses.dataclass(frozen=True)
class StepOutput:
    """What one step produces.

    Attributes:
        output: corrected values of every output variable, in physical units,
            each of shape ``(n_batch * n_ensemble, *spatial)`` (ensemble
            members of one sample are adjacent). Rollout state and returned
            predictions always use these.
        uncorrected: the values *before* correction, in physical units and of
            the same shapes, for exactly the variables that the corrector
            modified. Empty when no corrector ran (or it modified nothing).
        state: optional stepper state carried to the next step (opaque here).

    Corrections are derived, never stored: see :meth:`corrections`.
    """

    output: TensorMapping
    uncorrected: TensorMapping = dataclasses.field(default_factory=dict)
    state: Any = None

    def corrections(self) -> TensorDict:
        """``output[k] - uncorrected[k]`` for every corrected variable.

        Physical units; shape ``(n_batch * n_ensemble, *spatial)``. Keeps the
        autograd graph of both terms.
        """
        return {k: self.output[k] - u for k, u in self.uncorrected.items()}

    def detach_uncorrected(self) -> "StepOutput":
        """The same output with ``uncorrected`` cut from the autograd graph.

        Plain prediction uses this: without a graph through the pre-correction
        values, the ``(C' - I)`` term of the correction's gradient is zero.
        """
        return dataclasses.replace(
            self, uncorrected={k: v.detach() for k, v in self.uncorrected.items()}
        )


def is_detached(mapping: TensorMapping) -> bool:
    """True when no tensor in ``mapping`` requires grad."""
    return not any(isinstance(v, torch.Tensor) and v.requires_grad for v in mapping.values())
