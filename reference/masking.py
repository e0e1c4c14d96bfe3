"""Spatial masking: fills masked points of selected variables.

It exists here to show that the spatial-masking convention and the
pre-corrector exclusions share one matcher (:class:`reference.matching.NameMatcher`):
``exclude_names_and_prefixes`` means the same thing in both places.
"""

from collections.abc import Iterable

import torch

from reference.matching import NameMatcher
from reference.typing_ import TensorDict, TensorMapping


class SpatialMasking:
    """Sets points where ``mask`` is False to ``fill_value``.

    Args:
        mask: boolean tensor broadcastable to each variable's shape
            (``(n_lat, n_lon)`` for one grid); True keeps a point.
        exclude_names_and_prefixes: variables left unmasked, matched by the
            shared name-and-prefix rules.
        fill_value: the value written at masked points (physical units).
    """

    def __init__(
        self,
        mask: torch.Tensor,
        exclude_names_and_prefixes: Iterable[str] = (),
        fill_value: float = 0.0,
    ):
        self.mask = mask.to(dtype=torch.bool)
        self.excluded = NameMatcher(exclude_names_and_prefixes)
        self.fill_value = fill_value

    def __call__(self, data: TensorMapping) -> TensorDict:
        """A new mapping; excluded variables are passed through unchanged."""
        fill = torch.tensor(self.fill_value)
        return {
            k: v if self.excluded.matches(k) else torch.where(self.mask, v, fill.to(v))
            for k, v in data.items()
        }
