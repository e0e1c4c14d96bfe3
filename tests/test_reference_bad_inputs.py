"""Issue #15: the reference rejects bad input clearly.

One row per category of the issue: the exception type, and that the message
names the culprit (variable or config field) and the fix. Documented
behaviours (rather than errors) are tested at the end.
"""

import dataclasses
from collections.abc import Callable

import dacite
import numpy as np
import pytest
import torch
import train_helpers as th
from helpers import NAMES, SHAPE, build, normalizer, step_output, tensors

from reference.config_errors import ConfigTypeError
from reference.corrector.loss import PreCorrectorOptimizationConfig
from reference.loss import (
    NonFiniteLossInputError,
    StepOutputLossInputError,
    StepOutputLossTypeError,
    WeightedMappingLoss,
)
from reference.loss_config import LossConfig, StepLossConfig
from reference.loss_functions import MSELoss
from reference.matching import NameMatcher
from reference.normalizer import StandardNormalizer
from reference.step import SingleModuleStep, StepModuleError
from reference.step_output import StepOutput
from reference.stepper import BatchError, TrainStepperConfig


@dataclasses.dataclass
class Row:
    """One bad input: ``call`` must raise ``error`` with every ``mention``."""

    id: str
    call: Callable[[], object]
    error: type[BaseException]
    mentions: tuple[str, ...]


def _loss(pre=None, reg_type=None, **kw):
    return build(pre=pre, reg_type=reg_type, **kw)[0]


def _target(seed: int = 5) -> dict[str, torch.Tensor]:
    return tensors(seed)


def _with(mapping: dict, **changes) -> dict:
    return {**mapping, **changes}


def _nan_at(values: torch.Tensor, value: float = float("nan")) -> torch.Tensor:
    values = values.clone()
    values.view(-1)[3] = value
    return values


def _call(loss, so: StepOutput, target=None, step=0, data_mask=None):
    return lambda: loss(so, _target() if target is None else target, step, data_mask)


SO = step_output()
AREA = torch.rand(SHAPE[1], 1) + 0.5  # (n_lat, 1) for the (2, 3, 4) tensors

# ---- silent -----------------------------------------------------------------------

SILENT = [
    Row(
        "nan-in-output",
        _call(_loss(), StepOutput(_with(dict(SO.output), t=_nan_at(SO.output["t"])))),
        NonFiniteLossInputError,
        ("step_output.output['t']", "NaN or inf", "model's output", "Check the model"),
    ),
    Row(
        "nan-in-output-before-corrector",
        _call(
            _loss(),
            StepOutput(
                _with(dict(SO.output), ps=_nan_at(SO.output["ps"])),
                _with(dict(SO.uncorrected), ps=_nan_at(SO.uncorrected["ps"])),
            ),
        ),
        NonFiniteLossInputError,
        ("step_output.output['ps']", "uncorrected['ps']", "before the corrector"),
    ),
    Row(
        "nan-made-by-corrector",
        _call(
            _loss(), StepOutput(_with(dict(SO.output), ps=_nan_at(SO.output["ps"])), SO.uncorrected)
        ),
        NonFiniteLossInputError,
        ("step_output.output['ps']", "uncorrected['ps'] is finite", "corrector produced"),
    ),
    Row(
        "inf-in-target",
        _call(_loss(), SO, _with(_target(), q_0=_nan_at(_target()["q_0"], float("inf")))),
        NonFiniteLossInputError,
        ("target_step['q_0']", "NaN or inf", "data_mask['q_0']"),
    ),
    Row(
        "exclusions-bare-string",
        lambda: PreCorrectorOptimizationConfig("ps"),  # type: ignore[arg-type]
        TypeError,
        ("exclude_names_and_prefixes", "list of strings", "['ps']"),
    ),
    Row(
        "matcher-bare-string",
        lambda: NameMatcher("ps"),
        TypeError,
        ("'ps'", "list of strings", "['ps']"),
    ),
    Row(
        "duplicate-loss-variables",
        lambda: WeightedMappingLoss(MSELoss(), {}, ["ps", "t", "ps"], normalizer()),
        ValueError,
        ("['ps']", "more than once", "List each once"),
    ),
    Row(
        "float-data-mask",
        _call(_loss(), SO, data_mask={"ps": torch.full(SHAPE, 0.5)}),
        StepOutputLossTypeError,
        ("data_mask['ps']", "float32", "boolean", "> 0.5"),
    ),
    Row(
        "data-mask-key-not-a-loss-variable",
        _call(_loss(), SO, data_mask={"pss": torch.ones(SHAPE, dtype=torch.bool)}),
        StepOutputLossInputError,
        ("'pss'", "not a loss variable", "Fix the name or drop"),
    ),
    Row(
        "negative-step",
        _call(_loss(step_cfg=StepLossConfig(sqrt_loss_step_decay_constant=0.5)), SO, step=-3),
        StepOutputLossInputError,
        ("step is -3", ">= 0"),
    ),
    Row(
        "step-not-an-integer",
        _call(_loss(), SO, step=1.5),
        StepOutputLossTypeError,
        ("step is 1.5", "integer >= 0"),
    ),
    Row(
        "negative-area-weights",
        lambda: LossConfig(type="AreaWeightedMSE").build(-AREA),
        ValueError,
        ("AreaWeightedMSE", "area_weights", "negative, NaN", ">= 0"),
    ),
    Row(
        "nan-area-weights",
        lambda: LossConfig(type="AreaWeightedMSE").build(
            AREA * torch.tensor([[float("nan")], [1], [1]])
        ),
        ValueError,
        ("AreaWeightedMSE", "area_weights", "finite and >= 0"),
    ),
]

