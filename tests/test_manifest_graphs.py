"""What a bundle's manifest ties together: each graph to the gates that verified it, and to the
variant the bundle claims. File hashes alone are recomputed by anyone who copies a file in."""

from __future__ import annotations

import json
import shutil

import pytest

from ekd_edge.cli import main
from ekd_edge.export.manifest import write_manifest
from ekd_edge.runtime.manifest import QUANTIZED_OPS, list_files, quantized_ops

GRAPH = "encoder_model.onnx"


@pytest.fixture(scope="module")
def bundles(tmp_path_factory, nano_checkpoint):
    """(fp32, int8) optimum-layout bundles of the same checkpoint, gates not run (they are not the point)."""
    from ekd_edge.export.onnx_export import export_bundle

    root = tmp_path_factory.mktemp("bundles")
    export_bundle(nano_checkpoint, root / "fp32", max_new_tokens=8)
    export_bundle(nano_checkpoint, root / "int8", quantize="int8", quant_arch="avx2", max_new_tokens=8)
    return root / "fp32", root / "int8"


def manifest_of(bundle):
    return json.loads((bundle / "manifest.json").read_text())


def float_graph_in_int8_bundle(bundles, tmp_path, edit=lambda manifest: None):
    """The int8 bundle with its encoder replaced by the fp32 one and the file list recomputed to match."""
    fp32, int8 = bundles
    bundle = tmp_path / "int8-edited"
    shutil.copytree(int8, bundle)
    shutil.copy(fp32 / GRAPH, bundle / GRAPH)
    manifest = manifest_of(bundle)
    manifest["files"] = list_files(bundle)
    edit(manifest)
    write_manifest(bundle, manifest)
    return bundle


def test_the_manifest_records_each_graph_the_gates_verified(bundles):
    fp32, int8 = bundles
    for bundle, quantized in ((fp32, False), (int8, True)):
        manifest = manifest_of(bundle)
        record = manifest["verified"]
        files = {f["path"]: f["sha256"] for f in manifest["files"]}
        assert sorted(record["graphs"]) == sorted(p for p in files if p.endswith(".onnx"))
        for path, facts in record["graphs"].items():
            assert facts["sha256"] == files[path]
            assert (facts["quantized_ops"] > 0) is quantized, (bundle.name, path)
        assert record["source_model_sha256"] == manifest["source"]["model_sha256"]
        assert record["parity"] == "not run" and record["quality_gate"] == "not run" and record["forced"] is False


def test_quantized_operators_are_counted_in_the_graph_itself(bundles):
    import onnx

    fp32, int8 = bundles
    ops = {node.op_type for node in onnx.load(str(int8 / GRAPH)).graph.node}
    assert ops & QUANTIZED_OPS and quantized_ops(int8 / GRAPH) == sum(
        node.op_type in QUANTIZED_OPS for node in onnx.load(str(int8 / GRAPH)).graph.node)
    assert quantized_ops(fp32 / GRAPH) == 0


@pytest.mark.parametrize("edit, needles", [
    # the file list rewritten: the verified record still names the graph the gates ran on
    (lambda m: None, [GRAPH, "not the graph the export's gates verified"]),
    # the record's hash rewritten too: the graph still lacks the quantised operators it had
    (lambda m: m["verified"]["graphs"][GRAPH].update(sha256=next(f["sha256"] for f in m["files"]
                                                                 if f["path"] == GRAPH)),
     [GRAPH, "0 quantised operators, but the graph the export verified had"]),
    # no record at all (a bundle from before it existed): the variant alone still refuses it
    (lambda m: m.pop("verified"), [GRAPH, "a float32 graph (no quantised operator)", "says int8"]),
])
def test_a_float32_graph_copied_into_an_int8_bundle_is_refused(bundles, tmp_path, capsys, edit, needles):
    from test_bad_input import fails_cleanly

    bundle = float_graph_in_int8_bundle(bundles, tmp_path, edit)
    fails_cleanly(capsys, tmp_path, ["translate", bundle, "Hello"], *needles)


def test_an_int8_bundle_relabelled_fp32_is_refused(bundles, tmp_path, capsys):
    from test_bad_input import fails_cleanly

    bundle = tmp_path / "relabelled"
    shutil.copytree(bundles[1], bundle)
    manifest = manifest_of(bundle)
    manifest.update(variant="fp32", verified={**manifest["verified"], "graphs": {}})
    write_manifest(bundle, manifest)
    fails_cleanly(capsys, tmp_path, ["translate", bundle, "Hello"], "a graph the export's gates did not verify")
    manifest.pop("verified")
    write_manifest(bundle, manifest)
    fails_cleanly(capsys, tmp_path, ["translate", bundle, "Hello"], "an int8 graph", "says fp32")


def test_untouched_bundles_load(bundles, capsys):
    for bundle in bundles:
        assert main(["translate", str(bundle), "Select the cell range."]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 2
