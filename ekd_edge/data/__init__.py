"""Parallel corpora (bundled or user-given) and the joint SentencePiece tokenizer."""

from ekd_edge.data.corpus import BUNDLED_CORPORA, Corpus, ParallelText, load_corpus, read_lines
from ekd_edge.data.tokenizer import load_tokenizer, train_tokenizer

__all__ = ["BUNDLED_CORPORA", "Corpus", "ParallelText", "load_corpus", "read_lines", "load_tokenizer", "train_tokenizer"]
