"""Meta-tests of the assertion helpers: a failure message names the check
and property, the inputs, expected vs actual, and a diagnosis when the actual
value matches a known wrong answer."""

from __future__ import annotations

import pytest
import torch

from conformance.assertions import (
    assert_close,
    assert_no_error,
    assert_raises_naming,
    current_check,
)

INPUTS = {"case": "case-x", "step": 3}


def test_assert_close_passes_within_tolerance() -> None:
    assert_close(
        torch.tensor(1.0, dtype=torch.float32),
        torch.tensor(1.0 + 1e-7, dtype=torch.float64),
        prop="p",
        quantity="q",
        inputs=INPUTS,
    )


def test_assert_close_message_names_everything() -> None:
    with pytest.raises(AssertionError) as info:
        assert_close(
            torch.tensor(0.5),
            torch.tensor(2.0, dtype=torch.float64),
            prop="corrector regularization penalty",
            quantity="regularization",
            inputs=INPUTS,
            meaning="mean over corrected channels",
            alternatives={"the diluted mean": torch.tensor(0.5, dtype=torch.float64)},
        )
    message = str(info.value)
    assert message.splitlines()[0] == current_check()
    assert "test_conformance_assertions.py::test_assert_close_message_names_everything" in message
    assert "property: corrector regularization penalty" in message
    assert "regularization differs from the expected value" in message
    assert "inputs:   case=case-x, step=3" in message
    assert "expected: 2 (mean over corrected channels)" in message
    assert "actual:   0.5" in message
    assert 'diagnosis: actual equals "the diluted mean"' in message


def test_assert_close_reports_none_and_shape() -> None:
    with pytest.raises(AssertionError, match="regularization is None"):
        assert_close(None, torch.tensor(1.0), prop="p", quantity="regularization", inputs=INPUTS)
    with pytest.raises(AssertionError, match=r"has shape \(2,\), expected \(\)"):
        assert_close(torch.ones(2), torch.tensor(1.0), prop="p", quantity="x", inputs=INPUTS)


def test_assert_raises_naming() -> None:
    def bad() -> None:
        raise ValueError("target_step has no 'q_1'")

    err = assert_raises_naming(
        bad, prop="p", what="w", inputs=INPUTS, must_mention=["q_1", "target"]
    )
    assert isinstance(err, ValueError)
    with pytest.raises(AssertionError, match=r"does not mention \['output'\]"):
        assert_raises_naming(bad, prop="p", what="w", inputs=INPUTS, must_mention=["output"])
    with pytest.raises(AssertionError, match="nothing was raised"):
        assert_raises_naming(lambda: None, prop="p", what="w", inputs=INPUTS, must_mention=[])


def test_assert_raises_naming_rejects_internal_assertions_and_wrong_types() -> None:
    def internal() -> None:
        raise AssertionError("shapes")

    with pytest.raises(AssertionError, match="got an AssertionError, not a clear error"):
        assert_raises_naming(internal, prop="p", what="w", inputs=INPUTS, must_mention=[])

    def key_error() -> None:
        raise KeyError("q_1")

    with pytest.raises(AssertionError, match="raised the wrong exception type"):
        assert_raises_naming(
            key_error, prop="p", what="w", inputs=INPUTS, must_mention=[], exception=ValueError
        )


def test_assert_no_error_reports_the_exception() -> None:
    def boom() -> None:
        raise RuntimeError("Trying to backward through the graph a second time")

    with pytest.raises(AssertionError, match="total.backward\\(\\) raised") as info:
        assert_no_error(boom, prop="p", what="total.backward()", inputs=INPUTS)
    assert "RuntimeError: Trying to backward through the graph a second time" in str(info.value)
    assert assert_no_error(lambda: 7, prop="p", what="w", inputs=INPUTS) == 7
