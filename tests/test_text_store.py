"""The on-disk text store keeps exactly what load_parallel keeps, says exactly what it says about bad
lines, and holds nothing of the corpus in memory."""

from __future__ import annotations

import lzma
import tracemalloc

import numpy as np
import pytest

from ekd_edge.data.corpus import load_corpus, load_parallel
from ekd_edge.data.text_store import build_text_store
from ekd_edge.errors import CorpusError


@pytest.mark.parametrize("corpus", ["lo-help-en-de", "bible-en-es"])
def test_the_bundled_train_split_comes_back_as_load_parallel_reads_it(corpus, tmp_path):
    src, tgt = load_corpus(corpus).files["train"]
    want = load_parallel(src, tgt)
    got = build_text_store(src, tgt, tmp_path / "store")
    assert len(got) == len(want)
    assert list(got.src) == want.src and list(got.tgt) == want.tgt
    assert got.fingerprint() == want.fingerprint()
    assert got.head(500).fingerprint() == want.head(500).fingerprint()
    assert got.src[-1] == want.src[-1] and got.tgt[7:9] == want.tgt[7:9]


def write(path, lines: bytes):
    path.write_bytes(lzma.compress(lines) if path.suffix == ".xz" else lines)
    return path


@pytest.mark.parametrize("src, tgt", [
    (b"\xef\xbb\xbfa\r\nb\n\nc\n", b"x\ny\n \nz"),               # BOM, CRLF, a blank pair, no final newline
    (b"one\ntwo\n", b"eins\nzwei\ndrei\n"),                      # not aligned
    (b"one\nt\xffwo\n", b"eins\nzwei\n"),                        # invalid UTF-8 on line 2
    (b"one\n\n", b"eins\nzwei\n"),                               # empty source line
])
@pytest.mark.parametrize("suffix", ["", ".xz"])
@pytest.mark.parametrize("empty", ["error", "skip"])
def test_the_same_pairs_and_the_same_message_as_load_parallel(tmp_path, src, tgt, suffix, empty):
    s, t = write(tmp_path / f"a.en{suffix}", src), write(tmp_path / f"a.de{suffix}", tgt)
    try:
        want = load_parallel(s, t, empty=empty)
    except CorpusError as err:
        with pytest.raises(CorpusError) as got:
            build_text_store(s, t, tmp_path / "store", empty=empty)
        assert str(got.value) == str(err)
        assert not (tmp_path / "store").exists()          # nothing half-written
        return
    got = build_text_store(s, t, tmp_path / "store", empty=empty)
    assert (list(got.src), list(got.tgt), got.skipped_empty) == (want.src, want.tgt, want.skipped_empty)


def test_a_limit_keeps_the_first_pairs_but_checks_every_line(tmp_path):
    s = write(tmp_path / "a.en", b"one\ntwo\nthree\n\xff\n")
    t = write(tmp_path / "a.de", b"eins\nzwei\ndrei\nvier\n")
    with pytest.raises(CorpusError, match=r"a.en:4: invalid UTF-8"):
        build_text_store(s, t, tmp_path / "store", limit=2)


def test_building_holds_no_corpus_in_memory(tmp_path):
    """200,000 pairs (about 9 MB of text) go through a few hundred kB of Python memory at most."""
    line = "Click the icon to open the dialog that sets the options of this paragraph style, number {}\n"
    s = tmp_path / "big.en"
    t = tmp_path / "big.de"
    s.write_text("".join(line.format(i) for i in range(200_000)))
    t.write_text("".join(line.upper().format(i) for i in range(200_000)))
    tracemalloc.start()
    store = build_text_store(s, t, tmp_path / "store")
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert len(store) == 200_000 and store.src[123_456] == line.format(123_456).strip()
    # a list of the pairs' strings would take > 30 MB; the offsets array (3.2 MB) is the one
    # thing that grows with the corpus
    assert peak < 8 * 2**20, peak


