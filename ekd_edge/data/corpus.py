"""Parallel corpora: the bundled ones (xz-compressed inside the package) and the user's own files.

Every line is checked on load. A problem is reported as ``file:line: what is wrong`` so the user
can open the file at that line; nothing is silently dropped unless the caller asks for it
(``empty="skip"``), and then the number of skipped pairs is kept on the result.
"""

from __future__ import annotations

import hashlib
import lzma
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from ekd_edge.errors import CorpusError

SPLITS = ("train", "valid", "test")
EMPTY_POLICIES = ("error", "skip")

# name -> (source language, target language); the files live in ekd_edge/corpora/<name>/.
BUNDLED_CORPORA = {
    "lo-help-en-de": ("en", "de"),
    "bible-en-es": ("en", "es"),
}


@dataclass
class ParallelText:
    """Aligned source/target segments of one split."""

    src: list[str]
    tgt: list[str]
    src_path: str = ""
    tgt_path: str = ""
    skipped_empty: int = 0

    def __post_init__(self) -> None:
        if len(self.src) != len(self.tgt):
            raise CorpusError(
                f"{self.src_path or 'source'}: {len(self.src)} lines but {self.tgt_path or 'target'} has {len(self.tgt)}"
            )

    def __len__(self) -> int:
        return len(self.src)

    def head(self, n: int | None) -> "ParallelText":
        if n is None or n >= len(self):
            return self
        return ParallelText(self.src[:n], self.tgt[:n], self.src_path, self.tgt_path, self.skipped_empty)

    def fingerprint(self) -> str:
        """sha256 of the aligned text: names the data a number was measured on."""
        h = hashlib.sha256()
        for s, t in zip(self.src, self.tgt):
            h.update(s.encode())
            h.update(b"\t")
            h.update(t.encode())
            h.update(b"\n")
        return h.hexdigest()[:16]


@dataclass
class Corpus:
    """A named corpus with its split files (plain or .xz)."""

    name: str
    src_lang: str
    tgt_lang: str
    files: dict[str, tuple[Path, Path]] = field(default_factory=dict)

    def split(self, split: str, empty: str = "error") -> ParallelText:
        if split not in self.files:
            raise CorpusError(f"corpus {self.name!r} has no {split!r} split (has: {', '.join(self.files) or 'none'})")
        src_path, tgt_path = self.files[split]
        return load_parallel(src_path, tgt_path, empty=empty)

    @classmethod
    def from_dir(cls, directory: str | Path, src_lang: str, tgt_lang: str) -> "Corpus":
        """A user's corpus: ``DIR/{train,valid,test}.{src_lang,tgt_lang}`` (``.xz`` also accepted)."""
        directory = Path(directory)
        if not directory.is_dir():
            raise CorpusError(f"{directory}: corpus directory does not exist")
        files = {}
        for split in SPLITS:
            pair = [_find(directory, f"{split}.{lang}") for lang in (src_lang, tgt_lang)]
            if all(pair):
                files[split] = (pair[0], pair[1])
            elif any(pair):
                missing = f"{split}.{tgt_lang if pair[0] else src_lang}"
                raise CorpusError(f"{directory}: has {split}.{src_lang if pair[0] else tgt_lang} but no {missing}")
        if "train" not in files and "test" not in files:
            raise CorpusError(f"{directory}: no {{train,valid,test}}.{src_lang}/.{tgt_lang} files found")
        return cls(directory.name, src_lang, tgt_lang, files)


def _find(directory: Path, stem: str) -> Path | None:
    for candidate in (directory / stem, directory / f"{stem}.xz"):
        if candidate.is_file():
            return candidate
    return None


def bundled_corpus_dir(name: str) -> Path:
    return Path(str(resources.files("ekd_edge") / "corpora" / name))


