"""A syrupy extension for numeric snapshots that hold across torch versions
and CPUs.

Snapshots are JSON files under ``fixtures/snapshots/<test module>/``. Floats
are written with 7 significant digits; comparison is exact for keys, strings
and structure, and within :data:`RTOL` / :data:`ATOL` for numbers (float32
training runs differ in the last bits between torch builds and CPUs). A
drift beyond that fails with syrupy's line diff of the two JSON texts.
Update with ``pytest --snapshot-update``.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from syrupy.extensions.json import JSONSnapshotExtension

SNAPSHOT_ROOT = Path(__file__).resolve().parent.parent / "fixtures" / "snapshots"
RTOL = 1e-4
ATOL = 1e-7


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.7g}")
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_round(v) for v in value]
    return value


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=RTOL, abs_tol=ATOL)
    if isinstance(a, dict) and isinstance(b, dict):
        return list(a) == list(b) and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


class NumericJSONSnapshot(JSONSnapshotExtension):
    """JSON snapshots in ``fixtures/snapshots``, numbers compared with tolerance."""

    root: Path = SNAPSHOT_ROOT

    @classmethod
    def dirname(cls, *, test_location: Any) -> str:
        return str(cls.root / test_location.basename)

    def serialize(self, data: Any, **kwargs: Any) -> str:
        return json.dumps(_round(data), indent=2) + "\n"

    def matches(self, *, serialized_data: Any, snapshot_data: Any) -> bool:
        try:
            return _same(json.loads(serialized_data), json.loads(snapshot_data))
        except (TypeError, ValueError):
            return False
