"""The declared lower bounds are the tested ones: ``tox -e floor`` installs
exactly the floor of every runtime dependency of ``pyproject.toml``
(``constraints-floor.txt`` and the env's torch pin), so raising or lowering a
bound without the floor env following it fails here."""

from __future__ import annotations

import configparser
import re
from pathlib import Path

import pytest

tomllib = pytest.importorskip("tomllib")  # Python >= 3.11

REPO = Path(__file__).resolve().parents[1]


def declared_floors() -> dict[str, str]:
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    floors = {}
    for dep in deps:
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)>=([0-9.]+)", dep.replace(" ", ""))
        assert match, f"runtime dependency {dep!r} has no plain lower bound 'name>=X'"
        floors[match.group(1).lower()] = match.group(2)
    return floors


def pinned(text: str) -> dict[str, str]:
    return {
        m.group(1).lower(): m.group(2)
        for m in re.finditer(r"^([A-Za-z0-9_.-]+)==([0-9.]+)\s*$", text, re.M)
    }


def same_version(a: str, b: str) -> bool:
    """``2.8`` and ``2.8.0`` are the same release."""

    def norm(v: str) -> tuple[int, ...]:
        parts = [int(p) for p in v.split(".")]
        while parts and parts[-1] == 0:
            parts.pop()
        return tuple(parts)

    return norm(a) == norm(b)


def test_floor_env_installs_the_declared_floors() -> None:
    floors = declared_floors()
    assert set(floors) == {"torch", "dacite", "pytest", "hypothesis"}
    tox = configparser.ConfigParser(interpolation=None)
    tox.read(REPO / "tox.ini")
    env = tox["testenv:floor"]
    assert "constraints-floor.txt" in env["set_env"]
    installed = pinned((REPO / "constraints-floor.txt").read_text()) | pinned(env["deps"])
    for name, floor in floors.items():
        assert name in installed, f"tox -e floor does not pin {name}"
        assert same_version(installed[name], floor), (
            f"pyproject declares {name}>={floor} but tox -e floor installs {name}=={installed[name]}"
        )