def load_corpus(name_or_dir: str | Path, src_lang: str | None = None, tgt_lang: str | None = None) -> Corpus:
    """A bundled corpus by name, or a directory of the user's own split files."""
    if str(name_or_dir) in BUNDLED_CORPORA:
        name = str(name_or_dir)
        default_src, default_tgt = BUNDLED_CORPORA[name]
        src_lang, tgt_lang = src_lang or default_src, tgt_lang or default_tgt
        corpus = Corpus.from_dir(bundled_corpus_dir(name), src_lang, tgt_lang)
        corpus.name = name
        return corpus
    path = Path(name_or_dir)
    if not path.exists():
        known = ", ".join(BUNDLED_CORPORA)
        raise CorpusError(f"{name_or_dir}: neither a bundled corpus ({known}) nor an existing directory")
    if not (src_lang and tgt_lang):
        raise CorpusError(f"{name_or_dir}: give the source and target languages of a user corpus (e.g. en, de)")
    return Corpus.from_dir(path, src_lang, tgt_lang)


def read_lines(path: str | Path) -> list[str]:
    """Lines of a UTF-8 text file (``.xz`` transparently), without line ends.

    Invalid UTF-8 is an error that names the line and column; it is never replaced silently.
    """
    path = Path(path)
    try:
        raw = lzma.open(path).read() if path.suffix == ".xz" else path.read_bytes()
    except FileNotFoundError:
        raise CorpusError(f"{path}: file not found") from None
    except (OSError, lzma.LZMAError) as exc:
        raise CorpusError(f"{path}: cannot read ({exc})") from None
    return decode_lines(raw, str(path))


def decode_lines(raw: bytes, name: str, first: int = 1) -> list[str]:
    """UTF-8 lines of ``raw`` without line ends; invalid UTF-8 is a CorpusError naming ``name``:line
    (``first``: the number of raw's first line)."""
    if first == 1 and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    lines = raw.split(b"\n")
    if lines and lines[-1] == b"":
        lines.pop()
    out = []
    for number, line in enumerate(lines, start=first):
        try:
            out.append(line.decode("utf-8").rstrip("\r"))
        except UnicodeDecodeError as exc:
            raise CorpusError(
                f"{name}:{number}: invalid UTF-8 (byte 0x{line[exc.start]:02x} at column {exc.start + 1})"
            ) from None
    return out


def arriving_lines(stream, name: str, batch: int = 32):
    """(number of the first line, lines) batches of a binary stream's UTF-8 lines as they arrive.

    A batch holds only lines already read, at most ``batch`` of them, so a reader at the other end
    of a pipe gets each line's result without waiting for the next line or the end of the input;
    a file read at once still comes in full batches.
    """
    pending, number = b"", 1
    while True:
        chunk = stream.read1(1 << 16)   # whatever has arrived, waiting only when nothing has
        pending += chunk
        if chunk:
            complete, newline, pending = pending.rpartition(b"\n")
            complete += newline
        else:   # the end: a last line without its newline
            complete, pending = pending, b""
        lines = decode_lines(complete, name, number) if complete else []
        for start in range(0, len(lines), batch):
            yield number + start, lines[start:start + batch]
        number += len(lines)
        if not chunk:
            return


def load_parallel(src_path: str | Path, tgt_path: str | Path, empty: str = "error") -> ParallelText:
    """Read and validate an aligned pair of files.

    ``empty``: what to do with a pair where either side is empty or whitespace only:
    ``"error"`` (default) stops with the file and line, ``"skip"`` drops the pair and counts it.
    """
    if empty not in EMPTY_POLICIES:
        raise ValueError(f"empty must be one of {EMPTY_POLICIES}, not {empty!r}")
    src, tgt = read_lines(src_path), read_lines(tgt_path)
    if len(src) != len(tgt):
        raise CorpusError(
            f"{src_path}: {len(src)} lines but {tgt_path} has {len(tgt)}: the files are not aligned "
            f"(first line without a partner: {min(len(src), len(tgt)) + 1})"
        )
    kept_src, kept_tgt, skipped = [], [], 0
    for number, (s, t) in enumerate(zip(src, tgt), start=1):
        s, t = s.strip(), t.strip()
        if not s or not t:
            if empty == "skip":
                skipped += 1
                continue
            bad = src_path if not s else tgt_path
            raise CorpusError(f"{bad}:{number}: empty line (use empty='skip' to drop such pairs)")
        kept_src.append(s)
        kept_tgt.append(t)
    return ParallelText(kept_src, kept_tgt, str(src_path), str(tgt_path), skipped)
