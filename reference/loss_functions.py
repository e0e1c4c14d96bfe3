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
    needs_grid: bool = False
    """True when ``spatial_problem`` can find a problem (area-weighted losses)."""

    def spatial_problem(self, shape: tuple[int, ...]) -> str | None:
        """Why values of one channel with ``shape`` (``(n_samples, *spatial)``)
        cannot be used by this loss, or None when they can (O(1), no scan)."""
        return None

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


def validate_area_weights(area_weights: object, what: str) -> torch.Tensor:
    """``area_weights`` if they are usable by ``what``; else a clear error.

    Built once per loss, so the full scan (finite, >= 0, not all 0) is cheap.

    Raises:
        TypeError: not a floating-point torch tensor.
        ValueError: not 2-D, or negative, NaN, inf or all zero.
    """
    if not isinstance(area_weights, torch.Tensor):
        raise TypeError(
            f"{what}: area_weights is a {type(area_weights).__name__}; pass a torch "
            "tensor of shape (n_lat, n_lon) or (n_lat, 1) (e.g. torch.as_tensor(weights))."
        )
    if not area_weights.dtype.is_floating_point:
        raise TypeError(
            f"{what}: area_weights has dtype {area_weights.dtype}; pass floating-point "
            "weights (e.g. area_weights.float())."
        )
    if area_weights.ndim != 2:
        raise ValueError(
            f"{what}: area_weights has shape {tuple(area_weights.shape)}; it must be 2-D, "
            "(n_lat, n_lon) or (n_lat, 1) (e.g. cos(lat)[:, None])."
        )
    if area_weights.is_meta:
        raise ValueError(f"{what}: area_weights is on the meta device; pass real values.")
    if not bool(torch.isfinite(area_weights).all()) or bool((area_weights < 0).any()):
        raise ValueError(
            f"{what}: area_weights contain negative, NaN or infinite values; they must "
            "be finite and >= 0 (e.g. cos(latitude))."
        )
    if not bool((area_weights > 0).any()):
        raise ValueError(f"{what}: area_weights are all zero; at least one must be > 0.")
    return area_weights


def area_weights_problem(area_weights: torch.Tensor, shape: tuple[int, ...]) -> str | None:
    """Why ``(n_samples, n_lat, n_lon)`` values of ``shape`` do not fit
    ``area_weights`` (``(n_lat, n_lon)`` or ``(n_lat, 1)``), or None."""
    if len(shape) < 3:
        return (
            f"has shape {shape}, but an area-weighted loss needs (n_samples, n_lat, n_lon): "
            "the last two dimensions are latitude and longitude"
        )
    n_lat, n_lon = shape[-2:]
    w_lat, w_lon = area_weights.shape
    if w_lat != n_lat or w_lon not in (1, n_lon):
        return (
            f"has the grid (n_lat, n_lon) = {(n_lat, n_lon)}, but area_weights have shape "
            f"{(w_lat, w_lon)}; pass area weights of shape {(n_lat, n_lon)} or {(n_lat, 1)}"
        )
    return None


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
    needs_grid = True

    def __init__(self, area_weights: torch.Tensor):
        self.area_weights = validate_area_weights(area_weights, "AreaWeightedMSE")

    def spatial_problem(self, shape: tuple[int, ...]) -> str | None:
        return area_weights_problem(self.area_weights, shape)

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
        if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not 0 <= alpha <= 1:
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
    needs_grid = True

    def __init__(self, area_weights: torch.Tensor, p: float = 2.0):
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not p > 0:
            raise ValueError(f"LpLoss p must be a number > 0, got {p!r}.")
        self.area_weights = validate_area_weights(area_weights, "global_mean_type LpLoss")
        self.p = p

    def spatial_problem(self, shape: tuple[int, ...]) -> str | None:
        return area_weights_problem(self.area_weights, shape)

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
        self.needs_grid = any(loss.needs_grid for loss in losses)

    def spatial_problem(self, shape: tuple[int, ...]) -> str | None:
        for loss in self.losses:
            problem = loss.spatial_problem(shape)
            if problem is not None:
                return problem
        return None

    def __call__(self, predict: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        terms = [w * loss(predict, target) for w, loss in zip(self.weights, self.losses)]
        return torch.stack(terms).sum()

    def of_difference(self, difference: torch.Tensor) -> torch.Tensor:
        terms = [w * loss.of_difference(difference) for w, loss in zip(self.weights, self.losses)]
        return torch.stack(terms).sum()
