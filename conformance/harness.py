"""Small shared pieces of the checks: describing inputs for failure messages
and running a loss on a case."""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from conformance.adapter import (
    Batch,
    LossResult,
    LossSpec,
    LossUnderTest,
    StepperSpec,
    SuiteStep,
    TensorMapping,
)
from conformance.corrector import SuiteStep as SuiteStepModule


def describe(spec: LossSpec, case_id: str, **extra: Any) -> dict[str, Any]:
    """The inputs of a check, for failure messages."""
    out: dict[str, Any] = {"case": case_id, "main": spec.main.loss_type}
    if spec.main.weights:
        out["weights"] = dict(spec.main.weights)
    if spec.main.sqrt_loss_step_decay_constant:
        out["decay"] = spec.main.sqrt_loss_step_decay_constant
    if spec.n_ensemble != 1:
        out["n_ensemble"] = spec.n_ensemble
    if spec.precorrector is None:
        out["precorrector"] = "off"
    else:
        out["exclude"] = list(spec.precorrector.exclude_names_and_prefixes)
    if spec.regularization is None:
        out["regularization"] = "off"
    else:
        out["regularization"] = f"{spec.regularization.loss_type} x {spec.regularization.weight}"
    out["corrected"] = list(spec.corrected_names)
    out.update(extra)
    return out


def run_loss(
    loss: LossUnderTest,
    output: TensorMapping,
    uncorrected: TensorMapping,
    target: TensorMapping,
    step: int,
    data_mask: TensorMapping | None = None,
) -> LossResult:
    """One call; ``data_mask`` is passed only when given (it is a capability)."""
    if data_mask is None:
        return loss(output, uncorrected, target, step)
    return loss(output, uncorrected, target, step, data_mask)


def assert_main_loss(
    result: LossResult,
    spec: LossSpec,
    output: TensorMapping,
    uncorrected: TensorMapping,
    target: TensorMapping,
    step: int,
    *,
    prop: str,
    inputs: dict[str, Any],
    data_mask: TensorMapping | None = None,
) -> None:
    """Every channel of the main loss and its total against the oracle; a
    mismatch says whether the channel was (wrongly) swapped or not."""
    from conformance import oracle
    from conformance.assertions import assert_close

    predict = oracle.main_prediction(spec, output, uncorrected)
    expected = oracle.main_per_channel(spec, predict, target, step, data_mask)
    plain = oracle.main_per_channel(spec, output, target, step, data_mask)
    for k in spec.names:
        swapped = predict[k] is uncorrected.get(k)
        alternatives = {}
        if swapped:
            meaning = f"loss of uncorrected[{k!r}]: corrected, not excluded, so swapped"
            alternatives[f"the loss of output[{k!r}] (not swapped)"] = plain[k]
        elif k in uncorrected and spec.precorrector is not None:
            meaning = f"loss of output[{k!r}]: corrected but excluded, so not swapped"
            other = {**predict, k: uncorrected[k]}
            alternatives[f"the loss of uncorrected[{k!r}] (swapped despite the exclusion)"] = (
                oracle.main_per_channel(spec, other, target, step, data_mask)[k]
            )
        elif k in uncorrected:
            meaning = f"loss of output[{k!r}]: pre-corrector optimization is off"
            other = {**predict, k: uncorrected[k]}
            alternatives[f"the loss of uncorrected[{k!r}] (swapped though the feature is off)"] = (
                oracle.main_per_channel(spec, other, target, step, data_mask)[k]
            )
        else:
            meaning = f"loss of output[{k!r}]: not corrected, so never swapped"
        assert_close(
            result.main_per_channel.get(k),
            expected[k],
            prop=prop,
            quantity=f"main loss of {k!r}",
            inputs=inputs,
            meaning=meaning,
            alternatives=alternatives,
        )
    assert_close(
        result.main_total,
        oracle.main_total(expected),
        prop=prop,
        quantity="main loss total",
        inputs=inputs,
        meaning="the mean over all loss variables",
    )


def assert_masked_penalty(
    result: LossResult,
    spec: LossSpec,
    output: TensorMapping,
    uncorrected: TensorMapping,
    data_mask: TensorMapping,
    *,
    prop: str,
    inputs: dict[str, Any],
) -> None:
    """The penalty under ``data_mask`` against the oracle (masked points
    contribute 0); a mismatch says whether the mask was ignored."""
    from conformance import oracle
    from conformance.assertions import assert_close

    assert_close(
        result.regularization,
        oracle.penalty(spec, output, uncorrected, data_mask),
        prop=prop,
        quantity="regularization",
        inputs=inputs,
        meaning="masked points contribute 0",
        alternatives={
            "the penalty with the mask ignored": oracle.penalty(spec, output, uncorrected)
        },
    )


