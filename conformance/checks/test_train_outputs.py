"""Training outputs beyond the per-step metrics: the values plain prediction
returns, the per-channel main losses, the epoch-aggregated
``corrector_regularization``, the first-step warning when a corrector ran
but ``uncorrected`` came back empty, and training with ``n_ensemble > 1``.

Expected values come from the suite step's closed form
(:mod:`conformance.corrector`) rolled out in float64 (:func:`closed_form`)."""

from __future__ import annotations

import dataclasses
import warnings
from typing import Any

import torch

from conformance import oracle
from conformance.adapter import (
    Batch,
    Capability,
    PredictedStep,
    RegularizationSpec,
    StepOutputLossAdapter,
    StepperSpec,
)
from conformance.assertions import assert_close, assert_no_error, fail
from conformance.cases import main_case
from conformance.corrector import SuiteStep, correct, model
from conformance.harness import describe, step_totals, training_setup
from conformance.plugin import requires
from conformance.requirements import enforces

PROP = "training outputs"
REG = RegularizationSpec("MSE", weight=0.7)
N_STEPS = 2


@dataclasses.dataclass
class ClosedForm:
    """One batch's rollout in float64: per step the corrected ``outputs`` and
    ``uncorrected`` values (physical units, ``(n_batch * n_ensemble, *spatial)``),
    the main loss per channel and in total, the penalty; the optimized loss
    and its gradients by parameter name."""

    outputs: list[dict[str, torch.Tensor]]
    uncorrected: list[dict[str, torch.Tensor]]
    per_channel: list[dict[str, torch.Tensor]]
    mains: list[torch.Tensor]
    penalties: list[torch.Tensor] | None
    loss: torch.Tensor
    gradients: dict[str, torch.Tensor]


def closed_form(spec: StepperSpec, step: SuiteStep, batch: Batch) -> ClosedForm:
    """The closed form of one ``train_on_batch`` (no gradient accumulation):
    the initial state repeated ``n_ensemble`` times (members adjacent), each
    step's corrected output fed to the next."""
    loss_spec = spec.loss
    m = loss_spec.n_ensemble
    gain = step.gain.detach().double().requires_grad_(True)
    theta = step.corrector.theta.detach().double().requires_grad_(True)
    state = {k: v.double().repeat_interleave(m, dim=0) for k, v in batch.initial_state.items()}
    outputs, uncorrected, per_channel, mains, penalties, totals = [], [], [], [], [], []
    for i, target in enumerate(batch.targets):
        raw = model(state, gain, step.means, step.stds)
        output, unc = correct(raw, theta, step.corrector.corrected)
        predict = oracle.main_prediction(loss_spec, output, unc)
        channels = oracle.main_per_channel(loss_spec, predict, target, i)
        main = oracle.main_total(channels)
        total = main
        if loss_spec.regularization is not None:
            penalty = oracle.penalty(loss_spec, output, unc)
            penalties.append(penalty.detach())
            total = total + penalty
        outputs.append({k: v.detach() for k, v in output.items()})
        uncorrected.append({k: v.detach() for k, v in unc.items()})
        per_channel.append({k: v.detach() for k, v in channels.items()})
        mains.append(main.detach())
        totals.append(total)
        state = output
    loss = torch.stack(totals).sum()
    g_gain, g_theta = torch.autograd.grad(loss, [gain, theta], allow_unused=True)
    zero = torch.zeros((), dtype=torch.float64)
    return ClosedForm(
        outputs=outputs,
        uncorrected=uncorrected,
        per_channel=per_channel,
        mains=mains,
        penalties=None if loss_spec.regularization is None else penalties,
        loss=loss.detach(),
        gradients={
            "gain": zero if g_gain is None else g_gain,
            "corrector.theta": zero if g_theta is None else g_theta,
        },
    )


def _metric(metrics: Any, name: str, prop: str, inputs: dict) -> torch.Tensor:
    if name not in metrics:
        fail(prop, f"metric {name} missing", inputs, name, sorted(metrics))
    return torch.tensor(float(metrics[name]))


# ---------------------------------------------------------------- prediction


