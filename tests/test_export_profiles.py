"""Export profiles, the BLEU quality gate, int8 options and the mobile .ort format, end to end on
tiny real Marian checkpoints (nothing mocked)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ekd_edge.errors import BundleError
from ekd_edge.export.onnx_export import export_bundle
from ekd_edge.errors import ProfileError
from ekd_edge.export.profiles import FORMATS, load_profile, parse_profile, run_export
from ekd_edge.export.prune import PruneSettings, prune_checkpoint
from ekd_edge.host import int8_arch

PACKAGED = Path(__file__).resolve().parent.parent / "ekd_edge" / "profiles"
REPO_PROFILES = Path(__file__).resolve().parent.parent / "export"
# every profile the package ships, read from the folder, so a new one cannot be left unparsed
SHIPPED = sorted({p.stem for p in PACKAGED.glob("*.toml")} | {p.stem for p in REPO_PROFILES.glob("*.toml")})


# tiny models gain nothing from threads, and on a busy 2-core machine two threads can be 50x slower
pytestmark = pytest.mark.usefixtures("single_torch_thread")


@pytest.fixture(scope="module")
def self_references(nano_checkpoint, lo_valid):
    """Validation sources with the checkpoint's own greedy translations as references: the
    checkpoint scores BLEU 100, so any real loss of quality in an export shows up as a drop."""
    from ekd_edge.runtime.torch_engine import TorchTranslator

    src = lo_valid.src[:30]
    return src, TorchTranslator(nano_checkpoint).translate(src, max_new_tokens=24)


@pytest.mark.parametrize("name", SHIPPED)
def test_shipped_profiles_parse(name):
    profile = load_profile(name)
    assert profile.name == name and profile.format in FORMATS
    # every profile proves itself: a BLEU gate, or (one-file, which has none) token parity
    assert profile.gate.quality_sentences > 0 or profile.gate.parity_sentences > 0
    assert profile.gate.max_bleu_drop >= 0


def test_packaged_profiles_are_all_listed():
    assert {"cpu-x86", "arm64", "android", "android-app", "onefile-x86", "ct2-int8"} <= set(SHIPPED)


@pytest.mark.parametrize("machine, flags, expected", [
    ("x86_64", {"avx512_vnni": True, "avx2": True}, "avx512_vnni"),
    ("x86_64", {"avx512_vnni": False, "avx2": True}, "avx2"),      # an AVX2-only EPYC
    ("aarch64", {"asimddp": True}, "arm64"),
])
def test_int8_target_follows_the_host(machine, flags, expected):
    assert int8_arch(machine, flags) == expected


def test_host_profiles_resolve_to_this_machine_and_fixed_ones_do_not(monkeypatch):
    import ekd_edge.host as host

    monkeypatch.setattr(host, "cpu_flags", lambda names=host.INT8_FLAGS: {"avx512_vnni": False, "avx2": True})
    monkeypatch.setattr(host.platform, "machine", lambda: "x86_64")
    x86 = load_profile("cpu-x86")
    assert x86.quantize.arch == "avx2"             # settled at load, recorded in the manifest as built
    onefile = load_profile("onefile-x86")
    assert (onefile.quantize.arch, onefile.quantize.kernel) == ("avx2", "blockwise")
    assert load_profile("arm64").quantize.arch == "arm64"     # a profile naming its target keeps it
    monkeypatch.setattr(host, "cpu_flags", lambda names=host.INT8_FLAGS: {"avx512_vnni": True, "avx2": True})
    assert load_profile("cpu-x86").quantize.arch == "avx512_vnni"


def test_profile_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('format = "onnx"\n[quantize]\nmode = "int8"\nbits = 4\n')
    with pytest.raises(ProfileError, match=r"bad.toml \[quantize\]: unknown key\(s\) bits"):
        load_profile(bad)
    with pytest.raises(ProfileError, match="format 'tflite'"):
        parse_profile({"format": "tflite"}, "x.toml")
    with pytest.raises(ProfileError, match="not found"):
        load_profile("no-such-profile")


def test_failing_quality_gate_refuses_the_bundle_unless_forced(nano_checkpoint, lo_valid, self_references,
                                                               tmp_path):
    # A heavily pruned model (no recovery) really translates worse than the checkpoint it came from.
    prune_checkpoint(nano_checkpoint, tmp_path / "pruned", PruneSettings(ffn_keep=0.1), lo_valid)
    out = tmp_path / "bundle"
    with pytest.raises(BundleError) as info:
        export_bundle(tmp_path / "pruned", out, quality_data=self_references, quality_reference=nano_checkpoint,
                      max_bleu_drop=1.0, max_new_tokens=24)
    message = str(info.value)
    assert "quality gate failed" in message and "checkpoint 100.00" in message and "allowed 1.00" in message
    assert "\n" not in message and not out.exists()

    manifest = export_bundle(tmp_path / "pruned", out, quality_data=self_references,
                             quality_reference=nano_checkpoint, max_bleu_drop=1.0, max_new_tokens=24, force=True)
    gate = json.loads((out / "manifest.json").read_text())["quality_gate"]
    assert gate == manifest["quality_gate"] and gate["forced"] is True and gate["status"] == "failed"
    assert gate["bleu_drop"] > 1.0


def test_int8_options_and_mobile_format(nano_checkpoint, self_references, tmp_path):
    import onnx
    import onnxruntime as ort

    from ekd_edge.runtime import load_translator

    manifest = export_bundle(nano_checkpoint, tmp_path / "b", quantize="int8", quant_arch="arm64",
                             per_channel=False, keep_fp32=("lm_head",), quality_data=self_references,
                             max_bleu_drop=100.0, max_new_tokens=24, mobile="arm")
    assert manifest["quantization"] == {"per_channel": False, "keep_fp32": ["lm_head"]}
    assert manifest["quality_gate"]["status"] == "passed"
    graph = onnx.load(str(tmp_path / "b" / "decoder_model_merged.onnx"))
    ops = {}

    def walk(g):
        for node in g.node:
            ops.setdefault(node.name, set()).add(node.op_type)
            for attr in node.attribute:
                if attr.type == onnx.AttributeProto.GRAPH:
                    walk(attr.g)

    walk(graph.graph)
    assert ops["/lm_head/MatMul"] == {"MatMul"}  # left in fp32
    assert any("MatMulInteger" in o or "DynamicQuantizeMatMul" in o for s in ops.values() for o in s)
    mobile = manifest["mobile"]
    assert set(mobile["ort_files"]) == {"encoder_model.ort", "decoder_model_merged.ort"}
    operators = (tmp_path / "b" / "required_operators.config").read_text()
    assert "ai.onnx" in operators and "MatMul" in operators
    session = ort.InferenceSession(str(tmp_path / "b" / "encoder_model.ort"), providers=["CPUExecutionProvider"])
    assert [i.name for i in session.get_inputs()] == ["input_ids", "attention_mask"]
    assert load_translator(tmp_path / "b").translate(["Click OK."], max_new_tokens=16)


def test_cli_export_with_a_profile(nano_checkpoint, tmp_path, capsys):
    from ekd_edge.cli import main

    profile = tmp_path / "edge.toml"
    profile.write_text('description = "test"\nformat = "ct2"\n[quantize]\nmode = "int8"\n'
                       '[gate]\nparity_sentences = 0\nquality_sentences = 10\nmax_bleu_drop = 100.0\n')
    assert main(["export", str(nano_checkpoint), "--out", str(tmp_path / "out"), "--profile", str(profile)]) == 0
    manifest = json.loads((tmp_path / "out" / "manifest.json").read_text())
    assert manifest["backend"] == "ct2" and manifest["profile"]["name"] == "edge"
    assert manifest["quality_gate"]["sentences"] == 10
    # an impossible gate on the command line: refused with exit status 2 and one line, nothing replaced
    assert main(["export", str(nano_checkpoint), "--out", str(tmp_path / "out2"), "--profile", str(profile),
                 "--max-bleu-drop", "-1"]) == 2
    assert not (tmp_path / "out2").exists()


def test_run_export_prunes_before_exporting(nano_checkpoint, tmp_path):
    profile = parse_profile({"format": "onnx", "prune": {"ffn_keep": 0.5, "importance_sentences": 16},
                             "gate": {"parity_sentences": 10, "quality_sentences": 10, "max_bleu_drop": 100.0}},
                            "inline.toml")
    manifest = run_export(nano_checkpoint, tmp_path / "pruned-bundle", profile)
    assert manifest["pruning"]["params_after"] < manifest["pruning"]["params_before"]
    assert manifest["quality_gate"]["reference"] == str(nano_checkpoint)
    config = json.loads((tmp_path / "pruned-bundle" / "config.json").read_text())
    assert config["encoder_ffn_dim"] == 32
    assert not list(tmp_path.glob(".pruned-bundle.*"))  # scratch removed
