"""The Android app's bundle, loaded exactly as its contract says.

android_demo/app/src/main/assets/ holds contract.json (read by the app's Kotlin code too) and
model/ (the one-file int8 model of the demo's final student with its manifest). These tests run
that very bundle with onnxruntime + onnxruntime-extensions, so the app and the tested model
cannot drift apart.

The app ships an older onnxruntime than the tests' environment (android_demo/app/build.gradle.kts).
The shipped model therefore also runs, on a few test sentences, with exactly the versions the app
pins, on x86-64 (a cached virtual environment) and on aarch64 (the cached Debian root under
qemu), and on an emulated AVX2-only x86 core, each required to decode the token ids of the
current runtime on this machine. `python -m ekd_edge.bench.arm ensure` (run by `make test`)
builds the runtimes; with CI set, a runtime that is missing fails these tests instead of skipping them.
"""

from __future__ import annotations

import copy
import json
import re
import sys
from pathlib import Path

import pytest

from conftest import needs
from ekd_edge.bench.arm import (
    APP_EXTENSIONS,
    APP_ONNXRUNTIME,
    AVX2_CPU,
    WHEELS,
    ArmRoot,
    X86Env,
    X86Python,
    agreement,
    greedy_ids,
)
from ekd_edge.errors import BundleError
from ekd_edge.hashing import file_sha256
from ekd_edge.runtime.app_contract import check_contract, contract_feeds, load_contract
from ekd_edge.runtime.onefile_engine import onefile_session, verify_onefile

ASSETS = Path(__file__).resolve().parent.parent / "android_demo/app/src/main/assets"
CONTRACT = ASSETS / "contract.json"
GRADLE = ASSETS.parents[2] / "build.gradle.kts"
# test-split sentences for the runtime comparisons: exported with int8 weights (before the uint8
# rewrite of portable numerics), the app's model decoded 6 of these 8 to other tokens on qemu's
# Haswell core than on an AVX-512 VNNI host
CROSS_SENTENCES = 8

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


def test_shipped_model_multiplies_uint8_weights(contract, bundle_dir):
    """Portable int8: every MatMulInteger weight is uint8 (exact on every CPU; int8 weights
    saturate on x86 without VNNI), and the manifest records the rewrite."""
    import onnx

    manifest = verify_onefile(bundle_dir)
    assert manifest["settings"]["numerics"] == "portable"
    assert all(counts["MatMulInteger"] > 0 for counts in manifest["portable"].values())
    model = onnx.load(str(bundle_dir / contract["model"]["file"]))
    weights = {t.name: t.data_type for t in model.graph.initializer}
    types = set()

    def walk(graph):
        for node in graph.node:
            if node.op_type == "MatMulInteger" and node.input[1] in weights:
                types.add(onnx.TensorProto.DataType.Name(weights[node.input[1]]))
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)

    walk(model.graph)
    assert types == {"UINT8"}


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


# --------------------------------------------------------------------------------------------
# The runtime the app pins, and other CPUs


def _require(ready: bool, what: str) -> None:
    needs(ready, f"{what} is not built (`python -m ekd_edge.bench.arm ensure`, which `make test` runs, builds it)")


@pytest.fixture(scope="module")
def cross_texts():
    from ekd_edge.data.corpus import load_corpus

    return load_corpus("lo-help-en-de").split("test").src[:CROSS_SENTENCES]


@pytest.fixture(scope="module")
def reference_run(contract, bundle_dir, cross_texts):
    """The shipped model on this machine with the tests' onnxruntime, at the app's settings."""
    return greedy_ids(None, bundle_dir, cross_texts, max_new_tokens=contract["options"]["max_new_tokens"])


def _same_tokens(reference: dict, other: dict, label: str) -> None:
    result = agreement(reference["ids"], other["ids"])
    assert result["rate"] == 1.0, f"{label}: sentences {result['differ']} decode to other token ids"
    assert other["translations"] == reference["translations"]
    assert other["graph_optimization_level"].endswith("ORT_ENABLE_BASIC")


def test_checks_run_the_runtime_the_app_pins():
    gradle = GRADLE.read_text()
    pins = dict(re.findall(r'"com\.microsoft\.onnxruntime:(onnxruntime(?:-extensions)?-android):([^"]+)"', gradle))
    assert pins == {"onnxruntime-android": APP_ONNXRUNTIME, "onnxruntime-extensions-android": APP_EXTENSIONS}, (
        f"{GRADLE} pins {pins}; ekd_edge/bench/arm.py checks onnxruntime {APP_ONNXRUNTIME} / extensions "
        f"{APP_EXTENSIONS}: change both together")
    assert f"onnxruntime=={APP_ONNXRUNTIME}" in WHEELS and f"onnxruntime-extensions=={APP_EXTENSIONS}" in WHEELS


def test_app_runtime_on_x86_decodes_the_tested_tokens(contract, bundle_dir, cross_texts, reference_run):
    env = X86Env()
    _require(env.is_ready(), f"the x86 environment with {' '.join(WHEELS)} ({env.path})")
    runner = env.runner()
    assert runner.versions() == {"machine": "x86_64", "onnxruntime": APP_ONNXRUNTIME,
                                 "onnxruntime_extensions": APP_EXTENSIONS}
    run = greedy_ids(runner, bundle_dir, cross_texts, max_new_tokens=contract["options"]["max_new_tokens"],
                     timeout=300)
    assert run["onnxruntime"] == APP_ONNXRUNTIME
    _same_tokens(reference_run, run, f"onnxruntime {APP_ONNXRUNTIME} (x86)")


@pytest.mark.slow
def test_app_runtime_on_aarch64_decodes_the_tested_tokens(contract, bundle_dir, cross_texts, reference_run):
    root = ArmRoot()
    _require(root.is_ready(), f"the aarch64 root with {' '.join(WHEELS)} ({root.path}, and qemu-aarch64-static)")
    assert root.versions() == {"machine": "aarch64", "onnxruntime": APP_ONNXRUNTIME,
                               "onnxruntime_extensions": APP_EXTENSIONS}
    run = greedy_ids(root, bundle_dir, cross_texts, max_new_tokens=contract["options"]["max_new_tokens"],
                     timeout=600)
    assert run["machine"] == "aarch64" and run["onnxruntime"] == APP_ONNXRUNTIME
    _same_tokens(reference_run, run, f"onnxruntime {APP_ONNXRUNTIME} (aarch64, qemu {root.cpu})")


@pytest.mark.slow
def test_avx2_x86_decodes_the_tested_tokens(contract, bundle_dir, cross_texts, reference_run):
    """An x86 core without VNNI or AVX-512 (qemu's Haswell) runs other int8 kernels than this host."""
    runner = X86Python(sys.executable, cpu=AVX2_CPU)
    _require(runner.is_ready(), "qemu-x86_64-static (apt-get install qemu-user-static)")
    run = greedy_ids(runner, bundle_dir, cross_texts, max_new_tokens=contract["options"]["max_new_tokens"],
                     timeout=600)
    _same_tokens(reference_run, run, f"x86 {AVX2_CPU} (qemu)")
