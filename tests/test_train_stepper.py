"""The train stepper with the corrector features, against losses written by hand."""

import copy
import warnings

import pytest
import torch
from train_helpers import (
    CORRECTED,
    OUT,
    SpyStep,
    batch,
    config,
    grads,
    hand_rollout,
    hand_total,
    make_step,
    normalizer,
    stepper,
)

from reference.corrector.loss import build_step_output_loss
from reference.loss import StepOutputLoss, UnmatchedExclusionWarning, unfold_ensemble
from reference.loss_config import StepLossConfig
from reference.optimization import NonFiniteLossError
from reference.step import StepABC
from reference.step_output import StepOutput, is_detached
from reference.stepper import AttachedGraphWarning, EmptyUncorrectedWarning, TrainStepperConfig
from reference.trainer import Trainer

TOL = dict(rtol=1e-5, atol=1e-6)
N_STEPS = 3


def _train(cfg, data, step=None):
    """Train once; return (output, hand-loss module copy taken before the update, step)."""
    step = step if step is not None else make_step()
    frozen = copy.deepcopy(step.modules[0])
    out = stepper(cfg, step).train_on_batch(data)
    return out, frozen, step


def _hand_grads(frozen, total):
    return [g.clone() for g in torch.autograd.grad(total, list(frozen.parameters()))]


@pytest.mark.parametrize(
    "exclude, swapped",
    [
        ([], CORRECTED),
        (["ps"], ["q_0", "q_1"]),  # bare name
        (["q_"], ["ps"]),  # level prefix
        (["q_1"], ["ps", "q_0"]),  # explicit level
        (["q"], ["ps"]),  # bare name covers the levels
    ],
)
def test_precorrector_loss_equals_the_loss_against_pre_correction_values(exclude, swapped):
    data = batch(0, n_time=N_STEPS + 1)
    out, frozen, step = _train(config(pre=exclude), data)
    hand = hand_rollout(frozen, data, N_STEPS, swapped=swapped)
    for i, h in enumerate(hand):
        torch.testing.assert_close(out.metrics[f"loss_step_{i}"], h.main.detach(), **TOL)
    total = hand_total(hand)
    torch.testing.assert_close(out.metrics["loss"], total.detach(), **TOL)
    for g, e in zip(grads(step), _hand_grads(frozen, total)):
        torch.testing.assert_close(g, e, **TOL)
    # the swap really mattered: the corrected-target loss differs
    plain = hand_total(hand_rollout(frozen, data, N_STEPS))
    assert not torch.allclose(plain, total)
    assert "corrector_regularization" not in out.metrics


def test_unmatched_exclusion_warns_exactly_once_over_a_run():
    st = stepper(config(pre=["q_2", "q_0"]))  # q_2 is never corrected
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for seed in range(3):
            st.train_on_batch(batch(seed, n_time=N_STEPS + 1))
    unmatched = [w for w in caught if issubclass(w.category, UnmatchedExclusionWarning)]
    assert len(unmatched) == 1, [str(w.message) for w in caught]
    assert "entries ['q_2'] match no corrector-modified variable" in str(unmatched[0].message)


@pytest.mark.parametrize("reg_type", ["MSE", "L1"])
@pytest.mark.parametrize("weight", [0.25, 2.0])
def test_regularization_adds_the_analytic_penalty(reg_type, weight):
    data = batch(1, n_time=N_STEPS + 1)
    cfg = config(reg_weight=weight, reg_type=reg_type, decay=1.0)
    out, frozen, step = _train(cfg, data)
    hand = hand_rollout(frozen, data, N_STEPS, reg_weight=weight, reg_type=reg_type, decay=1.0)
    for i, h in enumerate(hand):
        torch.testing.assert_close(out.metrics[f"loss_step_{i}"], h.main.detach(), **TOL)
        assert h.regularization is not None
        torch.testing.assert_close(
            out.metrics[f"corrector_regularization_step_{i}"], h.regularization.detach(), **TOL
        )
    reg_sum = sum(h.regularization.detach() for h in hand if h.regularization is not None)
    torch.testing.assert_close(out.metrics["corrector_regularization"], reg_sum, **TOL)
    total = hand_total(hand)
    torch.testing.assert_close(out.metrics["loss"], total.detach(), **TOL)
    # loss decomposes into the main per-step losses plus the penalty sum
    main_sum = sum(out.metrics[f"loss_step_{i}"] for i in range(N_STEPS))
    torch.testing.assert_close(
        out.metrics["loss"], main_sum + out.metrics["corrector_regularization"], **TOL
    )
    for g, e in zip(grads(step), _hand_grads(frozen, total)):
        torch.testing.assert_close(g, e, **TOL)


