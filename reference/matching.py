"""The one name-and-prefix matcher, shared by every feature that selects
variables by name (pre-corrector exclusions, spatial masking).

Variables of 3D fields are named ``<name>_<level>`` with a decimal level
(``air_temperature_0``, ``air_temperature_1`` ...); 2D fields have plain names.
An entry is one of:

- a bare name ``x``: matches ``x`` and every level ``x_<digits>``;
- a prefix ``x_`` (trailing underscore): matches every level ``x_<digits>``,
  but not ``x`` itself;
- an explicit level ``x_<digits>``: matches exactly that name.

Entries are literal text: ``.``, ``+``, ``(`` and the like have no special
meaning. ``q`` matches ``q`` and ``q_3`` but never ``q2m`` or ``q_a``.
"""

from collections.abc import Iterable, Sequence


def _level_suffix(name: str, stem: str) -> bool:
    """True when ``name`` is ``stem`` followed by a non-empty run of digits."""
    if not name.startswith(stem):
        return False
    rest = name[len(stem) :]
    return rest.isascii() and rest.isdigit()


def _is_explicit_level(entry: str) -> bool:
    stem, sep, level = entry.rpartition("_")
    return bool(sep) and bool(stem) and level.isascii() and level.isdigit()


def entry_matches(entry: str, name: str) -> bool:
    """Whether one entry matches one variable name (rules in the module doc)."""
    if entry.endswith("_"):
        return _level_suffix(name, entry)
    if _is_explicit_level(entry):
        return name == entry
    return name == entry or _level_suffix(name, entry + "_")


class NameMatcher:
    """Matches variable names against a list of names and prefixes.

    Args:
        entries: names and prefixes, as described in the module docstring.
            Empty strings are rejected; duplicates are kept once. A bare
            string (not a list) is rejected with ``TypeError``: it would be
            read as its characters.
    """

    def __init__(self, entries: Iterable[str] = ()):
        if isinstance(entries, str | bytes):
            raise TypeError(
                f"The names and prefixes are the single string {entries!r}, which would be "
                f"read as its characters {list(entries)!r}; pass a list of strings, e.g. "
                f"[{entries!r}]."
            )
        entries = list(entries)
        for entry in entries:
            if not isinstance(entry, str) or entry in ("", "_"):
                raise ValueError(
                    f"Invalid name-or-prefix entry {entry!r}: use a variable name "
                    "('x'), a level prefix ('x_') or an explicit level ('x_3')."
                )
        self.entries: tuple[str, ...] = tuple(dict.fromkeys(entries))

    def __repr__(self) -> str:
        return f"NameMatcher({list(self.entries)!r})"

    def matches(self, name: str) -> bool:
        """Whether any entry matches ``name``."""
        return any(entry_matches(e, name) for e in self.entries)

    def select(self, names: Iterable[str]) -> list[str]:
        """The names that some entry matches, in the given order."""
        return [n for n in names if self.matches(n)]

    def unmatched(self, names: Sequence[str]) -> list[str]:
        """The entries that match none of ``names``, in entry order."""
        return [e for e in self.entries if not any(entry_matches(e, n) for n in names)]
