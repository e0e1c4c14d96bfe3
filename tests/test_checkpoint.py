"""Configs from plain data, stepper state round trips, and the old checkpoint."""

import dataclasses
import pathlib

import dacite
import pytest
import torch
import yaml
from train_helpers import batch, config, make_step, stepper

from fixtures.checkpoints import write_old_checkpoint as old
from reference.corrector.loss import CorrectorLossConfig
from reference.loss_config import StepLossConfig
from reference.optimization import OptimizationConfig
from reference.stepper import TrainStepper, TrainStepperConfig

CONFIGS = {
    "default": TrainStepperConfig(),
    "precorrector": config(pre=["q_", "ps"]),
    "regularization": config(reg_weight=0.25, reg_type="L1"),
    "both": config(pre=["q_1"], reg_weight=2.0, accumulate=True, decay=1.0, optimizer="SGD"),
    "ensemble": TrainStepperConfig(
        loss=StepLossConfig(type="EnsembleLoss", kwargs={"alpha": 0.9}, weights={"t": 3.0}),
        n_ensemble=4,
        optimization=OptimizationConfig(kwargs={"betas": [0.8, 0.99]}),
    ),
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_config_round_trips_through_plain_data_and_yaml(name):
    cfg = CONFIGS[name]
    data = dataclasses.asdict(cfg)
    assert TrainStepperConfig.from_dict(data) == cfg
    assert TrainStepperConfig.from_dict(yaml.safe_load(yaml.safe_dump(data))) == cfg


def test_config_from_yaml_text():
    text = """
    loss:
      type: MSE
      sqrt_loss_step_decay_constant: 1     # an int where a float is expected
      weights: {t: 2}
    n_ensemble: 1
    corrector_loss:
      precorrector_optimization:
        exclude_names_and_prefixes: [q_]
      regularization:
        loss: {type: L1}
        weight: 0.5
    optimization:
      lr: 0.001
      use_gradient_accumulation: true
    """
    cfg = TrainStepperConfig.from_dict(yaml.safe_load(text))
    assert cfg.corrector_loss is not None
    assert cfg.corrector_loss.precorrector_optimization is not None
    assert cfg.corrector_loss.precorrector_optimization.exclude_names_and_prefixes == ["q_"]
    assert cfg.corrector_loss.regularization is not None
    assert cfg.corrector_loss.regularization.loss.type == "L1"
    assert cfg.loss.sqrt_loss_step_decay_constant == 1.0
    assert cfg.optimization.use_gradient_accumulation is True
    st = stepper(cfg)
    assert st.loss.needs_uncorrected_grad


@pytest.mark.parametrize(
    "data, error, match",
    [
        ({"corector_loss": None}, dacite.UnexpectedDataError, "corector_loss"),
        ({"loss": {"typo": "MSE"}}, dacite.UnexpectedDataError, "typo"),
        ({"n_ensemble": "two"}, dacite.WrongTypeError, "n_ensemble"),
        ({"loss": {"type": "Huber"}}, dacite.WrongTypeError, "loss.type"),
        ({"corrector_loss": {}}, ValueError, "neither precorrector_optimization"),
        (
            {"corrector_loss": {"regularization": {"loss": {"type": "NaN"}}}},
            ValueError,
            "'NaN'",
        ),
        ({"n_ensemble": 0}, ValueError, "n_ensemble is 0"),
        ({"optimization": {"lr": -1.0}}, ValueError, "lr is -1.0"),
        ({"optimization": {"optimizer_type": "LBFGS"}}, dacite.WrongTypeError, "optimizer_type"),
    ],
)
def test_bad_config_data_is_rejected(data, error, match):
    with pytest.raises(error, match=match):
        TrainStepperConfig.from_dict(data)


def _assert_same_training(a: TrainStepper, b: TrainStepper, seeds) -> None:
    """Bitwise: metrics, gradients and updated weights, batch after batch."""
    for seed in seeds:
        data = batch(seed, n_time=3)
        out_a, out_b = a.train_on_batch(data), b.train_on_batch(data)
        assert out_a.metrics.keys() == out_b.metrics.keys()
        for k in out_a.metrics:
            assert torch.equal(out_a.metrics[k], out_b.metrics[k]), k
        for pa, pb in zip(a.step.parameters(), b.step.parameters()):
            assert pa.grad is not None and pb.grad is not None
            assert torch.equal(pa.grad, pb.grad)
            assert torch.equal(pa, pb)


@pytest.mark.parametrize("name", ["default", "precorrector", "regularization"])
def test_state_round_trips_through_a_file(tmp_path: pathlib.Path, name):
    original = stepper(CONFIGS[name])
    original.train_on_batch(batch(0, n_time=3))  # optimizer state is non-trivial now
    path = tmp_path / "stepper.pt"
    torch.save(original.get_state(), path)
    restored = TrainStepper.from_state(torch.load(path, weights_only=True), make_step(seed=7))
    assert restored.config == original.config
    for pa, pb in zip(original.step.parameters(), restored.step.parameters()):
        assert torch.equal(pa, pb)
    _assert_same_training(original, restored, seeds=[1, 2])


def test_old_checkpoint_has_no_corrector_loss_field():
    state = torch.load(old.PATH, weights_only=True)
    assert "corrector_loss" not in state["config"]
    assert not any("corrector" in key for key in state["config"])
    assert set(state) == {"config", "normalizer", "step"}
    assert old.PATH.stat().st_size < 8192


def test_old_checkpoint_loads_unchanged_and_trains_like_a_fresh_stepper():
    state = torch.load(old.PATH, weights_only=True)
    loaded = TrainStepper.from_state(state, old.build_step(seed=0))
    assert loaded.config.corrector_loss is None
    assert loaded.loss.needs_uncorrected_grad is False
    for name, value in state["step"]["modules"].items():
        assert torch.equal(loaded.step.modules.state_dict()[name], value)

    # the same stepper written with today's config, weights copied over
    fresh_config = TrainStepperConfig(
        loss=StepLossConfig(sqrt_loss_step_decay_constant=0.5, weights={"t": 2.0}),
        corrector_loss=None,
        optimization=OptimizationConfig(lr=0.01),
    )
    assert loaded.config == fresh_config
    step = old.build_step(seed=0)
    step.load_state(state["step"])
    fresh = fresh_config.build(step, old.normalizer())

    def old_batch(seed):
        data = batch(seed, n_time=3)
        return {n: data[n] for n in old.IN_NAMES}

    for seed in range(3):
        data = old_batch(seed)
        out_a, out_b = loaded.train_on_batch(data), fresh.train_on_batch(data)
        for k in out_a.metrics:
            assert torch.equal(out_a.metrics[k], out_b.metrics[k]), k
        assert out_a.metrics.keys() == out_b.metrics.keys()
        assert not any(k.startswith("corrector") for k in out_a.metrics)
        for pa, pb in zip(loaded.step.parameters(), fresh.step.parameters()):
            assert pa.grad is not None and pb.grad is not None
            assert torch.equal(pa.grad, pb.grad)
            assert torch.equal(pa, pb)


def test_corrector_loss_defaults_to_none():
    assert TrainStepperConfig().corrector_loss is None
    assert TrainStepperConfig.from_dict({}).corrector_loss is None
    assert isinstance(
        TrainStepperConfig.from_dict(
            {"corrector_loss": {"precorrector_optimization": {}}}
        ).corrector_loss,
        CorrectorLossConfig,
    )