def test_both_features_compose_in_one_run():
    data = batch(2, n_time=N_STEPS + 1)
    out, frozen, step = _train(config(pre=["q_1"], reg_weight=0.5), data)
    hand = hand_rollout(frozen, data, N_STEPS, swapped=["ps", "q_0"], reg_weight=0.5)
    total = hand_total(hand)
    torch.testing.assert_close(out.metrics["loss"], total.detach(), **TOL)
    for i, h in enumerate(hand):
        torch.testing.assert_close(out.metrics[f"loss_step_{i}"], h.main.detach(), **TOL)
        assert h.regularization is not None
        torch.testing.assert_close(
            out.metrics[f"corrector_regularization_step_{i}"], h.regularization.detach(), **TOL
        )
    for g, e in zip(grads(step), _hand_grads(frozen, total)):
        torch.testing.assert_close(g, e, **TOL)


def test_per_channel_losses_come_from_main():
    data = batch(3, n_time=N_STEPS + 1)
    out, frozen, _ = _train(config(pre=[], reg_weight=1.0), data)
    hand = hand_rollout(frozen, data, N_STEPS, swapped=CORRECTED, reg_weight=1.0)
    for n in OUT:
        expected = sum(h.main_per_channel[n].detach() for h in hand)
        torch.testing.assert_close(out.metrics[f"loss/{n}"], expected, **TOL)


@pytest.mark.parametrize(
    "pre, reg, detach", [(None, None, True), ([], None, False), (None, 1.0, False)]
)
def test_detach_uncorrected_is_not_needs_uncorrected_grad(pre, reg, detach):
    spy = SpyStep(make_step())
    st = stepper(config(pre=pre, reg_weight=reg), spy)
    assert st.loss.needs_uncorrected_grad is (not detach)
    st.train_on_batch(batch(0, n_time=N_STEPS + 1))
    assert spy.flags == [detach] * N_STEPS
    assert all(is_detached(o.uncorrected) is detach for o in spy.outputs)


class _AlwaysDetachStep(SpyStep):
    """A buggy step that ignores ``detach_uncorrected=False``."""

    def step(self, input, detach_uncorrected=True):
        return super().step(input, detach_uncorrected=True)


@pytest.mark.parametrize("pre, reg", [([], None), (None, 1.0), (["ps"], 0.5)])
def test_gradients_flow_through_the_correction_when_a_feature_is_on(pre, reg):
    data = batch(4, n_time=N_STEPS + 1)
    _, _, good = _train(config(pre=pre, reg_weight=reg), data)
    assert all(g.abs().sum() > 0 for g in grads(good))
    # the same run with uncorrected detached: the losses agree, the gradients do not
    with pytest.warns(AttachedGraphWarning, match="detached although"):
        _, _, bad = _train(config(pre=pre, reg_weight=reg), data, _AlwaysDetachStep(make_step()))
    assert any(not torch.allclose(a, b) for a, b in zip(grads(good), grads(bad)))


def test_plain_prediction_returns_detached_uncorrected():
    st = stepper(config(pre=[], reg_weight=1.0))
    outputs = st.predict(batch(0, n_time=3))
    assert len(outputs) == 2
    for so in outputs:
        assert list(so.uncorrected) == CORRECTED
        assert is_detached(so.uncorrected)
        assert not is_detached(so.output)


def test_rollout_and_predictions_use_corrected_values():
    spy = SpyStep(make_step())
    st = stepper(config(pre=[]), spy)
    out = st.train_on_batch(batch(5, n_time=N_STEPS + 1))
    for i in range(1, N_STEPS):
        prev = spy.outputs[i - 1]
        for n in OUT:
            assert torch.equal(spy.inputs[i][n], prev.output[n]), (i, n)
        assert not torch.equal(spy.inputs[i]["ps"], prev.uncorrected["ps"])
    for i, so in enumerate(out.step_outputs):
        for n in OUT:
            assert torch.equal(out.gen_data[n][:, i], spy.outputs[i].output[n].detach())
            assert torch.equal(so.output[n], spy.outputs[i].output[n].detach())
        assert bool((out.gen_data["q_0"][:, i] >= 0).all())