@enforces("PREDICT-1")
@requires(Capability.STEPPER)
def check_predict_values(adapter: StepOutputLossAdapter) -> None:
    """``predict`` returns each step's corrected output (the corrected rollout:
    each step starts from the previous corrected output) and the pre-correction
    values of the corrected variables, with both features configured."""
    spec, step, batch = training_setup(N_STEPS, (), REG)
    inputs = describe(spec.loss, "prediction-2-steps")
    expected = closed_form(spec, step, batch)
    steps = adapter.build_stepper(spec, step).predict(batch)
    if len(steps) != N_STEPS:
        fail(PROP, "predict must return one (output, uncorrected) per step", inputs, 2, len(steps))
    for i, predicted in enumerate(steps):
        if not isinstance(predicted, PredictedStep):
            pair_output, pair_uncorrected = predicted
            predicted = PredictedStep(pair_output, uncorrected=pair_uncorrected)
        output = predicted.output
        kind, pre = predicted.pre_correction
        want = expected.uncorrected[i]
        if kind == "deltas":  # an implementation that carries corrections
            want = {k: expected.outputs[i][k] - v for k, v in want.items()}
        for k in spec.loss.names:
            assert_close(
                None if k not in output else output[k].detach(),
                expected.outputs[i][k],
                prop=PROP,
                quantity=f"step {i} predicted output[{k!r}]",
                inputs=inputs,
                meaning="the corrected rollout",
                alternatives={"the uncorrected value": expected.uncorrected[i][k]}
                if k in expected.uncorrected[i]
                else None,
                rtol=1e-4,
                atol=1e-4 * spec.loss.normalizer.stds[k],
            )
        if sorted(pre) != sorted(want):
            fail(
                PROP,
                f"step {i}: {kind} must hold exactly the corrected variables",
                inputs,
                sorted(want),
                sorted(pre),
            )
        for k, v in pre.items():
            assert_close(
                v.detach(),
                want[k],
                prop=PROP,
                quantity=f"step {i} predicted {kind}[{k!r}]",
                inputs=inputs,
                meaning=f"the {kind} of the corrected rollout",
                rtol=1e-4,
                atol=1e-4 * spec.loss.normalizer.stds[k],
            )


# ---------------------------------------------------------------- metrics


@enforces("METRICS-2")
@requires(Capability.STEPPER)
def check_per_channel_metrics(adapter: StepOutputLossAdapter) -> None:
    """Per-channel metrics ``loss/<name>``, when reported, are the main
    loss's per-channel values (swapped, weighted, step-decayed) over the
    batch's steps: their sum or their mean (both readings pass)."""
    spec, step, batch = training_setup(N_STEPS, (), REG)
    inputs = describe(spec.loss, "training-2-steps", n_forward_steps=N_STEPS)
    expected = closed_form(spec, step, batch)
    metrics = adapter.build_stepper(spec, step).train_on_batch(batch).metrics
    for k in spec.loss.names:
        name = f"loss/{k}"
        if name not in metrics:
            continue
        per_step = torch.stack([c[k] for c in expected.per_channel])
        got = torch.tensor(float(metrics[name]))
        total, mean = per_step.sum(), per_step.mean()
        if torch.allclose(got.double(), mean, rtol=1e-4, atol=1e-6):
            continue
        assert_close(
            got,
            total,
            prop=PROP,
            quantity=f"metric {name}",
            inputs=inputs,
            meaning=f"the sum over steps of main loss channel {k!r} (or the mean, {float(mean):.6g})",
            alternatives={
                "the last step's value only": per_step[-1],
                "the channel's loss on the corrected output (not swapped)": _unswapped(
                    spec, expected, k
                ),
            },
            rtol=1e-4,
        )


def _unswapped(spec: StepperSpec, expected: ClosedForm, k: str) -> torch.Tensor:
    loss_spec = dataclasses.replace(spec.loss, precorrector=None)
    values = [
        oracle.main_per_channel(loss_spec, out, tgt, i)[k]
        for i, (out, tgt) in enumerate(zip(expected.outputs, _targets(spec)))
    ]
    return torch.stack(values).sum()


def _targets(spec: StepperSpec) -> list[dict[str, torch.Tensor]]:
    from conformance.cases import training_batch

    return training_batch(spec.n_forward_steps)[1]


@enforces("METRICS-3")
@requires(Capability.STEPPER, Capability.EPOCH_AGGREGATION)
def check_epoch_corrector_regularization(adapter: StepOutputLossAdapter) -> None:
    """Two batches of 2 and 1 samples: the epoch's ``corrector_regularization``
    is their batch values' mean weighted by samples (2:1), from the batch
    values the implementation itself reported."""
    spec, step, batch = training_setup(N_STEPS, (), REG)
    small = Batch(
        initial_state={
            k: v[1:] + 0.2 * spec.loss.normalizer.stds[k] for k, v in batch.initial_state.items()
        },
        targets=[{k: v[1:] for k, v in t.items()} for t in batch.targets],
    )
    inputs = describe(spec.loss, "epoch of 2 batches", samples=[2, 1])
    stepper = adapter.build_stepper(spec, step)
    epoch = assert_no_error(
        lambda: stepper.train_epoch([batch, small]),  # type: ignore[attr-defined]
        prop=PROP,
        what="train_epoch",
        inputs=inputs,
    )
    name = "corrector_regularization"
    values = [_metric(b.metrics, name, PROP, inputs) for b in epoch.batches]
    if len(values) != 2:
        fail(PROP, "train_epoch must report each batch's outcome", inputs, 2, len(values))
    weighted = (2 * values[0] + values[1]) / 3
    assert_close(
        _metric(epoch.metrics, name, PROP, inputs),
        weighted,
        prop=PROP,
        quantity=f"epoch metric {name}",
        inputs=inputs,
        meaning="(2 x batch 1 + 1 x batch 2) / 3: weighted by samples",
        alternatives={
            "the unweighted mean over batches": (values[0] + values[1]) / 2,
            "the sum over batches": values[0] + values[1],
            "the last batch's value": values[1],
        },
        rtol=1e-5,
    )
    if abs(float(values[0] - values[1])) < 1e-6 * abs(float(values[0])):
        fail(PROP, "the two batches' penalties must differ for this check", inputs)


