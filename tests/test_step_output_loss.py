"""The reference StepOutputLoss on hand-built tensors (issue 2's must-shows)."""

import dataclasses
import warnings

import pytest
import torch
from helpers import NAMES, SHAPE, STDS, build, step_output, target_of, tensors, unfold

from reference.loss import StepOutputLossInputError, UnmatchedExclusionWarning
from reference.loss_config import StepLossConfig
from reference.step_output import StepOutput

TOL = dict(rtol=1e-6, atol=1e-7)


def snapshot(so: StepOutput):
    return {k: v.clone() for k, v in so.output.items()}, {
        k: v.clone() for k, v in so.uncorrected.items()
    }


@pytest.mark.parametrize(
    "exclude, swapped",
    [
        ([], {"ps", "q_1"}),
        (["ps"], {"q_1"}),  # bare name
        (["q_"], {"ps"}),  # level prefix
        (["q_1"], {"ps"}),  # explicit level
        (["q"], {"ps"}),  # bare name covers levels
        (["q_0"], {"ps", "q_1"}),  # explicit level of a non-corrected variable
    ],
)
def test_precorrector_swap_equals_step_loss_on_swapped_prediction(exclude, swapped):
    loss, step_loss = build(pre=exclude)
    so = step_output()
    target = tensors(7)
    before = snapshot(so)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnmatchedExclusionWarning)
        result = loss(so, target, step=3)
    swapped_pred = {k: so.uncorrected[k] if k in swapped else so.output[k] for k in NAMES}
    expected = step_loss(unfold(swapped_pred), target_of(target), 3)
    assert torch.equal(result.main.per_channel, expected.per_channel)
    assert result.regularization is None
    # inputs untouched
    out, unc = before
    assert all(torch.equal(so.output[k], out[k]) for k in out)
    assert all(torch.equal(so.uncorrected[k], unc[k]) for k in unc)
    assert set(so.uncorrected) == {"ps", "q_1"}


def _closed_form_penalty(so: StepOutput, kind: str, weight: float) -> torch.Tensor:
    per_channel = []
    for k, u in so.uncorrected.items():
        d = (so.output[k].double() - u.double()) / STDS[k]
        per_channel.append(d.square().mean() if kind == "MSE" else d.abs().mean())
    return weight * torch.stack(per_channel).mean()


@pytest.mark.parametrize("kind", ["MSE", "L1"])
@pytest.mark.parametrize("weight", [0.1, 1.0, 3.5])
def test_penalty_closed_form(kind, weight):
    loss, _ = build(reg_type=kind, weight=weight)
    so = step_output()
    result = loss(so, tensors(7), step=0)
    assert result.regularization is not None
    torch.testing.assert_close(
        result.regularization.double(), _closed_form_penalty(so, kind, weight), **TOL
    )


def test_penalty_is_corrected_channels_only_not_diluted():
    # 1 of 4 channels corrected: exactly 4x the all-channel mean.
    loss, _ = build(reg_type="MSE")
    so = step_output(corrected=("t",))
    result = loss(so, tensors(7), step=0)
    d = (so.output["t"] - so.uncorrected["t"]) / STDS["t"]
    diluted = (d.square().mean() + 0 + 0 + 0) / 4
    torch.testing.assert_close(result.regularization, 4 * diluted, **TOL)


def test_penalty_has_no_step_decay_but_main_loss_decays():
    loss, _ = build(reg_type="MSE", step_cfg=StepLossConfig(sqrt_loss_step_decay_constant=1.0))
    so, target = step_output(), tensors(7)
    r0, r5 = loss(so, target, step=0), loss(so, target, step=5)
    assert r0.regularization is not None and r5.regularization is not None
    assert torch.equal(r0.regularization, r5.regularization)
    torch.testing.assert_close(r5.main.total(), r0.main.total() * (1 + 5.0) ** -0.5, **TOL)


@pytest.mark.parametrize("pre", [None, []])
@pytest.mark.parametrize("reg", [None, "MSE"])
def test_total_decomposition_and_needs_uncorrected_grad(pre, reg):
    loss, _ = build(pre=pre, reg_type=reg)
    assert loss.needs_uncorrected_grad == (pre is not None or reg is not None)
    result = loss(step_output(), tensors(7), step=2)
    if reg is None:
        assert result.regularization is None
        assert torch.equal(result.total(), result.main.total())
    else:
        assert result.regularization is not None and result.regularization > 0
        assert torch.equal(result.total(), result.main.total() + result.regularization)


