"""A web bundle run by Node: the same JavaScript and WebAssembly a page runs, driven from Python.

A web bundle (backend "web", export/web.py) holds the encoder and merged decoder graphs, the
tokenizer files, web.json (what the page needs to know) and its own JavaScript: translator.mjs
(SentencePiece tokenisation, greedy search, detokenisation) and runtime/ (onnxruntime-web and
SentencePiece compiled to WebAssembly). ``WebTranslator`` starts ``node web/node_runner.mjs``
on the bundle and exchanges one JSON line per request with it, so the gates and the tests check
the bundle's own code, not a Python re-implementation of it.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import tempfile
from pathlib import Path

from ekd_edge.defaults import MAX_NEW_TOKENS
from ekd_edge.errors import BundleError
from ekd_edge.runtime.base import Translator
from ekd_edge.runtime.manifest import verify_bundle

SETTINGS_FILE = "web.json"
TRANSLATOR_FILE = "translator.mjs"
RUNTIME_DIR = "runtime"
# The JavaScript this package ships: copied into each bundle (translator.mjs), or run by Node.
SCRIPTS = Path(__file__).resolve().parent / "web"
NODE_RUNNER = SCRIPTS / "node_runner.mjs"


def node_executable() -> str:
    node = shutil.which("node")
    if node is None:
        raise BundleError("web bundles run in Node.js here, and `node` is not on PATH (install Node.js 18 or newer)")
    return node


def node_error(stderr: str) -> str:
    """The message of an uncaught error in Node's stderr, without the stack and Node's own frames."""
    noise = ("node:internal", "at ", "^", "triggerUncaughtException", "{", "}", "log:", "name:", "Node.js", "throw ")
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    useful = [line for line in lines if not line.startswith(noise)]
    errors = [line for line in useful if "Error:" in line]   # "SyntaxError: …" over the source line above it
    return (errors or useful or lines or ["no output"])[0]


class WebTranslator(Translator):
    """A web bundle's translator.mjs under Node (onnxruntime-web's WebAssembly build), greedy only."""

    engine = "onnxruntime-web"

    def __init__(self, bundle_dir: str | Path, threads: int | None = None):
        self.path = Path(bundle_dir)
        self.manifest = verify_bundle(self.path)
        self.settings = json.loads((self.path / SETTINGS_FILE).read_text())
        # stderr goes to a file: a pipe nobody reads could fill up and stall Node
        self._stderr = tempfile.TemporaryFile(mode="w+", encoding="utf-8")
        self._process = subprocess.Popen([node_executable(), str(NODE_RUNNER), str(self.path), str(threads or 1)],
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr,
                                         text=True, encoding="utf-8")
        self._receive()   # the runner says it is ready once the sessions are loaded

    def _receive(self) -> dict:
        line = self._process.stdout.readline()
        if not line:
            self._process.wait()
            self._process.stdin.close()
            self._process.stdout.close()
            self._process = None
            self._stderr.seek(0)
            detail = node_error(self._stderr.read())
            raise BundleError(f"{self.path}: Node cannot run the web bundle ({' '.join(detail.split())[:300]})")
        reply = json.loads(line)
        if "error" in reply:
            raise BundleError(f"{self.path}: the web bundle failed: {reply['error'][:300]}")
        return reply

    def _ask(self, **request) -> dict:
        if self._process is None:
            raise BundleError(f"{self.path}: this translator has been closed")
        self._process.stdin.write(json.dumps(request, ensure_ascii=False) + "\n")
        self._process.stdin.flush()
        return self._receive()

    def encode(self, texts: list[str], truncate: bool = True) -> list[list[int]]:
        """Model ids of each text (with EOS), as the bundle's tokenizer gives them."""
        return self._ask(op="encode", texts=list(texts), truncate=truncate)["ids"]

    def generate_from_ids(self, id_lists: list[list[int]], max_new_tokens: int = MAX_NEW_TOKENS) -> dict:
        """Greedy ids and seconds per sentence for already tokenised sources."""
        return self._ask(op="generate", ids=[list(map(int, ids)) for ids in id_lists], max_new_tokens=max_new_tokens)

    def generate_ids(self, texts, max_new_tokens=MAX_NEW_TOKENS, num_beams=1):
        if num_beams != 1:
            raise BundleError(f"{self.path}: a web bundle decodes greedily (num_beams 1, got {num_beams})")
        return self.generate_from_ids(self.encode(texts), max_new_tokens)["ids"]

    def decode(self, ids):
        return self._ask(op="decode", ids=[list(map(int, row)) for row in ids])["texts"]

    def source_token_counts(self, texts):
        return [len(ids) for ids in self.encode(texts, truncate=False)], int(self.settings["max_positions"])

    def close(self) -> None:
        if self._process is not None:
            self._process.stdin.close()
            try:
                self._process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process.stdout.close()
            self._process = None
        self._stderr.close()

    def __del__(self):
        try:
            self.close()
        except Exception:
            pass
