"""The fme adapter (``conformance/adapters/fme.py``).

The first tests need no fme: the suite must import without it, and the
delta conversion is plain torch. The rest run only where the released fme is
installed (``tox -e fme``); without it they are skipped with the reason.
"""

from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from conformance.adapter import (
    Capability,
    LossSpec,
    MainLossSpec,
    NormalizerSpec,
    PreCorrectorSpec,
    RegularizationSpec,
)
from conformance.adapters.fme import to_deltas

HAVE_FME = importlib.util.find_spec("fme") is not None
needs_fme = pytest.mark.skipif(
    not HAVE_FME, reason="fme is not installed (`tox -e fme` installs fme==2026.10.0)"
)


def test_the_suite_imports_without_fme() -> None:
    """Importing the suite, its plugin, its checks' helpers and even the fme
    adapter module does not import fme (only ``make_adapter()`` does)."""
    code = (
        "import sys\n"
        "import conformance, conformance.adapter, conformance.plugin, conformance.oracle\n"
        "import conformance.harness, conformance.report, conformance.adapters.fme\n"
        "import conformance.cases\n"
        "assert 'fme' not in sys.modules, sorted(m for m in sys.modules if m.startswith('fme'))\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.skipif(HAVE_FME, reason="checks the error without fme; fme is installed here")
def test_make_adapter_without_fme_says_how_to_install() -> None:
    from conformance.adapters.fme import make_adapter

    with pytest.raises(ImportError, match=r"fme==2026\.10\.0"):
        make_adapter()


def test_to_deltas_is_output_minus_uncorrected_on_the_graph() -> None:
    out = torch.tensor([[1.0, 5.0]], requires_grad=True)
    unc = torch.tensor([[0.5, 2.0]], requires_grad=True)
    deltas = to_deltas({"a": out, "b": out * 2}, {"a": unc})
    assert list(deltas) == ["a"]  # only the corrected variables
    torch.testing.assert_close(deltas["a"], torch.tensor([[0.5, 3.0]]))
    deltas["a"].sum().backward()
    torch.testing.assert_close(out.grad, torch.ones(1, 2))
    torch.testing.assert_close(unc.grad, -torch.ones(1, 2))


def test_to_deltas_passes_bad_input_on_instead_of_judging_it() -> None:
    """A key missing from ``output`` or a shape mismatch is not an error of the
    conversion (and not broadcast away): fme gets a delta with the same key and
    the shape of ``uncorrected``, so fme's own behaviour is what the suite sees."""
    out = {"a": torch.ones(2, 3)}
    unc = {"a": torch.ones(2, 2), "zz": torch.ones(2, 3), "b": torch.ones(1, 3)}
    out["b"] = torch.ones(2, 3)  # (1, 3) would broadcast against (2, 3)
    deltas = to_deltas(out, unc)
    assert {k: tuple(v.shape) for k, v in deltas.items()} == {
        "a": (2, 2),
        "zz": (2, 3),
        "b": (1, 3),
    }


DOCS = Path(__file__).resolve().parent.parent / "docs" / "fme"


def test_committed_fme_report_agrees_with_known_failures_and_readme() -> None:
    """The committed artefacts of `tox -e fme` tell one story: every check
    the report says failed is a known failure with a cause, every known
    failure matches a failed check, and the README states the report's counts."""
    from conformance.suite import parse_xfails

    report = json.loads((DOCS / "report.json").read_text())
    assert report["implementation"]["name"] == "fme"
    assert report["implementation"]["version"] == "2026.10.0"
    known = parse_xfails((DOCS / "known_failures.txt").read_text())
    failed = [c for c in report["checks"] if c["outcome"] == "failed"]

    def entry_for(check: dict) -> str | None:
        bare = f"{check['module']}::{check['check']}"
        return check["id"] if check["id"] in known else bare if bare in known else None

    unexplained = [c["id"] for c in failed if entry_for(c) is None]
    assert not unexplained, (
        f"failed in docs/fme/report.json but not in known_failures.txt: {unexplained}"
    )
    stale = set(known) - {entry_for(c) for c in failed}
    assert not stale, f"known_failures.txt entries that no failed check matches: {sorted(stale)}"
    s = report["summary"]
    stated = (
        f"{s['passed']} passed, {s['failed']} failed, {s['deviates']} deviates, "
        f"{s['not_exercised']} not exercised, {s['not_applicable']} not applicable"
    )
    assert stated in (DOCS.parent.parent / "README.md").read_text()
    assert stated in (DOCS / "ANALYSIS.md").read_text()
    # every failed check names the requirement it broke
    assert all(c["broke"] for c in failed)


# ---------------------------------------------------------------- with fme

NAMES = ("a", "b_0", "b_1")
NORM = NormalizerSpec(
    means={"a": 1.0, "b_0": 0.0, "b_1": -2.0}, stds={"a": 2.0, "b_0": 0.5, "b_1": 4.0}
)


def _spec(**kw) -> LossSpec:  # noqa: ANN003
    return LossSpec(names=NAMES, normalizer=NORM, main=MainLossSpec("MSE"), **kw)


def _tensors() -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], dict[str, torch.Tensor]]:
    """One sample on a 1x2 grid; ``a`` and ``b_1`` corrected by +2 std."""
    output = {
        "a": torch.tensor([[[3.0, 5.0]]]),
        "b_0": torch.tensor([[[0.5, -0.5]]]),
        "b_1": torch.tensor([[[6.0, -2.0]]]),
    }
    uncorrected = {"a": output["a"] - 4.0, "b_1": output["b_1"] - 8.0}
    target = {k: torch.full((1, 1, 2), NORM.means[k]) for k in NAMES}
    return output, uncorrected, target