def test_pass_through_is_bitwise_step_loss():
    loss, step_loss = build(
        step_cfg=StepLossConfig(sqrt_loss_step_decay_constant=0.3, weights={"t": 2.0})
    )
    so, target = step_output(), tensors(7)
    result = loss(so, target, step=4)
    expected = step_loss(unfold(dict(so.output)), target_of(target), 4)
    assert torch.equal(result.main.per_channel, expected.per_channel)
    assert torch.equal(result.total(), expected.total())


def test_main_loss_closed_form_mse_with_weights_and_decay():
    loss, _ = build(step_cfg=StepLossConfig(sqrt_loss_step_decay_constant=0.5, weights={"t": 2.0}))
    so, target = step_output(corrected=()), tensors(7)
    result = loss(so, target, step=2)
    w = {"ps": 1.0, "q_0": 1.0, "q_1": 1.0, "t": 2.0}
    expected = (
        torch.stack(
            [(((so.output[k] - target[k]) * w[k] / STDS[k]) ** 2).mean() for k in NAMES]
        ).mean()
        * (1 + 0.5 * 2) ** -0.5
    )
    torch.testing.assert_close(result.total(), expected, **TOL)


@pytest.mark.parametrize("pre, reg", [([], None), (None, "MSE"), ([], "L1")])
def test_gradient_reaches_correction_parameter(pre, reg):
    """A parameter the correction depends on gets a non-zero gradient."""
    loss, _ = build(pre=pre, reg_type=reg)
    theta = torch.tensor(0.7, requires_grad=True)
    base = tensors(0)
    raw = {k: v.clone().requires_grad_(True) for k, v in base.items()}
    # corrector: ps <- ps + theta * (ps - 100) ; output depends on theta, uncorrected on raw
    out = dict(raw)
    out["ps"] = raw["ps"] + theta * (raw["ps"] - 100.0)
    so = StepOutput(output=out, uncorrected={"ps": raw["ps"]})
    loss(so, tensors(7), step=0).total().backward()
    assert raw["ps"].grad is not None and raw["ps"].grad.abs().sum() > 0
    if reg is not None:
        assert theta.grad is not None and theta.grad.abs() > 0


def test_ensemble_folding():
    n_ens = 2
    loss, step_loss = build(reg_type="MSE", n_ensemble=n_ens)
    so = step_output(shape=(4, 3, 4))  # 2 samples x 2 members
    target = tensors(7, shape=(2, 3, 4))
    result = loss(so, target, step=0)
    expected = step_loss(unfold(dict(so.output), n_ens), target_of(target), 0)
    assert torch.equal(result.main.per_channel, expected.per_channel)
    # member-by-member closed form of the main loss
    direct = torch.stack(
        [
            ((so.output[k].reshape(2, 2, 3, 4) - target[k][:, None]) / STDS[k]).square().mean()
            for k in NAMES
        ]
    ).mean()
    torch.testing.assert_close(result.main.total(), direct, **TOL)
    torch.testing.assert_close(
        result.regularization, _closed_form_penalty(so, "MSE", 1.0).float(), **TOL
    )


def test_unmatched_exclusions_warn_once():
    loss, _ = build(pre=["ps", "nope", "q_7"])
    so, target = step_output(), tensors(7)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for step in range(3):
            loss(so, target, step)
    messages = [str(w.message) for w in caught if issubclass(w.category, UnmatchedExclusionWarning)]
    assert len(messages) == 1
    assert "['nope', 'q_7']" in messages[0]


def test_no_warning_when_all_entries_match():
    loss, _ = build(pre=["ps", "q_"])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        loss(step_output(), tensors(7), 0)


def test_empty_uncorrected_with_features_on():
    """Documented: nothing corrected -> main loss unswapped, penalty exactly 0."""
    loss, step_loss = build(pre=[], reg_type="MSE")
    so, target = step_output(corrected=()), tensors(7)
    result = loss(so, target, 0)
    assert result.regularization is not None and float(result.regularization) == 0.0
    assert torch.equal(
        result.main.per_channel,
        step_loss(unfold(dict(so.output)), target_of(target), 0).per_channel,
    )