# ---- internal tracebacks ------------------------------------------------------------


def _area_loss():
    return _loss(step_cfg=StepLossConfig(type="AreaWeightedMSE"), area_weights=AREA)


def _step(module: torch.nn.Module) -> SingleModuleStep:
    return SingleModuleStep(module, th.normalizer(), th.IN, th.OUT, th.corrector())


def _train(step: SingleModuleStep, data, area_weights=None):
    stepper = TrainStepperConfig().build(step, th.normalizer(), area_weights)
    return lambda: stepper.train_on_batch(data)


TRACEBACKS = [
    Row(
        "uncorrected-none",
        _call(_loss(), StepOutput(SO.output, None)),  # type: ignore[arg-type]
        StepOutputLossTypeError,
        ("step_output.uncorrected", "NoneType", "{} when nothing was corrected"),
    ),
    Row(
        "list-instead-of-target-mapping",
        lambda: _loss()(SO, list(_target().values()), 0),  # type: ignore[arg-type]
        StepOutputLossTypeError,
        ("target_step", "a list", "mapping from variable name to tensor"),
    ),
    Row(
        "list-instead-of-weights-mapping",
        lambda: WeightedMappingLoss(MSELoss(), [2.0], NAMES, normalizer()),  # type: ignore[arg-type]
        TypeError,
        ("Loss weights", "a list", "mapping from variable name"),
    ),
    Row(
        "list-instead-of-normalizer-mapping",
        lambda: StandardNormalizer([1.0], {"ps": 1.0}),  # type: ignore[arg-type]
        TypeError,
        ("Normalizer means", "list", "mapping"),
    ),
    Row(
        "area-weighted-without-spatial-dims",
        _call(
            _area_loss(),
            StepOutput({k: v[:, 0, 0] for k, v in SO.output.items()}),
            {k: v[:, 0, 0] for k, v in _target().items()},
        ),
        StepOutputLossInputError,
        ("step_output.output['ps']", "(n_samples, n_lat, n_lon)"),
    ),
    Row(
        "area-weights-wrong-shape",
        _call(
            _loss(
                step_cfg=StepLossConfig(type="AreaWeightedMSE"),
                area_weights=torch.ones(SHAPE[1] + 2, 1),
            ),
            SO,
        ),
        StepOutputLossInputError,
        ("step_output.output['ps']", "area_weights have shape (5, 1)", "(3, 4) or (3, 1)"),
    ),
    Row(
        "area-weights-not-2d",
        lambda: LossConfig(type="AreaWeightedMSE").build(torch.ones(SHAPE[1])),
        ValueError,
        ("area_weights has shape (3,)", "(n_lat, n_lon) or (n_lat, 1)"),
    ),
    Row(
        "empty-variable-list",
        lambda: WeightedMappingLoss(MSELoss(), {}, [], normalizer()),
        ValueError,
        ("out_names is empty", "at least one variable"),
    ),
    Row(
        "string-weight",
        lambda: StepLossConfig(weights={"ps": "2"}).build(NAMES, normalizer()),  # type: ignore[dict-item]
        TypeError,
        ("weights['ps']", "'2'", "must be a number"),
    ),
    Row(
        "string-regularization-weight",
        lambda: TrainStepperConfig.from_dict(
            {"corrector_loss": {"regularization": {"weight": "big"}}}
        ),
        ConfigTypeError,
        ("corrector_loss.regularization.weight", "must be a number", "'big'"),
    ),
    Row(
        "integer-tensor",
        _call(_loss(), StepOutput(_with(dict(SO.output), t=SO.output["t"].long()))),
        StepOutputLossTypeError,
        ("step_output.output['t']", "torch.int64", ".float()"),
    ),
    Row(
        "bool-tensor",
        _call(_loss(), SO, _with(_target(), q_1=_target()["q_1"] > 0)),
        StepOutputLossTypeError,
        ("target_step['q_1']", "torch.bool", ".float()"),
    ),
    Row(
        "complex-tensor",
        _call(_loss(), StepOutput(_with(dict(SO.output), ps=SO.output["ps"].to(torch.complex64)))),
        StepOutputLossTypeError,
        ("step_output.output['ps']", "complex64", ".float()"),
    ),
    Row(
        "meta-device",
        _call(_loss(), StepOutput({k: v.to("meta") for k, v in SO.output.items()})),
        StepOutputLossTypeError,
        ("step_output.output['ps']", "meta device", "tensors that hold values"),
    ),
    Row(
        "mixed-device",
        _call(_loss(), SO, _with(_target(), t=_target()["t"].to("meta"))),
        StepOutputLossTypeError,
        ("target_step['t']", "meta", "tensors that hold values"),
    ),
    Row(
        "numpy-array",
        _call(_loss(), SO, _with(_target(), q_0=_target()["q_0"].numpy())),
        StepOutputLossTypeError,
        ("target_step['q_0']", "numpy.ndarray", "torch.from_numpy"),
    ),
    Row(
        "data-mask-wrong-shape",
        _call(_loss(), SO, data_mask={"ps": torch.ones(SHAPE[0], 5, dtype=torch.bool)}),
        StepOutputLossInputError,
        ("data_mask['ps']", "(2, 5)", "(2, 3, 4)", "(3, 4)"),
    ),
    Row(
        "batch-without-time-dimension",
        _train(th.make_step(), {k: v[:, 0] for k, v in th.batch(0).items()}),
        BatchError,
        ("(2, 4, 8)", "no time dimension", "(n_batch, n_time, n_lat, n_lon)"),
    ),
    Row(
        "batch-without-time-dimension-area-weights",
        _train(
            th.make_step(),
            {k: v[:, 0] for k, v in th.batch(0).items()},
            torch.ones(th.GRID[0], 1),
        ),
        BatchError,
        ("(2, 4, 8)", "lacks the time dimension", "(n_batch, n_time, n_lat, n_lon)"),
    ),
    Row(
        "module-output-channels",
        _train(_step(torch.nn.Conv2d(len(th.IN), 3, 1)), th.batch(0)),
        StepModuleError,
        ("returned (2, 3, 4, 8)", f"{len(th.OUT)} channels for out_names", "Fix its output"),
    ),
    Row(
        "module-input-channels",
        _train(_step(torch.nn.Conv2d(2, len(th.OUT), 1)), th.batch(0)),
        BatchError,
        ("module failed", f"{len(th.IN)} channels for in_names", "fix its channel counts"),
    ),
]

