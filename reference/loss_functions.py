"""Per-channel loss functions.

Every function here takes the values of **one channel** in loss-normalized
space (already multiplied by the channel's weight), with the ensemble
dimension unfolded:

- ``predict``: shape ``(n_batch, n_ensemble, *spatial)``;
- ``target``: shape ``(n_batch, 1, *spatial)`` (or the same as ``predict``);

and returns a 0-d tensor: that channel's loss.

Losses whose value depends only on ``predict - target`` set
``difference_only = True`` and implement :meth:`ChannelLoss.of_difference`;
callers then pass the (weighted, normalized) difference directly. For them
the normalizer's mean cancels, which is both exact and cheaper.
:meth:`ChannelLoss.of_scaled_difference` takes the loss of
``scale * (predict - target)`` from the physical values themselves; MSE, L1
and AreaWeightedMSE pull the scalar out of the mean, so the scaled
difference is never stored nor back-propagated through (the formulation the
benchmarks in ``benchmarks/`` time).
"""

import torch
import torch.nn.functional as F


class ChannelLoss:
    """Base class: a loss of one channel, see the module docstring."""

    difference_only: bool = False
    is_ensemble: bool = False
    is_nan: bool = False
    uses_global_mean: bool = False

    def __call__(self, predict: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return self.of_difference(predict - target)

    def of_difference(self, difference: torch.Tensor) -> torch.Tensor:
        """The loss of ``predict - target``; only for ``difference_only`` losses."""
        raise NotImplementedError(f"{type(self).__name__} is not a difference-only loss")

    def of_scaled_difference(
        self, predict: torch.Tensor, target: torch.Tensor, scale: float
    ) -> torch.Tensor:
        """``of_difference(scale * (predict - target))``; only for ``difference_only``
        losses. ``target`` broadcasts against ``predict``; ``scale >= 0``."""
        return self.of_difference((predict - target) * scale)


class MSELoss(ChannelLoss):
    """Mean squared error over every point and sample of the channel."""

    difference_only = True

    def of_difference(self, difference: torch.Tensor) -> torch.Tensor:
        return torch.mean(torch.square(difference))

    def of_scaled_difference(
        self, predict: torch.Tensor, target: torch.Tensor, scale: float
    ) -> torch.Tensor:
        # mean((s * d) ** 2) = s ** 2 * mean(d ** 2): one fused kernel each way
        return F.mse_loss(predict, target.expand_as(predict)) * scale**2


class L1Loss(ChannelLoss):
    """Mean absolute error over every point and sample of the channel."""

    difference_only = True

    def of_difference(self, difference: torch.Tensor) -> torch.Tensor:
        return torch.mean(torch.abs(difference))

    def of_scaled_difference(
        self, predict: torch.Tensor, target: torch.Tensor, scale: float
    ) -> torch.Tensor:
        # mean(|s * d|) = |s| * mean(|d|)
        return F.l1_loss(predict, target.expand_as(predict)) * abs(scale)


def _area_weighted_mean(x: torch.Tensor, area_weights: torch.Tensor) -> torch.Tensor:
    """Area-weighted mean over the last two (lat, lon) dimensions."""
    w = area_weights.to(x)
    return (x * w).sum(dim=(-2, -1)) / w.expand(x.shape[-2:]).sum()


class AreaWeightedMSELoss(ChannelLoss):
    """Squared error, area-weighted over (lat, lon), then averaged over samples.

    Args:
        area_weights: shape ``(n_lat, n_lon)`` or ``(n_lat, 1)``, non-negative.
    """

    difference_only = True

    def __init__(self, area_weights: torch.Tensor):
        self.area_weights = area_weights

    def of_difference(self, difference: torch.Tensor) -> torch.Tensor:
        return _area_weighted_mean(torch.square(difference), self.area_weights).mean()

    def of_scaled_difference(
        self, predict: torch.Tensor, target: torch.Tensor, scale: float
    ) -> torch.Tensor:
        return self.of_difference(predict - target) * scale**2


class NaNLoss(ChannelLoss):
    """A placeholder loss that is NaN for every channel.

    Upstream's ``type: NaN``: for configurations that must name a loss but
    never optimize it. It poisons any sum it enters, so it is rejected for
    corrector regularization.
    """

    is_nan = True
    difference_only = True

    def of_difference(self, difference: torch.Tensor) -> torch.Tensor:
        return torch.full((), float("nan"), dtype=difference.dtype, device=difference.device)


class CRPSLoss(ChannelLoss):
    """Almost-fair CRPS over the ensemble dimension (dim 1).

    ``alpha * fCRPS + (1 - alpha) * CRPS`` with
    ``CRPS = mean_i |x_i - y| - 1/(2 m^2) sum_ij |x_i - x_j|`` and the fair
    variant dividing the spread term by ``2 m (m - 1)``; averaged over samples
    and points. Needs ``n_ensemble >= 2``.
    """

    is_ensemble = True

    def __init__(self, alpha: float = 1.0):
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"CRPS alpha must be in [0, 1], got {alpha}.")
        self.alpha = alpha

    def __call__(self, predict: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        m = predict.shape[1]
        if m < 2:
            raise ValueError(
                f"The ensemble loss needs at least 2 ensemble members, got {m}; "
                "set n_ensemble >= 2 or use a deterministic loss type."
            )
        skill = torch.abs(predict - target).mean(dim=1)
        spread_sum = torch.abs(predict.unsqueeze(1) - predict.unsqueeze(2)).sum(dim=(1, 2))
        fair = spread_sum / (2 * m * (m - 1))
        plain = spread_sum / (2 * m * m)
        crps = skill - self.alpha * fair - (1 - self.alpha) * plain
        return crps.mean()


class GlobalMeanLpLoss(ChannelLoss):
    """Relative Lp error of each sample's area-weighted global mean.

    ``||gm(predict) - gm(target)||_p / ||gm(target)||_p`` over samples and
    members. Not a function of the difference alone (it divides by the
    target's norm), so undefined against a zero baseline.
    """

    uses_global_mean = True

    def __init__(self, area_weights: torch.Tensor, p: float = 2.0):
        if p <= 0:
            raise ValueError(f"LpLoss p must be > 0, got {p}.")
        self.area_weights = area_weights
        self.p = p

    def __call__(self, predict: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        gm_p = _area_weighted_mean(predict, self.area_weights)
        gm_t = _area_weighted_mean(target, self.area_weights).expand_as(gm_p)
        diff = torch.linalg.vector_norm((gm_p - gm_t).flatten(), ord=self.p)
        return diff / torch.linalg.vector_norm(gm_t.flatten(), ord=self.p)


class WeightedSumLoss(ChannelLoss):
    """``sum_i w_i * loss_i``; difference-only when every term is."""

    def __init__(self, losses: list[ChannelLoss], weights: list[float]):
        if len(losses) != len(weights):
            raise ValueError("losses and weights must have the same length")
        self.losses = losses
        self.weights = weights
        self.difference_only = all(loss.difference_only for loss in losses)
        self.is_ensemble = any(loss.is_ensemble for loss in losses)
        self.is_nan = any(loss.is_nan for loss in losses)
        self.uses_global_mean = any(loss.uses_global_mean for loss in losses)

    def __call__(self, predict: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        terms = [w * loss(predict, target) for w, loss in zip(self.weights, self.losses)]
        return torch.stack(terms).sum()

    def of_difference(self, difference: torch.Tensor) -> torch.Tensor:
        terms = [w * loss.of_difference(difference) for w, loss in zip(self.weights, self.losses)]
        return torch.stack(terms).sum()
