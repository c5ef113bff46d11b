"""A training split kept on disk instead of in Python strings: read, checked and fingerprinted in
one streaming pass, then read back a pair at a time (pread, nothing kept resident).

``load_parallel`` (corpus.py) holds both sides of a split as lists of ``str``: about 0.5 KB of
memory per pair, 6 GB at 10⁷ pairs. ``build_text_store`` applies exactly its checks (invalid UTF-8,
unaligned files, empty pairs: the same ``file:line`` messages) while reading the two files chunk by
chunk, and writes the kept pairs' UTF-8 bytes to one file:

    DIR/text.bin      the kept pairs' bytes: pair i's source, then its target
    DIR/offsets.npy   int64 [2·pairs + 1]: pair i's source is text.bin[offsets[2i] : offsets[2i+1]]
    DIR/meta.json     pairs, empty pairs skipped, the fingerprint (the one ParallelText computes),
                      the files read

``MappedText`` reads that back with ParallelText's interface (``src[i]``, ``tgt[i]``, ``len``,
``head``, ``fingerprint()``), decoding a pair only when it is asked for.
"""

from __future__ import annotations

import hashlib
import json
import lzma
import os
import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from ekd_edge.data.corpus import EMPTY_POLICIES, arriving_lines
from ekd_edge.data.flat import FileArray, OffsetsWriter, PairSide
from ekd_edge.errors import CorpusError
from ekd_edge.files import publish_dir, staging_dir

_READ_BATCH = 4096   # lines decoded at a time


def _open(path: Path):
    try:
        return lzma.open(path, "rb") if path.suffix == ".xz" else open(path, "rb")
    except FileNotFoundError:
        raise CorpusError(f"{path}: file not found") from None
    except OSError as exc:
        raise CorpusError(f"{path}: cannot read ({exc})") from None


def _lines(path: Path) -> Iterator[str]:
    with _open(path) as fh:
        try:
            for _, batch in arriving_lines(fh, str(path), _READ_BATCH):
                yield from batch
        except (OSError, lzma.LZMAError) as exc:
            raise CorpusError(f"{path}: cannot read ({exc})") from None


def iter_pairs(src_path: str | Path, tgt_path: str | Path, empty: str = "error") -> Iterator[tuple[str, str] | None]:
    """The stripped pairs of two aligned files, as ``load_parallel`` keeps them; ``None`` for a pair
    skipped as empty (``empty="skip"``). Errors are load_parallel's, raised where they are met."""
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"empty must be one of {EMPTY_POLICIES}, not {empty!r}")
    src_path, tgt_path = Path(src_path), Path(tgt_path)
    sources, targets = _lines(src_path), _lines(tgt_path)
    number = 0
    while True:
        s, t = next(sources, None), next(targets, None)
        if s is None or t is None:
            if s is None and t is None:
                return
            # one file ended first: count the other's remaining lines for the message
            n_src = number + (0 if s is None else 1 + sum(1 for _ in sources))
            n_tgt = number + (0 if t is None else 1 + sum(1 for _ in targets))
            raise CorpusError(f"{src_path}: {n_src} lines but {tgt_path} has {n_tgt}: the files are not aligned "
                              f"(first line without a partner: {number + 1})")
        number += 1
        s, t = s.strip(), t.strip()
        if not s or not t:
            if empty == "skip":
                yield None
                continue
            bad = src_path if not s else tgt_path
            raise CorpusError(f"{bad}:{number}: empty line (use empty='skip' to drop such pairs)")
        yield s, t


def build_text_store(src_path: str | Path, tgt_path: str | Path, out_dir: str | Path, empty: str = "error",
                     limit: int | None = None) -> "MappedText":
    """Check every line of the two files and store the first ``limit`` kept pairs (all by default)
    in ``out_dir``, built in a staging directory and renamed into place; returns it opened. An
    existing finished store is opened as it is (its name should key the files' contents)."""
    out_dir = Path(out_dir)
    if (out_dir / "meta.json").is_file():
        return MappedText.open(out_dir)
    new_parent = not out_dir.parent.exists()
    began = time.perf_counter()
    tmp = staging_dir(out_dir)
    try:
        # offsets go to disk as they come: nothing held in memory grows with the corpus
        digest, offsets, skipped, kept = hashlib.sha256(), OffsetsWriter(tmp / "offsets.npy"), 0, 0
        with open(tmp / "text.bin", "wb") as out:
            for pair in iter_pairs(src_path, tgt_path, empty):   # every line is checked, kept or not
                if pair is None:
                    skipped += 1
                    continue
                if limit is not None and kept >= limit:
                    continue
                s, t = pair
                digest.update(s.encode() + b"\t" + t.encode() + b"\n")
                for side in (s.encode(), t.encode()):
                    out.write(side)
                    offsets.add(len(side))
                kept += 1
            out.flush()
            os.fsync(out.fileno())
        offsets.close()
        meta = {"pairs": kept, "skipped_empty": skipped, "fingerprint": digest.hexdigest()[:16],
                "src": str(src_path), "tgt": str(tgt_path), "empty": empty, "limit": limit,
                "seconds": round(time.perf_counter() - began, 2)}   # reading, checking, hashing, writing
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
        publish_dir(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        if new_parent and not any(out_dir.parent.iterdir()):   # a bad corpus leaves no trace
            out_dir.parent.rmdir()
        raise
    return MappedText.open(out_dir)


def _text(values: np.ndarray) -> str:
    return values.tobytes().decode("utf-8")


class MappedText:
    """A text store opened for reading on demand, with ParallelText's interface."""

    def __init__(self, directory: Path, data: np.ndarray, offsets: np.ndarray, meta: dict, n: int | None = None):
        self.directory, self.meta = directory, meta
        self._data, self._offsets = data, offsets
        self._n = meta["pairs"] if n is None else n
        whole = meta.get("fingerprint") if n is None or n == meta["pairs"] else None
        self.src = PairSide(data, offsets, 0, _text, self._n, fingerprint=whole and f"{whole}:src")
        self.tgt = PairSide(data, offsets, 1, _text, self._n, fingerprint=whole and f"{whole}:tgt")
        self.src_path, self.tgt_path = meta["src"], meta["tgt"]
        self.skipped_empty = meta["skipped_empty"]

    @classmethod
    def open(cls, directory: str | Path) -> "MappedText":
        directory = Path(directory)
        meta = json.loads((directory / "meta.json").read_text())
        offsets = FileArray(directory / "offsets.npy")
        size = (directory / "text.bin").stat().st_size
        data = FileArray(directory / "text.bin", dtype=np.uint8)
        if offsets.shape != (2 * meta["pairs"] + 1,) or int(offsets[-1]) != size:
            raise CorpusError(f"{directory}: damaged text store (offsets do not describe text.bin); delete it")
        return cls(directory, data, offsets, meta)

    def __len__(self) -> int:
        return self._n

    def head(self, n: int | None) -> "MappedText":
        if n is None or n >= self._n:
            return self
        return MappedText(self.directory, self._data, self._offsets, {**self.meta, "fingerprint": None}, n)

    def fingerprint(self) -> str:
        if self.meta.get("fingerprint"):
            return self.meta["fingerprint"]
        digest = hashlib.sha256()
        for s, t in zip(self.src, self.tgt):
            digest.update(s.encode() + b"\t" + t.encode() + b"\n")
        return digest.hexdigest()[:16]
