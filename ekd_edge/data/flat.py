"""Pairs stored flat: one array holding every pair's source then target, and int64 offsets
[2·pairs + 1] (pair i's source is values[offsets[2i] : offsets[2i+1]], its target runs to
offsets[2i+2]). The token store (distill/batches.py) keeps token ids this way, the text store
(data/text_store.py) UTF-8 bytes; both are read on demand (``FileArray``, pread) through ``PairSide``."""

from __future__ import annotations

import itertools
import os
import shutil
from array import array
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np


class Ragged:
    """Many sequences of ids end to end (``ids``) and each one's length: a chunk of a corpus
    tokenised without a Python list per sentence. Rows are picked, cut and interleaved by gathering
    with index arithmetic, the way the token store lays pairs out."""

    def __init__(self, ids: np.ndarray, lengths: np.ndarray):
        self.ids, self.lengths = ids, np.asarray(lengths, dtype=np.int64)

    @classmethod
    def from_lists(cls, rows: list[list[int]], dtype=np.int32) -> "Ragged":
        lengths = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        return cls(np.fromiter(itertools.chain.from_iterable(rows), dtype=dtype, count=int(lengths.sum())), lengths)

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def starts(self) -> np.ndarray:
        return np.cumsum(self.lengths) - self.lengths

    def tolist(self) -> list[list[int]]:
        values, ends = self.ids.tolist(), np.cumsum(self.lengths).tolist()
        return [values[end - n:end] for end, n in zip(ends, self.lengths.tolist())]

    def row_of(self, positions: np.ndarray) -> np.ndarray:
        """The row each position of ``ids`` belongs to."""
        return np.searchsorted(np.cumsum(self.lengths), positions, side="right")

    def with_rows(self, replaced: dict[int, list[int]]) -> "Ragged":
        """These rows' ids swapped for others (of any length)."""
        if not replaced:
            return self
        rows = np.split(self.ids, np.cumsum(self.lengths)[:-1])
        for r, ids in replaced.items():
            rows[r] = np.asarray(ids, dtype=self.ids.dtype)
        lengths = self.lengths.copy()
        lengths[list(replaced)] = [len(ids) for ids in replaced.values()]
        return Ragged(np.concatenate(rows) if rows else self.ids[:0], lengths)

    def appended(self, value: int) -> "Ragged":
        """``value`` at the end of every row."""
        return Ragged(np.insert(self.ids, np.cumsum(self.lengths), value), self.lengths + 1)

    def take(self, keep: np.ndarray) -> "Ragged":
        """The rows where the boolean ``keep`` is set, in order."""
        return Ragged(_gather(self.ids, self.starts[keep], self.lengths[keep]), self.lengths[keep])

    def truncated(self, limit: int) -> "Ragged":
        """Rows longer than ``limit`` cut to their first ``limit - 1`` ids and their last one (the EOS)."""
        long = self.lengths > limit
        if not long.any():
            return self
        starts = self.starts
        head = np.where(long, limit - 1, self.lengths)           # each row's kept beginning, then
        pieces = np.stack([starts, starts + self.lengths - 1], 1).ravel()   # its last id if it was cut
        sizes = np.stack([head, long.astype(np.int64)], 1).ravel()
        return Ragged(_gather(self.ids, pieces, sizes), np.minimum(self.lengths, limit))

    def interleaved(self, other: "Ragged") -> "Ragged":
        """Row 0 of this, row 0 of ``other``, row 1 of this, …: pairs as the token store keeps them."""
        if len(self) != len(other):
            raise ValueError(f"{len(self)} rows against {len(other)}")
        both = np.concatenate([self.ids, other.ids.astype(self.ids.dtype, copy=False)])
        starts = np.stack([self.starts, other.starts + len(self.ids)], 1).ravel()
        sizes = np.stack([self.lengths, other.lengths], 1).ravel()
        return Ragged(_gather(both, starts, sizes), sizes)


def _gather(values: np.ndarray, starts: np.ndarray, sizes: np.ndarray) -> np.ndarray:
    """values[starts[i] : starts[i] + sizes[i]] for every i, end to end."""
    sizes = np.asarray(sizes, dtype=np.int64)
    total = int(sizes.sum())
    out_starts = np.cumsum(sizes) - sizes
    return values[np.repeat(np.asarray(starts, dtype=np.int64) - out_starts, sizes) + np.arange(total)]


