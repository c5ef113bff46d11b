"""Pairs stored flat: one array holding every pair's source then target, and int64 offsets
[2·pairs + 1] (pair i's source is values[offsets[2i] : offsets[2i+1]], its target runs to
offsets[2i+2]). The token store (distill/batches.py) keeps token ids this way, the text store
(data/text_store.py) UTF-8 bytes; both read them memory-mapped through ``PairSide``."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np


class PairSide(Sequence):
    """One side (0 = source, 1 = target) of flat pairs: ``side[i]`` is ``convert`` of pair i's slice."""

    def __init__(self, values: np.ndarray, offsets: np.ndarray, side: int, convert: Callable, n: int | None = None):
        self._values, self._offsets, self._side, self._convert = values, offsets, side, convert
        self._n = (len(offsets) - 1) // 2 if n is None else n

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        i = int(i)
        if i < 0:
            i += self._n
        if not 0 <= i < self._n:
            raise IndexError(f"pair {i} out of range (0..{self._n - 1})")
        at = 2 * i + self._side
        return self._convert(self._values[int(self._offsets[at]):int(self._offsets[at + 1])])

    def __iter__(self):
        return (self[i] for i in range(self._n))