@dataclasses.dataclass
class ExpectedTraining:
    """The closed-form expectation of one ``train_on_batch`` (float64).

    Attributes:
        main_totals: each step's main loss total.
        penalties: each step's penalty, or None without regularization.
        loss: the optimized loss, ``sum_i (main_i + penalty_i)``.
        gradients: ``d loss / d parameter`` by parameter name of the suite step.
    """

    main_totals: list[torch.Tensor]
    penalties: list[torch.Tensor] | None
    loss: torch.Tensor
    gradients: dict[str, torch.Tensor]


def expected_training(
    spec: StepperSpec,
    suite_step: SuiteStep,
    batch: Batch,
    detach_uncorrected: bool = False,
) -> ExpectedTraining:
    """Roll ``suite_step``'s closed form (``conformance.corrector``) out in float64
    from the batch's initial state, feeding each step's corrected output to
    the next (detached between steps under gradient accumulation), and take
    the loss of every step from the oracle. ``detach_uncorrected`` gives what
    a stepper that (wrongly) detaches ``uncorrected`` would compute."""
    from conformance import oracle
    from conformance.corrector import correct, model

    assert isinstance(suite_step, SuiteStepModule)
    loss_spec = spec.loss
    gain = suite_step.gain.detach().double().requires_grad_(True)
    theta = suite_step.corrector.theta.detach().double().requires_grad_(True)
    corrected = suite_step.corrector.corrected
    state = {k: v.double() for k, v in batch.initial_state.items()}
    mains, penalties, totals = [], [], []
    for i, target in enumerate(batch.targets):
        raw = model(state, gain, suite_step.means, suite_step.stds)
        output, uncorrected = correct(raw, theta, corrected)
        if detach_uncorrected:
            uncorrected = {k: v.detach() for k, v in uncorrected.items()}
        predict = oracle.main_prediction(loss_spec, output, uncorrected)
        main = oracle.main_total(oracle.main_per_channel(loss_spec, predict, target, i))
        mains.append(main)
        total = main
        if loss_spec.regularization is not None:
            pen = oracle.penalty(loss_spec, output, uncorrected)
            penalties.append(pen)
            total = total + pen
        totals.append(total)
        state = {k: v.detach() if spec.use_gradient_accumulation else v for k, v in output.items()}
    loss = torch.stack(totals).sum()
    grads = torch.autograd.grad(loss, [gain, theta], allow_unused=True)
    gradients = {
        "gain": grads[0] if grads[0] is not None else torch.zeros((), dtype=torch.float64),
        "corrector.theta": grads[1]
        if grads[1] is not None
        else torch.zeros((), dtype=torch.float64),
    }
    return ExpectedTraining(
        main_totals=[m.detach() for m in mains],
        penalties=None if loss_spec.regularization is None else [p.detach() for p in penalties],
        loss=loss.detach(),
        gradients=gradients,
    )


def training_setup(
    n_forward_steps: int,
    exclude: Any = None,
    regularization: Any = None,
    use_gradient_accumulation: bool = False,
    corrector_enabled: bool = True,
) -> tuple[StepperSpec, SuiteStepModule, Batch]:
    """A stepper spec on the main case's variables, a fresh suite step, and a batch."""
    from conformance.cases import main_case, training_batch

    case = main_case()
    loss_spec = case.spec(exclude=exclude, regularization=regularization)
    norm = loss_spec.normalizer
    step = SuiteStepModule(case.names, case.corrected, norm.means, norm.stds, corrector_enabled)
    initial, targets = training_batch(n_forward_steps)
    spec = StepperSpec(
        loss=loss_spec,
        n_forward_steps=n_forward_steps,
        use_gradient_accumulation=use_gradient_accumulation,
    )
    return spec, step, Batch(initial_state=initial, targets=targets)


def step_totals(outcome: Any, n_steps: int, with_penalty: bool) -> list[float] | None:
    """Each optimized step's total (main + penalty) from a ``TrainOutcome``:
    the adapter's ``step_totals`` when it reports them, else the contract's
    metrics ``loss_step_{i}`` (+ ``corrector_regularization_step_{i}`` when
    ``with_penalty``); None when neither is there."""
    if outcome.step_totals is not None:
        totals = [float(t) for t in outcome.step_totals]
        return totals if len(totals) == n_steps else None
    m = outcome.metrics
    out = []
    for i in range(n_steps):
        keys = [f"loss_step_{i}"] + ([f"corrector_regularization_step_{i}"] if with_penalty else [])
        if not all(k in m for k in keys):
            return None
        out.append(sum(float(m[k]) for k in keys))
    return out
