"""The Android app's contract with the one-file model: the interface the app relies on.

``android_demo/app/src/main/assets/contract.json`` names the model file, the inputs and outputs
(names, dtypes, shapes, in order) and the options the app passes. The app's Kotlin code reads it,
and tests/test_android_contract.py checks it against a real exported model with the exact
onnxruntime the app pins, so a change on either side fails in CI rather than on a phone.
"""

from __future__ import annotations

import json
from pathlib import Path

from ekd_edge.errors import BundleError

_ORT_TYPES = {"tensor(string)": "string", "tensor(int32)": "int32", "tensor(int64)": "int64",
              "tensor(float)": "float32"}


def load_contract(path: str | Path) -> dict:
    """The contract JSON (model location, input/output names, dtypes, shapes, options)."""
    path = Path(path)
    try:
        contract = json.loads(path.read_text())
    except FileNotFoundError:
        raise BundleError(f"{path}: contract file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: unreadable contract ({' '.join(str(exc).split())})") from None
    for key in ("model", "inputs", "outputs", "options"):
        if key not in contract:
            raise BundleError(f"{path}: contract has no {key!r}")
    return contract


def check_contract(contract: dict, session, label: str = "contract") -> None:
    """BundleError unless the session's inputs and outputs are exactly the contract's, in order."""
    for kind, actual in (("inputs", session.get_inputs()), ("outputs", session.get_outputs())):
        expected = contract[kind]
        if [e["name"] for e in expected] != [a.name for a in actual]:
            raise BundleError(f"{label}: {kind} {[e['name'] for e in expected]} differ from the model's "
                              f"{[a.name for a in actual]}")
        for spec, arg in zip(expected, actual):
            dtype = _ORT_TYPES.get(arg.type, arg.type)
            if spec["dtype"] != dtype:
                raise BundleError(f"{label}: {kind[:-1]} {spec['name']!r} is {dtype} in the model, "
                                  f"{spec['dtype']} in the contract")
            shape = [d if isinstance(d, int) else "dynamic" for d in arg.shape]
            wanted = [d if isinstance(d, int) else "dynamic" for d in spec["shape"]]
            if shape != wanted:
                raise BundleError(f"{label}: {kind[:-1]} {spec['name']!r} has shape {arg.shape} in the model, "
                                  f"{spec['shape']} in the contract")


def contract_feeds(contract: dict, texts: list[str]) -> dict:
    """Inputs for one call, typed as the contract says: texts plus the contract's options."""
    import numpy as np

    dtypes = {"string": object, "int32": np.int32, "int64": np.int64, "float32": np.float32}
    feeds = {}
    for spec in contract["inputs"]:
        if spec["dtype"] not in dtypes:
            raise BundleError(f"contract: input {spec['name']!r} has unsupported dtype {spec['dtype']!r}")
        value = list(texts) if spec["dtype"] == "string" else [contract["options"][spec["name"]]]
        feeds[spec["name"]] = np.array(value, dtype=dtypes[spec["dtype"]])
    return feeds
