"""TOML tables into checked dataclasses: the one validator behind recipes and export profiles.

Each key must be a field of the dataclass; each value must have the type of the field's default
(an int is accepted for a float; a bool is never taken for an int). A field whose metadata names
``types`` accepts any of them (a model size: a preset name or a table). Keys that are Python
keywords (``from``) fill the field of the same name with a trailing underscore. Every mistake is
one error naming the table and key, of the caller's error class.
"""

from __future__ import annotations

from dataclasses import MISSING, fields

from ekd_edge.errors import EkdError

# TOML keys that are Python keywords, and the field each one fills.
KEY_ALIASES = {"from": "from_"}


def build(cls, table, where: str, error: type[EkdError] = EkdError):
    """An instance of dataclass ``cls`` from the TOML ``table``, or ``error`` naming ``where``.key."""
    if not isinstance(table, dict):
        raise error(f"{where}: expected a table, got {type(table).__name__}")
    table = {KEY_ALIASES.get(key, key): value for key, value in table.items()}
    allowed = {f.name: f for f in fields(cls)}
    unknown = sorted(set(table) - set(allowed))
    if unknown:
        raise error(f"{where}: unknown key(s) {', '.join(unknown)} "
                    f"(allowed: {', '.join(name.rstrip('_') for name in allowed)})")
    values = {}
    for key, value in table.items():
        spec = allowed[key]
        shown = key.rstrip("_")
        if "types" in spec.metadata:
            if not isinstance(value, spec.metadata["types"]):
                names = " or ".join(t.__name__ for t in spec.metadata["types"])
                raise error(f"{where}.{shown}: expected {names}, got {value!r}")
            values[key] = value
            continue
        if spec.default is not MISSING:
            default = spec.default
        elif spec.default_factory is not MISSING:
            default = spec.default_factory()
        else:
            default = ""   # a required field: text
        expected = type(default)
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or isinstance(value, bool) != (expected is bool):
            raise error(f"{where}.{shown}: expected {expected.__name__}, got {value!r}")
        values[key] = value
    try:
        return cls(**values)
    except TypeError as exc:   # a required key is missing
        raise error(f"{where}: {exc}") from None