@needs_fme
def test_declared_capabilities() -> None:
    from conformance.adapters.fme import make_adapter

    adapter = make_adapter()
    assert adapter.version == "2026.10.0"
    for present in (
        Capability.RAISE_ON_UNMATCHED,
        Capability.STEPPER,
        Capability.GRADIENT_ACCUMULATION,
        Capability.DISTRIBUTED,
    ):
        assert present in adapter.capabilities, present
    for absent in (
        Capability.EXCLUSION_MATCHER,
        Capability.WARN_ONCE_UNMATCHED,
        Capability.LOSS_CONFIG_REGULARIZATION,
        Capability.REGULARIZATION_LOSS_TYPES,
        Capability.DATA_MASK,
        Capability.BAD_INPUT_VALIDATION,  # fme never claims it
    ):
        assert absent not in adapter.capabilities, absent
    assert set(adapter.deviations) == {"MATCH-1", "WARN-1", "REG-4", "CONFIG-2", "NEEDS-1"}


@needs_fme
def test_needs_uncorrected_grad_is_not_made_up() -> None:
    """fme has no such flag: the adapter declares NEEDS-1 and does not
    synthesise one."""
    from conformance.adapters.fme import make_adapter

    loss = make_adapter().build_loss(_spec(regularization=RegularizationSpec("MSE")))
    with pytest.raises(NotImplementedError, match="NEEDS-1"):
        _ = loss.needs_uncorrected_grad


@needs_fme
def test_hand_computed_losses_through_fme() -> None:
    """Normalized errors, by hand: target = mean, so each error is
    ``(x - mu) / sigma``. a: output (1, 2), uncorrected (-1, 0); b_0: (1, -1);
    b_1: output (2, 0), uncorrected (0, -2). Corrections are 2 std everywhere."""
    from conformance.adapters.fme import make_adapter

    adapter = make_adapter()
    output, uncorrected, target = _tensors()
    pre = PreCorrectorSpec(select_names=("a",))  # swap a only (b_1 keeps its output)
    reg = RegularizationSpec("L1", weight=0.5)
    loss = adapter.build_loss(
        _spec(precorrector=pre, regularization=reg, corrected_names=("a", "b_1"))
    )
    assert loss.loss.corrector_loss is not None
    result = loss(output, uncorrected, target, 0)
    expected = {"a": (1 + 0) / 2, "b_0": (1 + 1) / 2, "b_1": (4 + 0) / 2}
    for k, v in expected.items():
        torch.testing.assert_close(result.main_per_channel[k], torch.tensor(v))
    torch.testing.assert_close(result.main_total, torch.tensor(sum(expected.values()) / 3))
    # L1 of 2-std corrections over the two corrected channels: 2, times 0.5
    assert result.regularization is not None
    torch.testing.assert_close(result.regularization, torch.tensor(1.0))
    torch.testing.assert_close(result.total, result.main_total + 1.0)


@needs_fme
def test_pass_through_has_no_corrector_loss() -> None:
    from conformance.adapters.fme import make_adapter

    loss = make_adapter().build_loss(_spec(corrected_names=("a",)))
    assert loss.loss.corrector_loss is None
    output, uncorrected, target = _tensors()
    assert loss(output, uncorrected, target, 0).regularization is None