# ---------------------------------------------------------------- warnings


@enforces("WARN-3")
@requires(Capability.STEPPER, Capability.EMPTY_UNCORRECTED_WARNING)
def check_empty_uncorrected_warns_once(adapter: StepOutputLossAdapter) -> None:
    """A step whose corrector is enabled but modifies nothing (``uncorrected``
    always empty), both features configured: two batches of 2 steps train,
    and exactly one ``UserWarning`` mentioning ``uncorrected`` comes, in the
    first batch. The same training with a corrector that modifies variables
    gives no such warning (so the warning is about the empty case).

    Warnings are recorded with the ``"always"`` filter: "once" is the
    stepper's own doing, not Python's de-duplication of identical messages
    (which pytest, logging capture and ``-W always`` all undo)."""
    case = main_case()
    loss_spec = case.spec(exclude=(), regularization=REG)
    norm = loss_spec.normalizer
    step = SuiteStep(case.names, (), norm.means, norm.stds, corrector_enabled=True)
    _, _, batch = training_setup(N_STEPS)
    spec = StepperSpec(loss=loss_spec, n_forward_steps=N_STEPS)
    inputs = describe(loss_spec, "training, corrector modifies nothing", batches=2)
    stepper = adapter.build_stepper(spec, step)
    counts = []
    for _ in range(2):
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            assert_no_error(
                lambda: stepper.train_on_batch(batch),
                prop=PROP,
                what="train_on_batch with an empty uncorrected",
                inputs=inputs,
            )
        counts.append(
            sum(
                1
                for w in caught
                if issubclass(w.category, UserWarning) and "uncorrected" in str(w.message)
            )
        )
    if counts != [1, 0]:
        fail(
            PROP,
            "an empty uncorrected from an enabled corrector must warn once, on the first step",
            inputs,
            "[1, 0] warnings mentioning 'uncorrected' (batch 1, batch 2)",
            counts,
        )
    normal_spec, normal_step, normal_batch = training_setup(N_STEPS, (), REG)
    normal = adapter.build_stepper(normal_spec, normal_step)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            normal.train_on_batch(normal_batch)
    spurious = [
        str(w.message)
        for w in caught
        if issubclass(w.category, UserWarning) and "uncorrected" in str(w.message)
    ]
    if spurious:
        fail(
            PROP,
            "a corrector that modifies variables must not get the empty-uncorrected warning",
            describe(normal_spec.loss, "training, corrector modifies 4 variables", batches=2),
            "no warning mentioning 'uncorrected'",
            spurious,
        )


# ---------------------------------------------------------------- ensembles


@enforces("TRAIN-ENS-1")
@requires(Capability.STEPPER, Capability.TRAIN_ENSEMBLE)
def check_train_ensemble(adapter: StepOutputLossAdapter) -> None:
    """``n_ensemble = 2`` in training, both features: per-step metrics and
    the gradients equal the closed form with each sample's initial state
    repeated for its 2 members (members adjacent)."""
    spec, step, batch = training_setup(N_STEPS, (), REG)
    spec = dataclasses.replace(spec, loss=dataclasses.replace(spec.loss, n_ensemble=2))
    # samples that differ a lot, so a wrong member layout shows
    batch = Batch(
        initial_state={
            k: v + torch.tensor([[[0.0]], [[1.5]]]) * spec.loss.normalizer.stds[k]
            for k, v in batch.initial_state.items()
        },
        targets=batch.targets,
    )
    inputs = describe(spec.loss, "training-2-steps", n_ensemble=2)
    expected = closed_form(spec, step, batch)
    outcome = assert_no_error(
        lambda: adapter.build_stepper(spec, step).train_on_batch(batch),
        prop=PROP,
        what="train_on_batch with n_ensemble=2",
        inputs=inputs,
    )
    assert expected.penalties is not None
    # each step's optimized total in the contract's terms (metric names are
    # test_train_metrics.py's business: one check, one property)
    totals = step_totals(outcome, N_STEPS, with_penalty=True)
    if totals is None:
        fail(PROP, "no per-step totals (TrainOutcome.step_totals)", inputs, N_STEPS, None)
    for i in range(N_STEPS):
        assert_close(
            torch.tensor(totals[i]),
            expected.mains[i] + expected.penalties[i],
            prop=PROP,
            quantity=f"total of step {i}",
            inputs=inputs,
            meaning="closed form (main + penalty), 2 members per sample",
            rtol=1e-4,
        )
    for name, value in expected.gradients.items():
        got = outcome.gradients.get(name)
        assert_close(
            None if got is None else got.detach(),
            value,
            prop=PROP,
            quantity=f"gradient of {name}",
            inputs=inputs,
            meaning="d(sum of the steps' totals)/d parameter",
            rtol=1e-4,
            atol=1e-5 * max(1.0, float(value.abs().max())),
        )
