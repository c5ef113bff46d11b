"""The one-file model at run time: strings in, strings out, one onnxruntime session.

A one-file bundle is ``model.onnx`` + ``manifest.json`` (backend "onefile"); the graph holds the
SentencePiece tokenizer, the beam search and the detokenizer (built by export/onefile.py), so
an app — or this translator — calls ``run`` once per batch of texts. The input and output names
below are the contract the Android app reads from its assets (tests/test_android_contract.py).
"""

from __future__ import annotations

from pathlib import Path

from ekd_edge.defaults import MAX_NEW_TOKENS
from ekd_edge.errors import BundleError
from ekd_edge.runtime.base import Translator, strip_special
from ekd_edge.runtime.manifest import MANIFEST_NAME, read_manifest, verify_bundle
from ekd_edge.runtime.session import optimization_level

MODEL_FILE = "model.onnx"
LAYOUT = "onefile"

# The graph's interface. The Android app reads the same names from its contract file, and
# tests/test_android_contract.py checks that file against a real model.
TEXT_INPUT = "text"
MAX_NEW_TOKENS_INPUT = "max_new_tokens"
NUM_BEAMS_INPUT = "num_beams"
TRANSLATION_OUTPUT = "translation"
TOKEN_IDS_OUTPUT = "token_ids"


def extensions_library() -> str:
    """onnxruntime-extensions' native library, found by path as the Android app registers it.

    Importing the Python package instead would load torch and transformers where they are installed
    (seconds, and hundreds of MB that are not the model's). bench/ort_onefile.py, which must run
    without this package, finds it the same way.
    """
    import glob
    import importlib.util

    spec = importlib.util.find_spec("onnxruntime_extensions")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        found = sorted(glob.glob(str(Path(folder) / "_extensions_pydll*")))
        if found:
            return found[0]
    from onnxruntime_extensions import get_library_path

    return get_library_path()


def onefile_session(model_path: str | Path, threads: int | None = None, settings: dict | None = None):
    """An onnxruntime session for a one-file model, with the tokenizer ops registered and the
    optimisation level its manifest ``settings`` ask for (portable numerics: "basic")."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.register_custom_ops_library(extensions_library())
    options.graph_optimization_level = optimization_level(settings)
    if threads:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(model_path), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        detail = " ".join(str(exc).split())[:300]
        raise BundleError(f"{model_path}: onnxruntime cannot load the one-file model ({detail})") from None


def run_onefile(session, texts: list[str], *, max_new_tokens: int = MAX_NEW_TOKENS, num_beams: int = 1):
    """(translations, token id rows) for ``texts`` in one call of the one-file model."""
    import numpy as np

    if not texts:
        return [], []
    feeds = {
        TEXT_INPUT: np.array(list(texts), dtype=object),
        MAX_NEW_TOKENS_INPUT: np.array([max_new_tokens], dtype=np.int32),
        NUM_BEAMS_INPUT: np.array([num_beams], dtype=np.int32),
    }
    translations, ids = session.run([TRANSLATION_OUTPUT, TOKEN_IDS_OUTPUT], feeds)
    return [str(t) for t in translations], ids


class OneFileTranslator(Translator):
    """Translate with a verified one-file bundle; ``generate_ids`` matches TorchTranslator's."""

    engine = "onnxruntime-onefile"

    def __init__(self, bundle_dir: str | Path, threads: int | None = None):
        self.path = Path(bundle_dir)
        self.manifest = verify_onefile(self.path)
        self.session = onefile_session(self.path / MODEL_FILE, threads=threads, settings=self.manifest["settings"])
        self.pad_id = self.manifest["settings"]["pad_token_id"]
        self.eos_id = self.manifest["settings"]["eos_token_id"]
        self._pieces = None

    def generate_ids(self, texts, max_new_tokens=MAX_NEW_TOKENS, num_beams=1):
        # A blank text has nothing to translate; the graph is only ever given real text.
        filled = [i for i, text in enumerate(texts) if text.strip()]
        _, rows = run_onefile(self.session, [texts[i] for i in filled], max_new_tokens=max_new_tokens,
                              num_beams=num_beams)
        out: list[list[int]] = [[] for _ in texts]
        for i, row in zip(filled, rows):
            out[i] = strip_special([int(t) for t in row], self.pad_id, self.eos_id)
        return out

    def translate_batch(self, texts, max_new_tokens, num_beams):
        # the graph detokenises itself: its strings are the translations
        return run_onefile(self.session, texts, max_new_tokens=max_new_tokens, num_beams=num_beams)[0]

    def translate_with_ids(self, texts, max_new_tokens=MAX_NEW_TOKENS, num_beams=1):
        translations, rows = run_onefile(self.session, texts, max_new_tokens=max_new_tokens, num_beams=num_beams)
        return translations, [strip_special([int(t) for t in row], self.pad_id, self.eos_id) for row in rows]

    def decode(self, ids):
        return [self._tokenizer().decode(row) for row in ids]

    def source_token_counts(self, texts):
        """Tokens of each text (with EOS, as the graph counts) and how many the model reads."""
        return ([len(self._tokenizer().encode(text)) + 1 for text in texts],
                int(self.manifest["settings"]["max_positions"]))

    def _tokenizer(self):
        import sentencepiece as spm

        if self._pieces is None:
            self._pieces = spm.SentencePieceProcessor(model_proto=_tokenizer_model(self.path / MODEL_FILE))
        return self._pieces


def _tokenizer_model(model_path: Path) -> bytes:
    """The SentencePiece model inside a one-file graph (the tokenizer node's ``model`` attribute)."""
    import onnx

    graph = onnx.load(str(model_path), load_external_data=False).graph
    for node in graph.node:
        if node.op_type == "SentencepieceTokenizer":
            for attribute in node.attribute:
                if attribute.name == "model":
                    return attribute.s
    raise BundleError(f"{model_path}: holds no SentencePiece tokenizer node")


def verify_onefile(bundle_dir: str | Path) -> dict:
    """Check a one-file bundle against its manifest (every file's size and sha256, nothing extra)."""
    bundle_dir = Path(bundle_dir)
    if not bundle_dir.is_dir():
        raise BundleError(f"{bundle_dir}: bundle directory not found")
    manifest = read_manifest(bundle_dir)
    if manifest.get("backend") != LAYOUT:
        raise BundleError(f"{bundle_dir / MANIFEST_NAME}: not a one-file bundle (backend is not {LAYOUT!r})")
    return verify_bundle(bundle_dir)