def test_offsets_streamed_to_disk_equal_the_running_sum_across_buffer_flushes(tmp_path):
    """Three and a half buffers' worth of lengths: a flush that drops, repeats or reorders a buffer
    (or a last partial buffer left unwritten) changes the file."""
    import numpy as np

    from ekd_edge.data.flat import OffsetsWriter

    lengths = np.random.default_rng(0).integers(0, 300, size=int(3.5 * OffsetsWriter.BUFFER))
    writer = OffsetsWriter(tmp_path / "offsets.npy")
    for n in lengths.tolist():
        writer.add(n)
    writer.close()
    got = np.load(tmp_path / "offsets.npy")
    assert got.dtype == np.int64 and np.array_equal(got, np.concatenate([[0], np.cumsum(lengths)]))
    assert writer.position == int(lengths.sum()) and sorted(p.name for p in tmp_path.iterdir()) == ["offsets.npy"]


def test_file_array_reads_what_numpy_wrote_in_short_reads_and_after_a_copy(tmp_path, monkeypatch):
    """pread may return fewer bytes than asked (it stops at about 2 GiB): the array reads on until it has
    them all; a pickled or copied array opens the file itself, so one copy's end never closes the other's."""
    import copy
    import os
    import pickle

    import numpy as np

    from ekd_edge.data import flat

    values = np.arange(-50, 1000, dtype=np.int64) * 7
    np.save(tmp_path / "v.npy", values)
    (tmp_path / "raw.bin").write_bytes(b"hello, world")
    stored, raw = flat.FileArray(tmp_path / "v.npy"), flat.FileArray(tmp_path / "raw.bin", dtype=np.uint8)
    real_pread = os.pread
    monkeypatch.setattr(flat.os, "pread", lambda fd, n, at: real_pread(fd, min(n, 13), at))
    assert np.array_equal(stored[:], values) and np.array_equal(stored[100:333], values[100:333])
    assert stored[-1] == values[-1] and stored[0] == values[0] and len(stored) == len(values)
    assert raw[:].tobytes() == b"hello, world" and raw[7:].tobytes() == b"world"
    monkeypatch.undo()
    for other in (pickle.loads(pickle.dumps(stored)), copy.copy(stored)):
        del other   # closes the copy's own descriptor
    assert np.array_equal(stored[10:20], values[10:20])
    assert pickle.loads(pickle.dumps(raw))[:5].tobytes() == b"hello"


def test_ragged_rows_are_picked_cut_interleaved_and_replaced_as_lists_would_be():
    """Expected values written out by hand; an off-by-one in a start, a cut that drops the last id
    instead of keeping it, or an interleave that swaps sides fails here."""
    from ekd_edge.data.flat import Ragged

    rows = Ragged.from_lists([[1, 2, 3], [4], [5, 6, 7, 8, 9], [10, 11]])
    assert rows.ids.dtype == np.int32 and rows.tolist() == [[1, 2, 3], [4], [5, 6, 7, 8, 9], [10, 11]]
    assert rows.row_of(np.array([0, 2, 3, 4, 8, 9, 10])).tolist() == [0, 0, 1, 2, 2, 3, 3]
    assert rows.take(np.array([True, False, True, True])).tolist() == [[1, 2, 3], [5, 6, 7, 8, 9], [10, 11]]
    assert rows.truncated(3).tolist() == [[1, 2, 3], [4], [5, 6, 9], [10, 11]]
    assert rows.appended(0).tolist() == [[1, 2, 3, 0], [4, 0], [5, 6, 7, 8, 9, 0], [10, 11, 0]]
    assert rows.with_rows({1: [40, 41, 42], 3: []}).tolist() == [[1, 2, 3], [40, 41, 42], [5, 6, 7, 8, 9], []]
    other = Ragged.from_lists([[-1], [-2, -3], [], [-4]])
    sides = rows.interleaved(other)
    assert sides.tolist() == [[1, 2, 3], [-1], [4], [-2, -3], [5, 6, 7, 8, 9], [], [10, 11], [-4]]
    assert sides.lengths.tolist() == [3, 1, 1, 2, 5, 0, 2, 1]
