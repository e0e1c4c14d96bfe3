"""Steps and the corrector: what a step returns, and when it detaches."""

import pytest
import torch
from train_helpers import CORRECTED, GRID, IN, MEANS, OUT, STDS, hand_step, make_step, module

from reference.corrector.corrector import ConservationCorrector, global_mean
from reference.step import ResidualStep, SingleModuleStep
from reference.step_output import is_detached


def _input(seed=0, n=3):
    g = torch.Generator().manual_seed(seed)
    return {k: MEANS[k] + STDS[k] * torch.randn((n, *GRID), generator=g) for k in IN}


def test_corrector_enabled_per_step_type():
    assert make_step(with_corrector=True).corrector_enabled is True
    assert make_step(with_corrector=False).corrector_enabled is False
    norm = make_step().normalizer
    assert ResidualStep(module(), norm, IN, OUT, ConservationCorrector(["ps"])).corrector_enabled
    assert not ResidualStep(module(), norm, IN, OUT).corrector_enabled


def test_uncorrected_holds_exactly_the_modified_variables():
    step = make_step()
    x = _input()
    so = step.step(x)
    expected_out, gen = hand_step(step.modules[0], x)
    assert list(so.uncorrected) == CORRECTED
    assert set(so.output) == set(OUT)
    for n in CORRECTED:
        torch.testing.assert_close(so.uncorrected[n], gen[n])
    for n in OUT:
        torch.testing.assert_close(so.output[n], expected_out[n])
    # the corrector really changed what it modified, and nothing else
    for n in CORRECTED:
        assert not torch.equal(so.output[n], so.uncorrected[n]), n
    # conservation: the corrected global mean equals the input's
    torch.testing.assert_close(
        so.output["ps"].mean(dim=(-2, -1)), x["ps"].mean(dim=(-2, -1)), rtol=1e-6, atol=1e-4
    )
    assert bool((so.output["q_0"] >= 0).all()) and bool((so.output["q_1"] >= 0).all())
    assert bool((so.uncorrected["q_0"] < 0).any())  # the positivity fix had work to do


def test_step_without_corrector_returns_empty_uncorrected():
    step = make_step(with_corrector=False)
    so = step.step(_input())
    assert dict(so.uncorrected) == {}
    _, gen = hand_step(step.modules[0], _input())
    for n in OUT:
        torch.testing.assert_close(so.output[n], gen[n])


def test_plain_prediction_detaches_uncorrected():
    so = make_step().step(_input())  # default detach_uncorrected=True
    assert is_detached(so.uncorrected)
    assert not is_detached(so.output)  # the output keeps its graph


def test_detach_uncorrected_false_keeps_the_graph_through_the_correction():
    step = make_step()
    weight = next(step.parameters())
    x = _input()
    attached = step.step(x, detach_uncorrected=False)
    assert all(v.requires_grad for v in attached.uncorrected.values())
    penalty = sum(c.square().mean() for c in attached.corrections().values())
    (grad,) = torch.autograd.grad(penalty, weight)
    assert grad.abs().sum() > 0
    # detached, the same penalty has a different (wrong) gradient: the (C' - I) term is lost
    detached = step.step(x)
    penalty_d = sum(c.square().mean() for c in detached.corrections().values())
    (grad_d,) = torch.autograd.grad(penalty_d, weight)
    assert not torch.allclose(grad, grad_d)


def test_area_weighted_conservation():
    area = torch.linspace(0.5, 1.5, GRID[0]).unsqueeze(-1)  # (n_lat, 1)
    fix = ConservationCorrector(["ps"], area_weights=area)
    x = _input()
    gen = {"ps": x["ps"] + torch.randn_like(x["ps"])}
    out = fix(x, gen)
    torch.testing.assert_close(global_mean(out["ps"], area), global_mean(x["ps"], area))
    assert not torch.allclose(global_mean(gen["ps"], area), global_mean(x["ps"], area))


def test_force_positive_uses_the_shared_matcher():
    fix = ConservationCorrector(force_positive_names_and_prefixes=["q_"])
    assert fix.modified_names(OUT) == ["q_0", "q_1", "q_2"]
    fix = ConservationCorrector(force_positive_names_and_prefixes=["q_1"])
    assert fix.modified_names(OUT) == ["q_1"]


def test_residual_step_predicts_the_tendency():
    mod = module()
    step = ResidualStep(mod, make_step().normalizer, IN, OUT)
    x = _input()
    so = step.step(x)
    y = mod(torch.stack([(x[n] - MEANS[n]) / STDS[n] for n in IN], dim=1))
    for i, n in enumerate(OUT):
        torch.testing.assert_close(so.output[n], x[n] + y[:, i] * STDS[n])


def test_step_errors_name_the_variable():
    step = make_step()
    x = _input()
    del x["f"]
    with pytest.raises(ValueError, match=r"lacks \['f'\]"):
        step.step(x)
    norm = make_step().normalizer
    with pytest.raises(ValueError, match="no statistics for \\['z'\\]"):
        SingleModuleStep(module(), norm, [*IN, "z"], OUT)
    with pytest.raises(ValueError, match="conserve_global_mean_names has 'ps'"):
        SingleModuleStep(module(), norm, ["t", "f"], OUT, ConservationCorrector(["ps"]))
    with pytest.raises(ValueError, match="both conserved and forced positive"):
        ConservationCorrector(["q_0"], ["q_"])
