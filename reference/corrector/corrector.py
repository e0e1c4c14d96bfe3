"""A deterministic, differentiable corrector: the post-processing a step
applies to its network output before the output is used.

Everything here is in **physical units**; tensors have shape
``(n_samples, *spatial)`` with ``spatial = (n_lat, n_lon)``.
"""

import abc
from collections.abc import Sequence

import torch

from reference.matching import NameMatcher
from reference.typing_ import TensorDict, TensorMapping


class CorrectorABC(abc.ABC):
    """Corrects a step's raw (generated) output."""

    @abc.abstractmethod
    def modified_names(self, out_names: Sequence[str]) -> list[str]:
        """The output variables this corrector modifies, in ``out_names`` order.

        A step puts exactly these in ``StepOutput.uncorrected``.
        """

    def validate(self, in_names: Sequence[str], out_names: Sequence[str]) -> None:
        """Raise ``ValueError`` if the corrector cannot work on these variables
        (default: it can)."""
        return None

    @abc.abstractmethod
    def __call__(self, input: TensorMapping, gen_output: TensorMapping) -> TensorDict:
        """The corrected output.

        Args:
            input: the step's input, physical units, ``(n_samples, *spatial)``.
            gen_output: the raw output, physical units, ``(n_samples, *spatial)``.

        Returns:
            Every variable of ``gen_output``; the unmodified ones are the
            same tensor objects. Differentiable in ``gen_output``.
        """


def global_mean(x: torch.Tensor, area_weights: torch.Tensor | None) -> torch.Tensor:
    """Area-weighted mean over the last two dims, kept as ``(..., 1, 1)``."""
    if area_weights is None:
        return x.mean(dim=(-2, -1), keepdim=True)
    w = area_weights.to(x).expand(x.shape[-2:])
    return (x * w).sum(dim=(-2, -1), keepdim=True) / w.sum()


class ConservationCorrector(CorrectorABC):
    """Global-mean conservation of some variables and positivity of others.

    - ``conserve_global_mean_names``: each named output gets a uniform shift
      so that its (area-weighted) global mean equals the input's,
      ``out = gen + gm(input) - gm(gen)`` (like a dry-air-mass fix). Its
      Jacobian is ``I - w 1^T / sum(w)``: the correction depends on ``gen``.
    - ``force_positive_names_and_prefixes``: matched outputs are clamped at 0
      (``max(gen, 0)``, like a humidity positivity fix), matched with the
      shared name-and-prefix rules (``q``, ``q_``, ``q_3``).

    Args:
        conserve_global_mean_names: variables present in both input and output.
        force_positive_names_and_prefixes: names and prefixes, see above.
        area_weights: ``(n_lat, n_lon)`` or ``(n_lat, 1)``; None = uniform.
    """

    def __init__(
        self,
        conserve_global_mean_names: Sequence[str] = (),
        force_positive_names_and_prefixes: Sequence[str] = (),
        area_weights: torch.Tensor | None = None,
    ):
        self.conserve_global_mean_names = tuple(conserve_global_mean_names)
        self.force_positive = NameMatcher(force_positive_names_and_prefixes)
        self.area_weights = area_weights
        both = [n for n in self.conserve_global_mean_names if self.force_positive.matches(n)]
        if both:
            raise ValueError(
                f"{both} are both conserved and forced positive; choose one fix per variable."
            )

    def modified_names(self, out_names: Sequence[str]) -> list[str]:
        return [
            n
            for n in out_names
            if n in self.conserve_global_mean_names or self.force_positive.matches(n)
        ]

    def validate(self, in_names: Sequence[str], out_names: Sequence[str]) -> None:
        for name in self.conserve_global_mean_names:
            if name not in in_names or name not in out_names:
                raise ValueError(
                    f"conserve_global_mean_names has {name!r}, but it is not in both the "
                    f"step's in_names ({list(in_names)}) and out_names ({list(out_names)}); "
                    "make it a prognostic variable or remove it."
                )

    def __call__(self, input: TensorMapping, gen_output: TensorMapping) -> TensorDict:
        self.validate(list(input), list(gen_output))
        out = dict(gen_output)
        for name in self.conserve_global_mean_names:
            gen = gen_output[name]
            out[name] = gen + (
                global_mean(input[name], self.area_weights) - global_mean(gen, self.area_weights)
            )
        for name in self.force_positive.select(gen_output):
            out[name] = torch.clamp(gen_output[name], min=0.0)
        return out
