"""Minimal reproducers, in plain fme calls, for every check fme 2026.10.0 fails
(F1, F2, F4, F5, F6 of docs/fme/ANALYSIS.md) and for the observations the
analysis states (O1 bad inputs -- not a failure: fme does not claim
bad-input validation --, O2 norm and data_mask).

Run with fme installed (``tox -e fme`` runs it)::

    python docs/fme/reproducers.py

Each reproducer asserts fme's *current* behaviour and prints one line; an
AssertionError here means fme changed (re-run the suite and update
``docs/fme/``). Nothing here imports the conformance suite or the reference.
"""

from __future__ import annotations

import warnings
from dataclasses import asdict

import torch

warnings.simplefilter("ignore", DeprecationWarning)  # torch.jit notices on importing fme
warnings.filterwarnings("ignore", message="The GlobalTimer is currently inactive")

from fme.core.corrector.loss_config import (  # noqa: E402
    CorrectorLossConfig,
    CorrectorRegularizationConfig,
    PreCorrectorOptimizationConfig,
)
from fme.core.gridded_ops import LatLonOperations  # noqa: E402
from fme.core.loss import StepLossConfig, StepOutputLoss  # noqa: E402
from fme.core.normalizer import StandardNormalizer  # noqa: E402
from fme.core.tensors import add_ensemble_dim, unfold_ensemble_dim  # noqa: E402

NAMES = ["a", "b", "c"]
NORM = StandardNormalizer(
    means={n: torch.tensor(0.0) for n in NAMES}, stds={n: torch.tensor(1.0) for n in NAMES}
)
AREA = LatLonOperations(torch.tensor([[1.0, 1.0, 1.0], [3.0, 3.0, 3.0]]))


