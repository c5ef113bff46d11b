"""The Android app's bundle, loaded exactly as its contract says.

android_demo/app/src/main/assets/ holds contract.json (read by the app's Kotlin code too) and
model/ (the one-file int8 model of the demo's final student with its manifest). These tests run
that very bundle with onnxruntime + onnxruntime-extensions, so the app and the tested model
cannot drift apart.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest

from ekd_edge.errors import BundleError
from ekd_edge.export.manifest import file_sha256
from ekd_edge.export.onefile import check_contract, contract_feeds, load_contract, onefile_session, verify_onefile

ASSETS = Path(__file__).resolve().parent.parent / "android_demo/app/src/main/assets"
CONTRACT = ASSETS / "contract.json"

# Short UI strings from the help corpus's domain and words a plausible German translation holds.
EXPECTED = {
    "Open the file.": ["Datei"],
    "Click OK to close the dialog.": ["OK", "Dialog"],
    "Select the cells.": ["Zellen"],
}


@pytest.fixture(scope="module")
def contract():
    return load_contract(CONTRACT)


@pytest.fixture(scope="module")
def bundle_dir(contract):
    return ASSETS / contract["model"]["dir"]


@pytest.fixture(scope="module")
def session(contract, bundle_dir):
    assert contract["model"]["custom_ops"] == "onnxruntime-extensions"
    return onefile_session(bundle_dir / contract["model"]["file"], threads=1, settings=contract.get("session"))


def test_contract_session_level_is_the_bundles(contract, bundle_dir):
    """The app sets the optimisation level from the contract; it must be the one the bundle was made for."""
    settings = verify_onefile(bundle_dir)["settings"]
    assert contract.get("session", {}).get("graph_optimization_level", "all") == settings["graph_optimization_level"]


def test_manifest_checksums_match_the_shipped_files(contract, bundle_dir):
    manifest = verify_onefile(bundle_dir)
    assert contract["model"]["manifest"] == "manifest.json"
    listed = {entry["path"]: entry for entry in manifest["files"]}
    model = bundle_dir / contract["model"]["file"]
    assert listed[contract["model"]["file"]]["sha256"] == file_sha256(model)
    assert listed[contract["model"]["file"]]["size"] == model.stat().st_size
    assert manifest["backend"] == "onefile" and manifest["variant"] == "onefile-int8"


def test_model_interface_is_the_contract(contract, session):
    check_contract(contract, session, label=str(CONTRACT))


def test_real_translations_with_contract_options(contract, session):
    texts = list(EXPECTED)
    feeds = contract_feeds(contract, texts)
    assert set(feeds) == {spec["name"] for spec in contract["inputs"]}
    outputs = session.run([spec["name"] for spec in contract["outputs"]], feeds)
    translations, token_ids = outputs
    assert len(translations) == len(texts) and token_ids.shape[0] == len(texts)
    assert token_ids.shape[1] <= contract["options"]["max_new_tokens"] + 1
    for text, translation in zip(texts, translations):
        assert translation != text
        assert all(word in translation for word in EXPECTED[text]), (text, translation)


@pytest.mark.parametrize("mutation", [
    ("inputs", 0, "name", "source_text"),
    ("inputs", 1, "dtype", "int64"),
    ("inputs", 2, "name", "beams"),
    ("outputs", 0, "name", "translations"),
    ("outputs", 1, "dtype", "int64"),
    ("inputs", 1, "shape", ["batch"]),
])
def test_a_changed_contract_is_refused(contract, session, tmp_path, mutation):
    kind, index, key, value = mutation
    changed = copy.deepcopy(contract)
    changed[kind][index][key] = value
    path = tmp_path / "contract.json"
    path.write_text(json.dumps(changed))
    with pytest.raises(BundleError, match=str(path)):
        check_contract(load_contract(path), session, label=str(path))


def test_a_tampered_bundle_is_refused(bundle_dir, tmp_path):
    import shutil

    copy_dir = tmp_path / "model"
    shutil.copytree(bundle_dir, copy_dir)
    with open(copy_dir / "model.onnx", "r+b") as fh:
        fh.seek(1000)
        byte = fh.read(1)
        fh.seek(1000)
        fh.write(bytes([byte[0] ^ 0xFF]))
    with pytest.raises(BundleError, match="sha256 differs"):
        verify_onefile(copy_dir)
