"""The suite's independent oracle: expected values in closed form, float64,
written from the definitions in ``conformance/adapter.py`` in plain tensor
arithmetic. Nothing here imports an implementation (the reference included).

Inputs are physical-unit mappings as the checks hold them (``output`` and
``uncorrected`` of shape ``(n_batch * n_ensemble, *spatial)``, targets
``(n_batch, *spatial)``). Every function converts to float64 with
``.double()``, which keeps an autograd graph, so the same code gives expected
values (on detached inputs) and expected gradients (on leaves).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence

import torch

from conformance.adapter import LossSpec

TensorMapping = Mapping[str, torch.Tensor]

# ------------------------------------------------------------ name matching


def _is_level(text: str) -> bool:
    return text != "" and all(c in "0123456789" for c in text)


def entry_matches(entry: str, name: str) -> bool:
    """The name-and-prefix rules: bare ``x`` matches ``x`` and ``x_<digits>``;
    ``x_`` matches ``x_<digits>``; ``x_<digits>`` matches only itself.
    Entries are literal text (no pattern syntax)."""
    if entry.endswith("_"):
        return name.startswith(entry) and _is_level(name[len(entry) :])
    stem, sep, tail = entry.rpartition("_")
    if sep and stem and _is_level(tail):
        return name == entry
    return name == entry or (name.startswith(entry + "_") and _is_level(name[len(entry) + 1 :]))


def matched_by_any(entries: Iterable[str], name: str) -> bool:
    return any(entry_matches(e, name) for e in entries)


def swapped_names(exclude: Sequence[str], corrected: Sequence[str]) -> tuple[str, ...]:
    """Corrected variables the exclusions do not match: the main loss sees
    their ``uncorrected`` values."""
    return tuple(n for n in corrected if not matched_by_any(exclude, n))


def unmatched_entries(exclude: Sequence[str], corrected: Sequence[str]) -> tuple[str, ...]:
    """Exclusion entries that match no corrected variable."""
    return tuple(e for e in exclude if not any(entry_matches(e, n) for n in corrected))


def select_for_exclusions(exclude: Sequence[str], corrected: Sequence[str]) -> tuple[str, ...]:
    """The opt-in translation of an exclusion list (see ``PreCorrectorSpec``)."""
    return swapped_names(exclude, corrected) + unmatched_entries(exclude, corrected)


# ------------------------------------------------------------ losses


def _apply_mask(x: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """Masked points (False) become 0; ``mask`` is ``(n_batch, *spatial)`` or
    ``spatial``-shaped and is broadcast over the ensemble dim (dim 1)."""
    if mask is None:
        return x
    m = mask.to(torch.bool)
    if m.ndim == x.ndim - 1:  # (n_batch, *spatial): add the ensemble dim
        m = m.unsqueeze(1)
    return torch.where(m, x, torch.zeros((), dtype=x.dtype))


def channel_loss(
    kind: str,
    predict: torch.Tensor,
    target: torch.Tensor,
    area_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """One channel's loss in loss-normalized (weighted) units.

    Args:
        kind: ``MSE`` (mean of squared differences over every element),
            ``L1`` (mean of absolute differences), ``AreaWeightedMSE`` (squared
            differences averaged with ``area_weights`` over the last two dims,
            then over the rest) or ``EnsembleLoss`` (fair CRPS over dim 1).
        predict: ``(n_batch, n_ensemble, *spatial)``, float64.
        target: ``(n_batch, 1, *spatial)``, float64.
    """
    if kind == "MSE":
        return ((predict - target) ** 2).mean()
    if kind == "L1":
        return (predict - target).abs().mean()
    if kind == "AreaWeightedMSE":
        assert area_weights is not None
        w = area_weights.double().expand(predict.shape[-2:])
        sq = (predict - target) ** 2
        return ((sq * w).sum(dim=(-2, -1)) / w.sum()).mean()
    if kind == "EnsembleLoss":
        m = predict.shape[1]
        skill = (predict - target).abs().mean(dim=1)
        spread = torch.zeros_like(skill)
        for i in range(m):
            for j in range(m):
                spread = spread + (predict[:, i] - predict[:, j]).abs()
        return (skill - spread / (2 * m * (m - 1))).mean()
    raise ValueError(f"the oracle has no loss type {kind!r}")


def _unfold(x: torch.Tensor, n_ensemble: int) -> torch.Tensor:
    """``(n_batch * n_ensemble, *spatial)`` -> ``(n_batch, n_ensemble, *spatial)``;
    members of one sample are adjacent rows."""
    return x.reshape(x.shape[0] // n_ensemble, n_ensemble, *x.shape[1:])


def step_weight(spec: LossSpec, step: int) -> float:
    return (1.0 + spec.main.sqrt_loss_step_decay_constant * step) ** -0.5


def main_prediction(
    spec: LossSpec, output: TensorMapping, uncorrected: TensorMapping
) -> dict[str, torch.Tensor]:
    """What the main loss must see: ``uncorrected`` for swapped variables,
    ``output`` for the rest (physical units)."""
    swapped: tuple[str, ...] = ()
    if spec.precorrector is not None:
        exclude = spec.precorrector.exclude_names_and_prefixes
        swapped = swapped_names(exclude, [k for k in spec.names if k in uncorrected])
    return {k: (uncorrected[k] if k in swapped else output[k]) for k in spec.names}


def main_per_channel(
    spec: LossSpec,
    predict: TensorMapping,
    target: TensorMapping,
    step: int,
    data_mask: TensorMapping | None = None,
) -> dict[str, torch.Tensor]:
    """``(1 + c*step)^-1/2 * L(w_k (p_k - mu_k)/sigma_k, w_k (y_k - mu_k)/sigma_k)``
    for every loss variable (float64, 0-d)."""
    out = {}
    mask = data_mask or {}
    for k in spec.names:
        w = float(spec.main.weights.get(k, 1.0))
        mu, sigma = spec.normalizer.means[k], spec.normalizer.stds[k]
        p = _unfold(w * (predict[k].double() - mu) / sigma, spec.n_ensemble)
        y = (w * (target[k].double() - mu) / sigma).unsqueeze(1)
        p, y = _apply_mask(p, mask.get(k)), _apply_mask(y, mask.get(k))
        out[k] = step_weight(spec, step) * channel_loss(
            spec.main.loss_type, p, y, spec.area_weights
        )
    return out


def main_total(per_channel: Mapping[str, torch.Tensor]) -> torch.Tensor:
    """The mean over all loss variables."""
    return torch.stack(list(per_channel.values())).mean()


def penalty_per_channel(
    spec: LossSpec,
    output: TensorMapping,
    uncorrected: TensorMapping,
    data_mask: TensorMapping | None = None,
) -> dict[str, torch.Tensor]:
    """``L_reg((output_k - uncorrected_k) / sigma_k, 0)`` per corrected loss
    variable (float64, unweighted, no decay)."""
    assert spec.regularization is not None
    mask = data_mask or {}
    out = {}
    for k in spec.names:
        if k not in uncorrected:
            continue
        d = (output[k].double() - uncorrected[k].double()) / spec.normalizer.stds[k]
        d = _apply_mask(_unfold(d, spec.n_ensemble), mask.get(k))
        out[k] = channel_loss(
            spec.regularization.loss_type, d, torch.zeros_like(d[:, :1]), spec.area_weights
        )
    return out


def penalty(
    spec: LossSpec,
    output: TensorMapping,
    uncorrected: TensorMapping,
    data_mask: TensorMapping | None = None,
) -> torch.Tensor:
    """``weight * mean over corrected channels`` of :func:`penalty_per_channel`;
    exactly 0 when nothing is corrected."""
    assert spec.regularization is not None
    per = penalty_per_channel(spec, output, uncorrected, data_mask)
    if not per:
        return torch.zeros((), dtype=torch.float64)
    return spec.regularization.weight * torch.stack(list(per.values())).mean()


def total(
    spec: LossSpec,
    output: TensorMapping,
    uncorrected: TensorMapping,
    target: TensorMapping,
    step: int,
    data_mask: TensorMapping | None = None,
) -> torch.Tensor:
    """The whole expected loss of one step (float64, graph kept)."""
    predict = main_prediction(spec, output, uncorrected)
    value = main_total(main_per_channel(spec, predict, target, step, data_mask))
    if spec.regularization is not None:
        value = value + penalty(spec, output, uncorrected, data_mask)
    return value
