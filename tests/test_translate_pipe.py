"""`ekd-edge translate` as a filter in a pipeline: each translation is written as its line arrives,
and a reader that stops early (`| head -1`) ends it quietly."""

from __future__ import annotations

import os
import select
import subprocess
import sys

ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
LINES = ["Select the cell range.", "Click OK.", "Choose Format - Cells."]


def read_line(stream, timeout: float) -> bytes | None:
    """One line from ``stream``, or None when none arrives within ``timeout`` seconds."""
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else None


def test_each_line_is_translated_as_it_arrives(nano_checkpoint):
    from ekd_edge.runtime.torch_engine import TorchTranslator

    expected = TorchTranslator(nano_checkpoint).translate(LINES)
    proc = subprocess.Popen([sys.executable, "-m", "ekd_edge", "translate", str(nano_checkpoint)],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=ENV)
    try:
        got = []
        for line in LINES:   # the next line is sent only once the previous one's translation is back
            proc.stdin.write(line.encode() + b"\n")
            proc.stdin.flush()
            got.append(read_line(proc.stdout, 120))
            assert got[-1] is not None, "no translation before the input ended: translate is not a filter"
        proc.stdin.close()
        assert proc.wait(60) == 0 and proc.stdout.read() == b""
        assert [g.decode().rstrip("\n") for g in got] == expected
    finally:
        proc.kill()
        proc.wait()


def test_a_reader_that_stops_early_ends_translate_quietly(tmp_path, nano_checkpoint):
    """`ekd-edge translate MODEL < file | head -1`: here the reader has gone before the first line is
    written, which is what head does to every line after its first."""
    source = tmp_path / "in.txt"
    source.write_text("\n".join(LINES * 20) + "\n")
    logs = tmp_path / "logs"
    with open(source, "rb") as stdin:
        proc = subprocess.Popen([sys.executable, "-m", "ekd_edge", "translate", str(nano_checkpoint)], stdin=stdin,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                env={**ENV, "EKD_EDGE_LOG_DIR": str(logs)})
        proc.stdout.close()   # the reader is gone
        err = proc.stderr.read().decode()
        assert proc.wait(120) == 0, err
    assert err == "" and not logs.exists()
