import pytest
import torch

from reference.masking import SpatialMasking
from reference.matching import NameMatcher

NAMES = ["q", "q_0", "q_1", "q_12", "q2m", "q_a", "q_", "t", "t_0", "t_1", "a.b", "a.b_0", "axb_0"]


@pytest.mark.parametrize(
    "entry, expected",
    [
        ("q", ["q", "q_0", "q_1", "q_12"]),
        ("q_", ["q_0", "q_1", "q_12"]),
        ("q_1", ["q_1"]),
        ("t_", ["t_0", "t_1"]),
        ("a.b", ["a.b", "a.b_0"]),  # '.' is literal: never matches axb_0
        ("a.b_", ["a.b_0"]),
        ("q2", []),
        ("q_1_", []),
    ],
)
def test_entry_rules(entry, expected):
    assert NameMatcher([entry]).select(NAMES) == expected


def test_regex_metacharacters_are_literal():
    names = ["x+(1)", "x+(1)_2", "xx(1)_2", "x"]
    assert NameMatcher(["x+(1)"]).select(names) == ["x+(1)", "x+(1)_2"]
    assert NameMatcher(["x.*"]).select(names) == []


def test_unmatched_reports_entries_in_order():
    m = NameMatcher(["zz", "q_", "nope_", "t_7"])
    assert m.unmatched(NAMES) == ["zz", "nope_", "t_7"]


@pytest.mark.parametrize("bad", ["", "_"])
def test_bad_entries_rejected(bad):
    with pytest.raises(ValueError, match="Invalid name-or-prefix entry"):
        NameMatcher([bad])


def test_spatial_masking_uses_the_same_matcher():
    mask = torch.tensor([[True, False]])
    data = {n: torch.ones(1, 1, 2) for n in ["q", "q_0", "q2m", "t_1"]}
    out = SpatialMasking(mask, exclude_names_and_prefixes=["q"], fill_value=-1.0)(data)
    assert torch.equal(out["q"], data["q"]) and torch.equal(out["q_0"], data["q_0"])
    expected = torch.tensor([[[1.0, -1.0]]])
    assert torch.equal(out["q2m"], expected) and torch.equal(out["t_1"], expected)