def test_one_loss_call_and_one_accumulation_per_step():
    st = stepper(config(pre=[], reg_weight=1.0))
    assert isinstance(st.loss, StepOutputLoss)
    calls, accumulated = [], []
    loss = st.loss

    def spy_loss(*args, **kwargs):
        result = loss(*args, **kwargs)
        calls.append(result)
        return result

    real_accumulate = st.optimization.accumulate_loss

    def spy_accumulate(value):
        accumulated.append(value)
        real_accumulate(value)

    st.loss = spy_loss  # type: ignore[assignment]
    st.optimization.accumulate_loss = spy_accumulate  # type: ignore[method-assign]
    st.train_on_batch(batch(0, n_time=N_STEPS + 1))
    assert len(calls) == len(accumulated) == N_STEPS
    for result, value in zip(calls, accumulated):
        assert torch.equal(value, result.total())


def test_corrector_loss_without_a_corrector_is_a_build_error():
    for cfg in (config(pre=[]), config(reg_weight=1.0)):
        with pytest.raises(ValueError, match="corrector_enabled is False") as err:
            stepper(cfg, make_step(with_corrector=False))
        assert "set corrector_loss to null" in str(err.value)
    stepper(config(), make_step(with_corrector=False))  # fine without corrector_loss


class _EmptyCorrectorStep(SpyStep):
    """Claims a corrector but never reports uncorrected values."""

    def step(self, input, detach_uncorrected=True):
        return StepOutput(output=super().step(input, detach_uncorrected).output)


def test_empty_uncorrected_warns_once_over_a_run():
    st = stepper(config(reg_weight=1.0), _EmptyCorrectorStep(make_step()))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for seed in range(3):
            out = st.train_on_batch(batch(seed, n_time=N_STEPS + 1))
    empty = [w for w in caught if issubclass(w.category, EmptyUncorrectedWarning)]
    assert len(empty) == 1
    assert "corrector_loss has no effect" in str(empty[0].message)
    assert out.metrics["corrector_regularization"] == 0


def test_pass_through_is_bitwise_the_plain_step_loss_path():
    """corrector_loss None: the losses and gradients of a stepper written
    before the feature existed (StepLoss on the corrected output)."""
    data = batch(6, n_time=N_STEPS + 1)
    step_new, step_old = make_step(), make_step()
    new = stepper(config(), step_new).train_on_batch(data)

    # the pre-feature train loop: StepLoss on the corrected output, summed
    step_loss = StepLossConfig().build(OUT, normalizer())
    state = {n: data[n][:, 0] for n in OUT}
    total = None
    for i in range(N_STEPS):
        so = step_old.step({**state, "f": data["f"][:, i]})
        target = {n: data[n][:, i + 1].unsqueeze(1) for n in OUT}
        loss = step_loss(unfold_ensemble(so.output, 1), target, i)
        assert torch.equal(new.metrics[f"loss_step_{i}"], loss.total().detach())
        for n, v in loss.channel_losses().items():
            assert n in OUT and v.ndim == 0
        total = loss.total() if total is None else total + loss.total()
        state = {n: so.output[n] for n in OUT}
    assert total is not None
    total.backward()
    assert torch.equal(new.metrics["loss"], total.detach())
    for a, b in zip(step_new.parameters(), step_old.parameters()):
        assert a.grad is not None and b.grad is not None
        assert torch.equal(a.grad, b.grad)
    # and the pass-through loss object is the same StepLoss underneath
    assert build_step_output_loss(None, step_loss).needs_uncorrected_grad is False


def test_trainer_logs_batch_and_epoch_metrics():
    st = stepper(config(pre=[], reg_weight=0.5))
    trainer = Trainer(st)
    batches = [batch(s, n_batch=n, n_time=N_STEPS + 1) for s, n in ((0, 1), (1, 3))]
    epoch = trainer.train_one_epoch(batches)
    batch_logs = trainer.logged[:2]
    for logs in batch_logs:
        assert "batch_corrector_regularization" in logs
        assert "batch_loss" in logs
        for i in range(N_STEPS):
            assert f"batch_corrector_regularization_step_{i}" in logs
            assert f"batch_loss_step_{i}" in logs
        assert all(f"batch_loss/{n}" in logs for n in OUT)
    assert trainer.logged[2] == epoch
    # epoch value: the sample-weighted mean of the batch values (1 and 3 samples)
    for name in ("corrector_regularization", "loss", "loss_step_0"):
        a, b = (logs[f"batch_{name}"] for logs in batch_logs)
        assert epoch[f"train/mean/{name}"] == pytest.approx((1 * a + 3 * b) / 4, rel=1e-6)
    assert epoch["train/mean/corrector_regularization"] > 0


