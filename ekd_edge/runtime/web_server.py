"""A small local web server for the demo page and one web bundle, cross-origin isolated.

onnxruntime-web runs on several threads only where the page is cross-origin isolated
(SharedArrayBuffer), which takes two response headers: Cross-Origin-Opener-Policy: same-origin
and Cross-Origin-Embedder-Policy: require-corp. Every file therefore comes from this one
origin: the page at ``/`` and the bundle (graphs, tokenizer, onnxruntime-web, SentencePiece) at
``/bundle/``. Nothing is fetched from anywhere else.
"""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from ekd_edge.errors import BundleError
from ekd_edge.runtime.manifest import verify_bundle

BUNDLE_PREFIX = "/bundle/"
# The demo page lives in the repository (web_demo/), beside the package.
DEMO_PAGE = Path(__file__).resolve().parents[2] / "web_demo"
ISOLATION_HEADERS = {"Cross-Origin-Opener-Policy": "same-origin", "Cross-Origin-Embedder-Policy": "require-corp",
                     "Cross-Origin-Resource-Policy": "same-origin"}


class _Handler(SimpleHTTPRequestHandler):
    extensions_map = {**SimpleHTTPRequestHandler.extensions_map, ".mjs": "text/javascript", ".js": "text/javascript",
                      ".wasm": "application/wasm", ".json": "application/json", ".onnx": "application/octet-stream",
                      ".spm": "application/octet-stream"}

    def __init__(self, *args, page: Path, bundle: Path, **kwargs):
        self.page, self.bundle = page, bundle
        super().__init__(*args, directory=str(page), **kwargs)

    def translate_path(self, path):
        # SimpleHTTPRequestHandler keeps a request inside ``directory``; the bundle is a second root.
        if path.startswith(BUNDLE_PREFIX):
            self.directory = str(self.bundle)
            path = "/" + path[len(BUNDLE_PREFIX):]
        else:
            self.directory = str(self.page)
        return super().translate_path(path)

    def end_headers(self):
        for name, value in ISOLATION_HEADERS.items():
            self.send_header(name, value)
        self.send_header("Cache-Control", "no-store")   # a re-exported bundle must not mix with a cached one
        super().end_headers()

    def log_message(self, format, *args):   # the console stays readable; errors still reach the page
        pass


def check_web_bundle(bundle: str | Path) -> Path:
    bundle = Path(bundle)
    manifest = verify_bundle(bundle)
    if manifest.get("backend") != "web":
        raise BundleError(f"{bundle}: not a web bundle (backend {manifest.get('backend', 'onnx')!r}); export one with "
                          "`ekd-edge export CHECKPOINT --profile web --out DIR`")
    return bundle


def make_server(bundle: str | Path, host: str = "127.0.0.1", port: int = 8000,
                page: str | Path | None = None) -> ThreadingHTTPServer:
    """A server (not yet serving) for ``page`` (default web_demo/) with ``bundle`` at /bundle/; port 0 picks a free one."""
    bundle = check_web_bundle(bundle).resolve()
    page = Path(page or DEMO_PAGE).resolve()
    if not (page / "index.html").is_file():
        raise BundleError(f"{page}: no index.html (the demo page is web_demo/ in the ekd-edge repository)")
    handler = functools.partial(_Handler, page=page, bundle=bundle)
    try:
        return ThreadingHTTPServer((host, port), handler)
    except OSError as exc:
        raise BundleError(f"cannot serve on {host}:{port} ({exc.strerror or exc})") from None


def serve_in_background(bundle: str | Path, page: str | Path | None = None) -> tuple[ThreadingHTTPServer, str]:
    """Serve on a free local port from a daemon thread; returns the server (call shutdown()) and its URL."""
    server = make_server(bundle, port=0, page=page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    host, port = server.server_address[:2]
    return server, f"http://{host}:{port}/"
