"""The per-variable standard normalizer that defines loss-normalized space."""

import math
import numbers
from collections.abc import Mapping

from reference.typing_ import TensorDict, TensorMapping


class StandardNormalizer:
    """``normalize(x)[k] = (x[k] - means[k]) / stds[k]``.

    This is what a stepper's ``get_loss_normalizer`` returns: tensors in
    physical units map to *loss-normalized* space.

    Args:
        means: per-variable mean, physical units.
        stds: per-variable standard deviation, physical units; finite, > 0.
    """

    def __init__(self, means: Mapping[str, float], stds: Mapping[str, float]):
        for field, values in (("means", means), ("stds", stds)):
            if not isinstance(values, Mapping):
                raise TypeError(
                    f"Normalizer {field} are a {type(values).__name__}; pass a mapping "
                    "from variable name to a number, e.g. {'ps': 1.0e5}."
                )
            for name, value in values.items():
                if isinstance(value, bool) or not isinstance(value, numbers.Real):
                    raise TypeError(
                        f"Normalizer {field[:-1]} of {name!r} is {value!r}; it must be a number."
                    )
        if set(means) != set(stds):
            raise ValueError(
                "Normalizer means and stds must name the same variables; only in "
                f"means: {sorted(set(means) - set(stds))}, only in stds: "
                f"{sorted(set(stds) - set(means))}."
            )
        for name, std in stds.items():
            if not (math.isfinite(float(std)) and float(std) > 0):
                raise ValueError(
                    f"Normalizer std of {name!r} is {std}; it must be finite and "
                    "> 0 (a zero std would divide by zero in loss-normalized space)."
                )
        for name, mean in means.items():
            if not math.isfinite(float(mean)):
                raise ValueError(f"Normalizer mean of {name!r} is {mean}; it must be finite.")
        self.means = {k: float(v) for k, v in means.items()}
        self.stds = {k: float(v) for k, v in stds.items()}

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(self.means)

    def normalize(self, data: TensorMapping) -> TensorDict:
        """Physical units -> loss-normalized units, for the variables given."""
        return {k: (v - self.means[k]) / self.stds[k] for k, v in data.items()}

    def denormalize(self, data: TensorMapping) -> TensorDict:
        """Loss-normalized units -> physical units, for the variables given."""
        return {k: v * self.stds[k] + self.means[k] for k, v in data.items()}

    def get_state(self) -> dict[str, dict[str, float]]:
        return {"means": dict(self.means), "stds": dict(self.stds)}

    @classmethod
    def from_state(cls, state: Mapping[str, Mapping[str, float]]) -> "StandardNormalizer":
        return cls(means=state["means"], stds=state["stds"])