def test_no_corrector_regularization_metrics_without_regularization():
    out = stepper(config(pre=[])).train_on_batch(batch(0, n_time=N_STEPS + 1))
    assert not any(k.startswith("corrector_regularization") for k in out.metrics)
    assert {f"loss_step_{i}" for i in range(N_STEPS)} <= set(out.metrics)


def test_ensemble_members_are_adjacent_and_deterministic_members_agree():
    data = batch(7, n_time=N_STEPS + 1)
    one = stepper(config(pre=["q_1"], reg_weight=0.5)).train_on_batch(data)
    cfg = config(pre=["q_1"], reg_weight=0.5)
    cfg.n_ensemble = 3
    three = stepper(cfg).train_on_batch(data)
    for n in OUT:
        assert three.gen_data[n].shape == (2 * 3, N_STEPS, *data[n].shape[2:])
        torch.testing.assert_close(three.gen_data[n][0::3], one.gen_data[n])
        torch.testing.assert_close(three.gen_data[n][2::3], one.gen_data[n])
    for k, v in one.metrics.items():
        torch.testing.assert_close(three.metrics[k], v, **TOL)


def test_crps_with_ensemble_trains():
    cfg = TrainStepperConfig(
        loss=StepLossConfig(type="EnsembleLoss"),
        n_ensemble=2,
        corrector_loss=config(pre=[], reg_weight=1.0).corrector_loss,
    )
    out = stepper(cfg).train_on_batch(batch(8, n_time=3))
    assert torch.isfinite(out.metrics["loss"])
    assert out.metrics["corrector_regularization"] > 0


def test_nan_loss_is_a_clear_error():
    cfg = TrainStepperConfig(loss=StepLossConfig(type="NaN"))
    with pytest.raises(NonFiniteLossError, match="training loss of optimized step 0 is nan"):
        stepper(cfg).train_on_batch(batch(0))


def test_bad_batches_get_clear_errors():
    st = stepper(config())
    data = batch(0)
    with pytest.raises(ValueError, match=r"lacks \['f'\]"):
        st.train_on_batch({k: v for k, v in data.items() if k != "f"})
    with pytest.raises(ValueError, match="n_time >= 2"):
        st.train_on_batch({k: v[:, :1] for k, v in data.items()})
    bad = dict(data, t=data["t"][:, :2])
    with pytest.raises(ValueError, match=r"batch\['t'\] has shape"):
        st.train_on_batch(bad)


class _MinimalStep(StepABC):
    """A user-defined step: only the abstract members (the adapter pattern)."""

    def __init__(self):
        self.net = torch.nn.Linear(1, 1)
        self.bias = torch.nn.Parameter(torch.tensor(0.3))
        self._modules = torch.nn.ModuleList([self.net])
        self._modules.register_parameter("corrector_bias", self.bias)

    in_names = property(lambda self: ["a"])
    out_names = property(lambda self: ["a"])
    corrector_enabled = property(lambda self: True)
    modules = property(lambda self: self._modules)

    def step(self, input, detach_uncorrected=True):
        raw = self.net(input["a"].unsqueeze(-1)).squeeze(-1)
        so = StepOutput({"a": raw + self.bias}, {"a": raw})
        return so.detach_uncorrected() if detach_uncorrected else so


def test_a_minimal_user_step_trains_and_its_corrector_parameter_gets_the_penalty_gradient():
    from reference.normalizer import StandardNormalizer

    step = _MinimalStep()
    cfg = TrainStepperConfig(corrector_loss=config(reg_weight=2.0).corrector_loss)
    st = cfg.build(step, StandardNormalizer({"a": 0.0}, {"a": 0.5}))
    x = torch.zeros(4, 2, 3)
    out = st.train_on_batch({"a": x})
    # correction = bias everywhere: penalty = 2 * (0.3 / 0.5)^2
    torch.testing.assert_close(
        out.metrics["corrector_regularization_step_0"], torch.tensor(2 * (0.3 / 0.5) ** 2)
    )
    assert step.bias.grad is not None and step.bias.grad.abs() > 0