# ---------------------------------------------------------------- bad input


def _call(loss, so, target):
    return loss(so, target, 0)


def test_missing_target_key_names_variable():
    loss, _ = build(reg_type="MSE")
    target = tensors(7)
    del target["q_1"]
    with pytest.raises(StepOutputLossInputError, match="target_step has no 'q_1'"):
        _call(loss, step_output(), target)


def test_missing_output_key_names_variable():
    loss, _ = build()
    so = step_output(corrected=())
    out = dict(so.output)
    del out["t"]
    with pytest.raises(StepOutputLossInputError, match="output has no 't'"):
        _call(loss, StepOutput(out), tensors(7))


def test_uncorrected_key_not_in_output():
    loss, _ = build(pre=[])
    so = step_output()
    bad = StepOutput(so.output, {**so.uncorrected, "zz": torch.zeros(SHAPE)})
    with pytest.raises(StepOutputLossInputError, match="'zz'"):
        _call(loss, bad, tensors(7))


def test_uncorrected_shape_mismatch():
    loss, _ = build(reg_type="MSE")
    so = step_output()
    bad = StepOutput(so.output, {"ps": torch.zeros(2, 3, 5)})
    with pytest.raises(StepOutputLossInputError, match=r"uncorrected\['ps'\] has shape"):
        _call(loss, bad, tensors(7))


def test_target_shape_mismatch():
    loss, _ = build()
    target = tensors(7)
    target["t"] = target["t"][:, :2]
    with pytest.raises(StepOutputLossInputError, match=r"target_step\['t'\] has shape"):
        _call(loss, step_output(), target)


def test_batch_not_divisible_by_n_ensemble():
    loss, _ = build(n_ensemble=2)
    with pytest.raises(StepOutputLossInputError, match="not divisible by n_ensemble=2"):
        _call(loss, step_output(shape=(3, 3, 4)), tensors(7, shape=(1, 3, 4)))


@pytest.mark.parametrize("pre, reg", [([], None), (None, "MSE")])
def test_nan_in_uncorrected_names_variable(pre, reg):
    loss, _ = build(pre=pre, reg_type=reg)
    so = step_output()
    unc = dict(so.uncorrected)
    unc["q_1"] = unc["q_1"].clone()
    unc["q_1"][0, 0, 0] = float("nan")
    with pytest.raises(StepOutputLossInputError, match=r"uncorrected\['q_1'\] contains NaN"):
        _call(loss, dataclasses.replace(so, uncorrected=unc), tensors(7))


def test_corrected_variable_outside_loss_is_an_error():
    loss, _ = build(reg_type="MSE")
    so = step_output()
    out = {**so.output, "diag": torch.zeros(SHAPE)}
    bad = StepOutput(out, {**so.uncorrected, "diag": torch.ones(SHAPE)})
    with pytest.raises(StepOutputLossInputError, match="'diag', which is not a loss variable"):
        _call(loss, bad, tensors(7))


@pytest.mark.parametrize("n_ensemble", [1, 2])
def test_per_sample_mask_stays_with_its_sample(n_ensemble):
    # a (n_batch, *spatial) mask that differs between samples: sample 0 all
    # valid, sample 1 all masked, so only sample 0's points count
    loss, _ = build(reg_type="MSE", n_ensemble=n_ensemble)
    so = step_output(shape=(2 * n_ensemble, 3, 4))
    target = tensors(7, shape=(2, 3, 4))
    mask = {k: torch.zeros((2, 3, 4), dtype=torch.bool) for k in NAMES}
    for m in mask.values():
        m[0] = True
    result = loss(so, target, step=0, data_mask=mask)
    first = slice(0, n_ensemble)  # the members of sample 0
    for k in NAMES:
        d = (so.output[k][first] - target[k][0]) / STDS[k]
        expected = d.square().sum() / (2 * n_ensemble * 3 * 4)
        torch.testing.assert_close(result.main.channel_losses()[k], expected, **TOL)
    assert result.regularization is not None
    reg = torch.stack(
        [
            ((so.output[k][first] - so.uncorrected[k][first]) / STDS[k]).square().sum()
            / (2 * n_ensemble * 3 * 4)
            for k in so.uncorrected
        ]
    ).mean()
    torch.testing.assert_close(result.regularization, reg, **TOL)