@needs_fme
def test_untranslatable_regularization_is_a_clear_error() -> None:
    from conformance.adapters.fme import make_adapter

    with pytest.raises(ValueError, match=re.escape("norm 'L1' | 'L2' only")):
        make_adapter().build_corrector_config(None, RegularizationSpec("AreaWeightedMSE"))


@needs_fme
def test_an_empty_selection_is_fmes_feature_off() -> None:
    """Every corrected variable excluded: the opt-in selection is empty, which
    fme says by leaving the feature out (it rejects an empty
    ``names_and_prefixes``); the main loss is the plain loss of ``output``."""
    from conformance.adapters.fme import make_adapter

    adapter = make_adapter()
    spec = _spec(
        precorrector=PreCorrectorSpec(("a", "b_"), select_names=()), corrected_names=("a", "b_1")
    )
    loss = adapter.build_loss(spec)
    assert loss.loss.corrector_loss is None
    output, uncorrected, target = _tensors()
    plain = adapter.build_loss(_spec(corrected_names=("a", "b_1")))
    torch.testing.assert_close(
        loss(output, uncorrected, target, 0).total, plain(output, uncorrected, target, 0).total
    )


@needs_fme
def test_nothing_corrected_keeps_the_features_configured() -> None:
    """No corrected variables: the features select the loss variables and fme
    takes its inert path (no deltas); the penalty is reported as 0."""
    from conformance.adapters.fme import make_adapter

    spec = _spec(precorrector=PreCorrectorSpec(), regularization=RegularizationSpec("MSE"))
    loss = make_adapter().build_loss(spec)
    assert loss.loss.corrector_loss is not None
    output, _, target = _tensors()
    result = loss(output, {}, target, 0)
    assert result.regularization is not None and float(result.regularization) == 0.0
    torch.testing.assert_close(result.total, result.main_total)


# ------------------------------------------------------- fme's train stepper


def _stepper_run(exclude, reg, accumulate: bool, n_steps: int = 2):  # noqa: ANN001, ANN202
    """Train one batch through fme's TrainStepper around the suite step; the
    expected per-step totals and gradients from the float64 oracle."""
    from conformance import oracle
    from conformance.adapter import Batch, StepperSpec
    from conformance.adapters.fme import make_adapter
    from conformance.cases import main_case
    from conformance.corrector import SuiteStep, correct, model

    case = main_case()
    spec = case.spec(exclude=exclude, regularization=reg)
    norm = spec.normalizer
    step = SuiteStep(case.names, case.corrected, norm.means, norm.stds)
    stepper = make_adapter().build_stepper(
        StepperSpec(loss=spec, n_forward_steps=n_steps, use_gradient_accumulation=accumulate),
        step,
    )
    targets = [
        {k: v + 0.1 * (i + 1) * norm.stds[k] for k, v in case.target.items()}
        for i in range(n_steps)
    ]
    initial = {k: v.clone() for k, v in case.target.items()}
    # the parameters before training (fme's optimizer updates them)
    gain = step.gain.detach().double().requires_grad_(True)
    theta = step.corrector.theta.detach().double().requires_grad_(True)
    outcome = stepper.train_on_batch(Batch(initial_state=initial, targets=targets))

    state = {k: v.double() for k, v in initial.items()}
    totals, loss = [], torch.zeros((), dtype=torch.float64)
    for i in range(n_steps):
        out, unc = correct(model(state, gain, norm.means, norm.stds), theta, case.corrected)
        value = oracle.total(spec, out, unc, targets[i], i)
        totals.append(float(value.detach()))
        loss = loss + value
        state = {k: v.detach() for k, v in out.items()} if accumulate else out
    raw = torch.autograd.grad(loss, [gain, theta], allow_unused=True)
    grads = {
        name: torch.zeros((), dtype=torch.float64) if g is None else g
        for name, g in zip(["gain", "corrector.theta"], raw)
    }
    return spec, outcome, totals, grads


FEATURES = [
    pytest.param(None, None, id="none"),
    pytest.param((), None, id="precorrector"),
    pytest.param(None, RegularizationSpec("MSE", weight=0.7), id="regularization"),
    pytest.param(("q_2",), RegularizationSpec("L1", weight=0.7), id="both"),
]