# ---- misleading -------------------------------------------------------------------


def _half_overflow():
    so = StepOutput({k: v.half() for k, v in SO.output.items()}, {})
    target = {k: v.half() for k, v in _target().items()}
    target["ps"] = target["ps"] + 3000.0  # (3000 / 10)^2 fits, its square does not
    return _call(_loss(), so, target)


def _nan_initial_state():
    data = th.batch(0)
    data["t"][:, 0, 1, 2] = float("nan")
    return _train(th.make_step(), data)


MISLEADING = [
    Row(
        "float16-overflow",
        _half_overflow(),
        NonFiniteLossInputError,
        ("loss of 'ps'", "inputs are finite", "overflowed in torch.float16", ".float()"),
    ),
    Row(
        "nan-in-initial-state",
        _nan_initial_state(),
        NonFiniteLossInputError,
        ("batch['t'][:, 0]", "initial condition", "Fill the non-finite input"),
    ),
]

# ---- garbled (configs from dicts / YAML) ---------------------------------------------

EXCLUDE = "corrector_loss.precorrector_optimization.exclude_names_and_prefixes"


def _from_dict(data):
    return lambda: TrainStepperConfig.from_dict(data)


GARBLED = [
    Row(
        "exclusions-string-in-yaml",
        _from_dict(
            {"corrector_loss": {"precorrector_optimization": {"exclude_names_and_prefixes": "ps"}}}
        ),
        ConfigTypeError,
        (EXCLUDE, "must be a list of strings", "got 'ps'", "[ps]"),
    ),
    Row(
        "exclusions-non-string-item",
        _from_dict(
            {
                "corrector_loss": {
                    "precorrector_optimization": {"exclude_names_and_prefixes": ["ps", 3]}
                }
            }
        ),
        ConfigTypeError,
        (EXCLUDE, "must be a list of strings", "item 1 is 3 (an int)"),
    ),
    Row(
        "weights-list",
        _from_dict({"loss": {"weights": ["ps"]}}),
        ConfigTypeError,
        ("loss.weights", "a mapping of strings to numbers", "got ['ps']"),
    ),
    Row(
        "loss-type-unknown",
        _from_dict({"loss": {"type": "Huber"}}),
        ConfigTypeError,
        ("loss.type", "one of 'MSE', 'L1'", "got 'Huber'"),
    ),
]