def fields(n_rows: int, seed: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {n: torch.randn((n_rows, 2, 3), generator=g) for n in NAMES}


def raises(fn) -> BaseException:  # noqa: ANN001
    try:
        fn()
    except Exception as err:  # noqa: BLE001
        return err
    raise AssertionError("expected an exception, none was raised")


def area_weighted_mse_per_channel() -> None:
    """F1. AreaWeightedMSE per-channel losses in the layout fme's TrainStepper
    uses, ``(n_batch, n_ensemble, *spatial)`` predictions and
    ``(n_batch, 1, *spatial)`` targets (unfold_ensemble_dim / add_ensemble_dim
    in TrainStepper._accumulate_loss)."""
    loss = StepLossConfig(type="AreaWeightedMSE").build(AREA, NAMES, NORM, channel_dim=-3)
    pred, target = fields(2, 0), fields(2, 1)
    # without the ensemble dim (fme's own unit tests) it is fine:
    ok = loss(pred, target, step=0).get_channel_losses()
    assert len(ok) == 3
    # in the trainer's layout, AreaWeightedMSELoss returns (B, E, C) and
    # StandardLoss.reduce_to_channel averages over C, keeping E as "channels":
    out = loss(unfold_ensemble_dim(pred, 1), add_ensemble_dim(target), step=0)
    err = raises(out.get_channel_losses)
    assert "Per-channel loss has 1 elements but 3 channel names" in str(err), err
    # total() is still right (the mean over everything), per-channel is not:
    torch.testing.assert_close(out.total(), loss(pred, target, step=0).total())
    # with n_ensemble == n_channels nothing raises and the per-"channel" values
    # are per-ensemble-member means over channels:
    two = StepLossConfig(type="AreaWeightedMSE").build(AREA, ["a", "b"], NORM, channel_dim=-3)
    p4 = {k: v for k, v in fields(4, 2).items() if k in ("a", "b")}
    t2 = {k: v for k, v in fields(2, 3).items() if k in ("a", "b")}
    silent = two(unfold_ensemble_dim(p4, 2), add_ensemble_dim(t2), step=0).get_channel_losses()
    channel_a = AREA.area_weighted_mean(
        (unfold_ensemble_dim(p4, 2)["a"] - t2["a"].unsqueeze(1)) ** 2
    ).mean()  # what the per-channel loss of "a" should be
    assert not torch.allclose(silent["a"].loss, channel_a)
    print(
        "F1 AreaWeightedMSE: per-channel losses broken in the trainer's (B, E, C, lat, lon) layout"
    )


def matcher_treats_names_as_regex() -> None:
    """F2. ``NameAndPrefixMatcher`` builds a regex from each entry without
    escaping it: a variable named with a metacharacter cannot be selected."""
    from fme.core.name_and_prefix_matcher import NameAndPrefixMatcher

    assert not NameAndPrefixMatcher(["x+(1)"]).match("x+(1)")
    assert not NameAndPrefixMatcher(["u[0]"]).match("u[0]")  # a character class:
    assert NameAndPrefixMatcher(["u[0]"]).match("u0")  # it matches "u0"
    assert NameAndPrefixMatcher(["a.b"]).match("aXb")  # '.' matches anything
    names = ["x+(1)"]
    norm = StandardNormalizer({"x+(1)": torch.tensor(0.0)}, {"x+(1)": torch.tensor(1.0)})
    config = CorrectorLossConfig(regularization=CorrectorRegularizationConfig(names, "L2"))
    err = raises(lambda: config.build(names, normalizer=norm, channel_dim=-3))
    assert "'x+(1)' matches none" in str(err), err
    print("F2 name matcher: entries are regexes ('x+(1)' matches none of ['x+(1)'])")


def bad_input_errors() -> None:
    """O1 (observation, not a check failure). Bad inputs: errors that do not
    name the variable or the mapping, or none at all."""
    loss = StepOutputLoss(StepLossConfig(type="MSE").build(None, NAMES, NORM, channel_dim=-3), None)
    pred, target = fields(2, 0), fields(2, 1)
    # a loss variable missing from the prediction (or the target): a TorchScript
    # traceback ending in "KeyError: b", not saying which mapping lacks it
    missing = {k: v for k, v in pred.items() if k != "b"}
    err = raises(lambda: loss(missing, target, step=0))
    assert "TorchScript" in str(err) and "KeyError: b" in str(err), err
    # a target of the wrong shape: the packer's message names no variable
    short = {**target, "c": target["c"][..., :2]}
    err = raises(lambda: loss(pred, short, step=0))
    assert "Cannot pack tensors of different shapes" in str(err) and "'c'" not in str(err), err
    # a delta of the wrong shape (pre-corrector selection): torch's broadcast
    # error, no variable named
    corrector = CorrectorLossConfig(
        precorrector_optimization=PreCorrectorOptimizationConfig(["a"]),
        regularization=CorrectorRegularizationConfig(["a"], "L2"),
    ).build(NAMES, normalizer=NORM, channel_dim=-3)
    both = StepOutputLoss(loss.step_loss, corrector)
    bad_delta = {"a": torch.zeros(2, 2, 2)}
    err = raises(lambda: both(pred, target, step=0, deltas=bad_delta))
    assert "must match the size" in str(err) and "'a'" not in str(err), err
    # ... but only with pre-corrector optimization on: with the penalty alone,
    # the wrong-shaped delta is penalized and no error is raised at all
    penalty_only = StepOutputLoss(
        loss.step_loss,
        CorrectorLossConfig(regularization=CorrectorRegularizationConfig(["a"], "L2")).build(
            NAMES, normalizer=NORM, channel_dim=-3
        ),
    )
    assert torch.isfinite(penalty_only(pred, target, step=0, deltas=bad_delta).total())
    # a delta for a variable that is not in the prediction: silently ignored
    extra = {"a": torch.zeros(2, 2, 3), "zz": torch.zeros(2, 2, 3)}
    both(pred, target, step=0, deltas=extra).total()
    print(
        "O1 bad inputs: KeyError via TorchScript, unnamed shape errors (a wrong-shaped delta "
        "raises only with pre-corrector optimization on; with the penalty alone it is "
        "accepted), unknown delta ignored"
    )


class AddHalf(torch.nn.Module):
    """A one-parameter network: ``x + w`` (w = 0.5), in normalized space."""

    def __init__(self) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.w


class ShiftA:
    """A correction of fme's corrector interface: ``a -> a + 1`` (delta 1)."""

    def __call__(self, input_data, gen_data, forcing_data, corrector_state):  # noqa: ANN001, ANN204
        return {"a": gen_data["a"] + 1.0}, corrector_state


def fme_train_stepper(corrector_loss, with_corrector: bool):  # noqa: ANN001, ANN201
    """fme's own stepper around a prebuilt module (as fme's tests build one),
    the correction installed the way fme's tests install one."""
    from fme.ace.stepper.single_module import StepperConfig, TrainStepperConfig
    from fme.core.corrector.registry import CorrectionSequence
    from fme.core.registry.module import ModuleSelector
    from fme.core.step import SingleModuleStepConfig, StepSelector
    from fme.core.testing import get_dataset_info, trivial_network_and_loss_normalization

    names = ["a", "b"]
    step = SingleModuleStepConfig(
        builder=ModuleSelector(type="prebuilt", config={"module": AddHalf()}),
        in_names=names,
        out_names=names,
        normalization=trivial_network_and_loss_normalization(names),
    )
    stepper_config = StepperConfig(step=StepSelector(type="single_module", config=asdict(step)))
    train_config = TrainStepperConfig(
        loss=StepLossConfig(type="MSE"), corrector_loss=corrector_loss
    )
    train = train_config.get_train_stepper(stepper_config, get_dataset_info((2, 3)))
    if with_corrector:
        train._stepper._step_obj._corrector = CorrectionSequence([ShiftA()])
    return train


def batch():  # noqa: ANN201
    from fme.ace.data_loading.batch_data import BatchData

    return BatchData.new_for_testing(names=["a", "b"], n_samples=2, n_timesteps=3, img_shape=(2, 3))


def no_corrector_enabled_check() -> None:
    """F4. A corrector loss configured for a step whose corrector modifies
    nothing: accepted at build, inert in training (deltas always empty)."""
    from fme.core.optimization import NullOptimization

    reg = CorrectorLossConfig(regularization=CorrectorRegularizationConfig(["a"], "L2"))
    train = fme_train_stepper(reg, with_corrector=False)  # no error
    plain = fme_train_stepper(None, with_corrector=False)
    data = batch()
    got = train.train_on_batch(data, NullOptimization()).metrics["loss"]
    torch.testing.assert_close(got, plain.train_on_batch(data, NullOptimization()).metrics["loss"])
    print("F4 corrector_enabled: no build-time error; the corrector loss is silently inert")


def prediction_keeps_deltas_on_graph() -> None:
    """F5. ``Stepper.predict`` returns the deltas on the autograd graph."""
    train = fme_train_stepper(None, with_corrector=True)
    data = batch()
    out, _ = train._stepper.predict(data.get_start(["a", "b"], 1), data)
    assert out.step_diagnostics is not None
    assert out.step_diagnostics.delta["a"].requires_grad
    assert out.data["a"].requires_grad  # the outputs too (no no_grad in predict)
    print(
        "F5 plain prediction: Stepper.predict returns deltas (and outputs) with requires_grad=True"
    )


def penalty_rides_loss_step() -> None:
    """F6. With regularization, ``loss_step_{i}`` includes the weighted penalty
    and no corrector_regularization metric is logged."""
    from fme.core.optimization import NullOptimization

    weight = 0.5
    reg = CorrectorLossConfig(regularization=CorrectorRegularizationConfig(["a"], "L2", weight))
    data = batch()
    with_reg = fme_train_stepper(reg, with_corrector=True).train_on_batch(data, NullOptimization())
    without = fme_train_stepper(None, with_corrector=True).train_on_batch(data, NullOptimization())
    # delta of a is 1 everywhere (std 1): L2 penalty 1, over 1 of 1 selected channel
    for i in range(2):
        torch.testing.assert_close(
            with_reg.metrics[f"loss_step_{i}"], without.metrics[f"loss_step_{i}"] + weight * 1.0
        )
    assert not any(k.startswith("corrector_regularization") for k in with_reg.metrics)
    print(
        f"F6 metrics: loss_step_i = main + weight * penalty; metrics are {sorted(with_reg.metrics)}"
    )


def observations() -> None:
    """Not failures of a check: behaviour the analysis mentions."""
    # the penalty's norm is not validated by the config in Python
    reg = CorrectorRegularizationConfig(["a"], "L3")  # type: ignore[arg-type]
    reg.build(NORM, channel_dim=-3)  # accepted; anything but "L1" builds MSE
    # data_mask is per sample ([batch]), and excludes samples from the mean
    loss = StepLossConfig(type="MSE").build(None, NAMES, NORM, channel_dim=-3)
    pred, target = fields(2, 0), fields(2, 1)
    mask = {"a": torch.tensor([True, False])}
    out = loss(pred, target, step=0, data_mask=mask).get_channel_losses()
    first = ((pred["a"][0] - target["a"][0]) ** 2).mean()
    torch.testing.assert_close(out["a"].loss, first)  # renormalized over kept samples
    print("O2 norm='L3' accepted (builds MSE); data_mask is per-sample and renormalizes")


if __name__ == "__main__":
    area_weighted_mse_per_channel()
    matcher_treats_names_as_regex()
    bad_input_errors()
    no_corrector_enabled_check()
    prediction_keeps_deltas_on_graph()
    penalty_rides_loss_step()
    observations()
