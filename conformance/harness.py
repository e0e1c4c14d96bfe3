"""Small shared pieces of the checks: describing inputs for failure messages
and running a loss on a case."""

from __future__ import annotations

from typing import Any

from conformance.adapter import LossResult, LossSpec, LossUnderTest, TensorMapping


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