class FileArray:
    """A 1-D array in a file (.npy, or raw with ``dtype``), read with ``pread`` when indexed.

    A memory map would do the same reads, but every page it touches stays in the process's resident
    set (and the kernel maps 64 KiB around each random read): a long run over a large store would
    show most of the store as resident. Reads through this class keep nothing.
    """

    def __init__(self, path: str | Path, dtype=None):
        self.path = Path(path)
        with open(self.path, "rb") as f:
            if dtype is None:
                version = np.lib.format.read_magic(f)
                read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, self.dtype = read(f)
                if len(shape) != 1 or fortran:
                    raise ValueError(f"{self.path}: not a one-dimensional array")
                self._start = f.tell()
            else:
                self.dtype, self._start = np.dtype(dtype), 0
        self.size = (self.path.stat().st_size - self._start) // self.dtype.itemsize
        if dtype is None and self.size != shape[0]:
            raise ValueError(f"{self.path}: holds {self.size} values, its header says {shape[0]}")
        self.shape = (self.size,)
        self._fd = os.open(self.path, os.O_RDONLY)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(self.size)
            if step != 1:
                raise IndexError("a FileArray reads contiguous runs only")
            count = max(0, stop - start)
            wanted, at = count * self.dtype.itemsize, self._start + start * self.dtype.itemsize
            data = os.pread(self._fd, wanted, at)
            while len(data) < wanted:   # one pread returns at most about 2 GiB
                more = os.pread(self._fd, wanted - len(data), at + len(data))
                if not more:
                    raise OSError(f"{self.path}: file ended {wanted - len(data)} bytes early")
                data += more
            return np.frombuffer(data, dtype=self.dtype, count=count)
        i = int(i) + (self.size if int(i) < 0 else 0)
        if not 0 <= i < self.size:
            raise IndexError(f"index {i} out of range (0..{self.size - 1})")
        return self[i:i + 1][0]

    def __reduce__(self):   # a copy (pickled, copied) opens the file itself instead of sharing the fd
        return FileArray, (self.path, None if self._start else self.dtype)

    def __del__(self) -> None:
        fd = getattr(self, "_fd", None)
        if fd is not None:
            os.close(fd)


class PairSide(Sequence):
    """One side (0 = source, 1 = target) of flat pairs: ``side[i]`` is ``convert`` of pair i's slice."""

    def __init__(self, values: np.ndarray, offsets: np.ndarray, side: int, convert: Callable, n: int | None = None,
                 fingerprint: str | None = None):
        self._values, self._offsets = values, offsets
        self._side, self._convert = side, convert
        self._n = (len(offsets) - 1) // 2 if n is None else n
        self.fingerprint = fingerprint   # of the whole store this side belongs to, when it has one

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            start, stop, step = i.indices(self._n)
            if step != 1 or start >= stop:
                return [self[j] for j in range(start, stop, step)]
            # a run of pairs: one read of the block they span, then cut into items
            ends = self._offsets[2 * start:2 * stop + 1].astype(np.int64)
            block = self._values[int(ends[0]):int(ends[-1])]
            ends -= ends[0]
            cuts = ends[self._side:self._side + 2 * (stop - start) + 1].tolist()
            return [self._convert(block[cuts[k]:cuts[k + 1]]) for k in range(0, len(cuts) - 1, 2)]
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"pair {i} out of range (0..{self._n - 1})")
        at = 2 * i + self._side
        start, stop = self._offsets[at:at + 2].tolist()
        return self._convert(self._values[start:stop])

    def __iter__(self):
        return (self[i] for i in range(self._n))


def side_lengths(offsets) -> np.ndarray:
    """Every side's length (int32, 4 bytes a side) from flat offsets, read a million at a time."""
    out = np.empty(max(0, len(offsets) - 1), dtype=np.int32)
    step = 1 << 20
    for start in range(0, len(out), step):
        block = np.asarray(offsets[start:min(len(offsets), start + step + 1)])
        out[start:start + len(block) - 1] = np.diff(block)
    return out


class OffsetsWriter:
    """Writes the int64 offsets [0, end of side 1, end of side 2, …] of flat pairs to ``path`` (.npy)
    as they come, a buffer at a time: 16 bytes a pair on disk, none of it held in memory."""

    BUFFER = 1 << 16

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._raw = open(self.path.with_suffix(".raw"), "wb")
        self._buffer, self.position = array("q", [0]), 0

    def add(self, length: int) -> None:
        """One side of one pair, ``length`` values long."""
        self.position += length
        self._buffer.append(self.position)
        if len(self._buffer) >= self.BUFFER:
            self._flush()

    def extend(self, lengths) -> None:
        """Many sides at once, in order."""
        self._flush()
        ends = self.position + np.cumsum(np.asarray(lengths, dtype=np.int64))
        if len(ends):
            self._raw.write(ends.tobytes())
            self.position = int(ends[-1])

    def _flush(self) -> None:
        self._raw.write(self._buffer.tobytes())
        self._buffer = array("q")

    def close(self) -> None:
        """Write the finished ``.npy`` (header, then the values) and remove the raw file."""
        self._raw.write(self._buffer.tobytes())
        self._raw.close()
        raw = self.path.with_suffix(".raw")
        npy_from_raw(raw, self.path, np.int64)
        raw.unlink()


def npy_from_raw(raw: str | Path, path: str | Path, dtype) -> None:
    """``path`` as a .npy file holding the values of the headerless file ``raw`` (its size gives
    the length, known only once it is written), synced to disk."""
    dtype = np.dtype(dtype)
    count = os.path.getsize(raw) // dtype.itemsize
    with open(path, "wb") as out, open(raw, "rb") as values:
        np.lib.format.write_array_header_1_0(out, {"descr": dtype.str, "fortran_order": False, "shape": (count,)})
        shutil.copyfileobj(values, out, 1 << 20)
        out.flush()
        os.fsync(out.fileno())