ROWS = SILENT + TRACEBACKS + MISLEADING + GARBLED


@pytest.mark.parametrize("row", ROWS, ids=[r.id for r in ROWS])
def test_bad_input_is_named(row: Row) -> None:
    with pytest.raises(row.error) as info:
        row.call()
    message = str(info.value)
    assert "generator object" not in message
    for text in row.mentions:
        assert text in message, f"{row.id}: {text!r} not in {message!r}"


def test_config_type_error_is_still_dacite_and_type_error() -> None:
    with pytest.raises(dacite.WrongTypeError):
        TrainStepperConfig.from_dict({"n_ensemble": "two"})
    with pytest.raises(TypeError, match="n_ensemble must be an integer"):
        TrainStepperConfig.from_dict({"n_ensemble": "two"})


# ---- documented behaviours ----------------------------------------------------------


def test_nan_loss_type_is_nan_by_design_not_diagnosed() -> None:
    """Loss type ``NaN`` (a placeholder) gives a NaN main loss, no error."""
    loss = _loss(step_cfg=StepLossConfig(type="NaN"))
    result = loss(SO, _target(), 0)
    assert torch.isnan(result.total())


def test_nan_at_masked_points_is_ignored() -> None:
    """NaN where ``data_mask`` is False does not reach the loss: no error."""
    target = _with(_target(), ps=_target()["ps"].clone())
    target["ps"][0, 0, 0] = float("nan")
    mask = torch.ones(SHAPE, dtype=torch.bool)
    mask[0, 0, 0] = False
    result = _loss()(SO, target, 0, {"ps": mask})
    assert torch.isfinite(result.total())


def test_nan_with_precorrector_optimization_names_uncorrected() -> None:
    so = StepOutput(SO.output, _with(dict(SO.uncorrected), ps=_nan_at(SO.uncorrected["ps"])))
    with pytest.raises(NonFiniteLossInputError, match=r"uncorrected\['ps'\].*pre-corrector"):
        _loss(pre=())(so, _target(), 0)


def test_nan_in_uncorrected_penalty_names_it() -> None:
    so = StepOutput(SO.output, _with(dict(SO.uncorrected), q_1=_nan_at(SO.uncorrected["q_1"])))
    with pytest.raises(NonFiniteLossInputError, match=r"uncorrected\['q_1'\].*penalty"):
        _loss(reg_type="MSE")(so, _target(), 0)


def test_step_zero_and_numpy_integer_steps_are_accepted() -> None:
    loss = _loss()
    assert loss(SO, _target(), 0).total() == loss(SO, _target(), np.int64(0)).total()


def test_spatial_mask_broadcasts() -> None:
    """A mask of the spatial shape applies to every sample."""
    mask = torch.ones(SHAPE[1:], dtype=torch.bool)
    result = _loss()(SO, _target(), 0, {"ps": mask})
    assert torch.isfinite(result.total())


class _OutOfMemory(torch.nn.Conv2d):
    def forward(self, x: torch.Tensor) -> torch.Tensor:  # noqa: D102
        raise torch.OutOfMemoryError("CUDA out of memory (simulated)")


def test_out_of_memory_is_not_reworded_as_a_shape_problem() -> None:
    """Code that catches out-of-memory by type (a smaller batch, a retry)
    still sees it: only shape failures become BatchError / StepModuleError."""
    module = _OutOfMemory(len(th.IN), len(th.OUT), 1)
    with pytest.raises(torch.OutOfMemoryError, match="simulated"):
        _train(_step(module), th.batch(0))()
    stepper = TrainStepperConfig().build(_step(module), th.normalizer())
    with pytest.raises(torch.OutOfMemoryError, match="simulated"):
        stepper.predict(th.batch(0))