@needs_fme
@pytest.mark.parametrize("accumulate", [False, True], ids=["plain", "grad-accumulation"])
@pytest.mark.parametrize(("exclude", "reg"), FEATURES)
def test_fme_train_stepper_drives_the_suite_step(exclude, reg, accumulate: bool) -> None:  # noqa: ANN001
    """The training hook is wired right: fme's per-step metric and the
    gradients of both parameters (model and corrector) equal the oracle's.
    fme's ``loss_step_{i}`` is the step's whole total (main loss plus the
    weighted penalty), and fme logs no ``corrector_regularization*`` metric:
    fme's own design (its test_penalty_rides_the_existing_metrics), which the
    protocol's metric names differ from."""
    _, outcome, totals, grads = _stepper_run(exclude, reg, accumulate)
    for i, want in enumerate(totals):
        assert outcome.metrics[f"loss_step_{i}"] == pytest.approx(want, rel=2e-5)
    assert outcome.step_totals == [outcome.metrics[f"loss_step_{i}"] for i in range(len(totals))]
    assert not any(k.startswith("corrector_regularization") for k in outcome.metrics)
    for name, want in grads.items():
        got = outcome.gradients[name]
        assert got is not None, name
        # float32 vs float64: ps ~ 1000 carries ~6e-6 std of rounding per value
        torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-5)


@needs_fme
def test_fme_builds_a_corrector_loss_for_a_step_without_corrector() -> None:
    """fme has no ``corrector_enabled``: a corrector loss configured for a step
    whose corrector is off is accepted at build and is inert in training (the
    deltas are always empty) -- the seed's build-time error does not exist."""
    from conformance.adapter import Batch, StepperSpec
    from conformance.adapters.fme import make_adapter
    from conformance.cases import main_case
    from conformance.corrector import SuiteStep

    case = main_case()
    spec = case.spec(exclude=(), regularization=RegularizationSpec("MSE", weight=0.7))
    norm = spec.normalizer
    step = SuiteStep(case.names, case.corrected, norm.means, norm.stds, corrector_enabled=False)
    stepper = make_adapter().build_stepper(StepperSpec(loss=spec), step)
    outcome = stepper.train_on_batch(Batch(initial_state=dict(case.target), targets=[case.target]))
    assert outcome.gradients["corrector.theta"] is None


@needs_fme
def test_fme_train_stepper_crashes_with_area_weighted_mse() -> None:
    """F1 reaches fme's training: ``train_on_batch`` with an AreaWeightedMSE
    main loss raises in ``get_channel_losses`` (docs/fme/ANALYSIS.md)."""
    import dataclasses

    from conformance.adapter import Batch, StepperSpec
    from conformance.adapters.fme import make_adapter
    from conformance.cases import WEIGHTED_MAIN, main_case
    from conformance.corrector import SuiteStep

    case = main_case()
    spec = case.spec(main=dataclasses.replace(WEIGHTED_MAIN, loss_type="AreaWeightedMSE"))
    norm = spec.normalizer
    step = SuiteStep(case.names, case.corrected, norm.means, norm.stds)
    stepper = make_adapter().build_stepper(StepperSpec(loss=spec), step)
    with pytest.raises(RuntimeError, match="Per-channel loss has 1 elements but 6 channel names"):
        stepper.train_on_batch(Batch(initial_state=dict(case.target), targets=[case.target]))


@needs_fme
def test_fme_plain_prediction_returns_its_own_deltas_attached() -> None:
    """F5's evidence: fme's ``Stepper.predict`` returns outputs *and* deltas
    on the autograd graph; the adapter reports fme's deltas themselves."""
    from conformance.adapter import Batch, PredictedStep, StepperSpec
    from conformance.adapters.fme import make_adapter
    from conformance.cases import main_case
    from conformance.corrector import SuiteStep

    case = main_case()
    spec = case.spec(exclude=(), regularization=RegularizationSpec("MSE", weight=0.7))
    norm = spec.normalizer
    step = SuiteStep(case.names, case.corrected, norm.means, norm.stds)
    stepper = make_adapter().build_stepper(StepperSpec(loss=spec, n_forward_steps=1), step)
    [predicted] = stepper.predict(Batch(initial_state=dict(case.target), targets=[case.target]))
    assert isinstance(predicted, PredictedStep) and predicted.deltas is not None
    assert all(d.requires_grad for d in predicted.deltas.values())
    assert all(o.requires_grad for o in predicted.output.values())
