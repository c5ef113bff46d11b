"""A web bundle in a real browser: the demo page in headless Chromium, driven by playwright-core.

``translate_in_browser`` serves the page and the bundle (runtime/web_server.py), runs
web_demo/drive.mjs under Node, which opens the page in Debian's ``chromium`` once per thread
count and translates on the page, and returns what the page measured. The browser tests and
benchmarks/web_latency.py use it.

``python -m ekd_edge.bench.browser ensure`` installs what that needs where it is missing: the
npm packages of package-lock.json (``npm ci``) and ``chromium`` (apt-get). As for the app
runtimes (bench/arm.py): with CI set a failure stops there, elsewhere the tests that need a
browser are skipped.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from ekd_edge.bench.arm import in_ci
from ekd_edge.errors import BrowserError

REPOSITORY = Path(__file__).resolve().parents[2]
DRIVER = REPOSITORY / "web_demo" / "drive.mjs"
CHROMIUM_CANDIDATES = ("chromium", "chromium-browser")
NPM_PACKAGES = ("onnxruntime-web", "@sctg/sentencepiece-js", "playwright-core")


def chromium_path() -> str | None:
    found = (shutil.which(name) for name in CHROMIUM_CANDIDATES)
    return next((path for path in found if path), None)


def _installed_version(package: str) -> str | None:
    try:
        return json.loads((REPOSITORY / "node_modules" / package / "package.json").read_text())["version"]
    except (OSError, ValueError, KeyError):
        return None


def missing() -> list[str]:
    """What the browser checks lack here, in words (empty when all is in place). An npm package
    of another version than package.json pins counts as missing."""
    gaps = []
    if not shutil.which("node"):
        gaps.append("node (Node.js)")
    try:   # the repository's; a wheel has none, so nothing counts as installed
        pinned = json.loads((REPOSITORY / "package.json").read_text())
    except OSError:
        pinned = {}
    pins = {**pinned.get("dependencies", {}), **pinned.get("devDependencies", {})}
    gaps += [f"npm package {p}" for p in NPM_PACKAGES if _installed_version(p) != pins.get(p)]
    if chromium_path() is None:
        gaps.append("chromium")
    return gaps


def _run(command: list[str], cwd: Path | None = None, env: dict | None = None) -> None:
    done = subprocess.run(command, cwd=cwd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise BrowserError(f"`{' '.join(command)}` failed (exit {done.returncode}): {done.stderr.strip()[-300:]}")


def ensure(say=print, browser: bool = True) -> None:
    """npm ci (package-lock.json) and, with ``browser``, apt-get install chromium; each only where missing."""
    if any("npm package" in gap for gap in missing()):
        if not shutil.which("npm"):
            raise BrowserError("npm not found: install Node.js 18 or newer (with npm)")
        say("installing the npm packages of package-lock.json (npm ci)")
        _run(["npm", "ci", "--no-audit", "--no-fund"], cwd=REPOSITORY)
    if browser and chromium_path() is None:
        if not shutil.which("apt-get"):
            raise BrowserError("chromium missing and no apt-get here: install Debian's chromium package")
        sudo = [] if os.geteuid() == 0 else (["sudo", "-n"] if shutil.which("sudo") else None)
        if sudo is None:
            raise BrowserError("chromium missing and not root (no sudo): `apt-get install chromium`")
        say("installing chromium (apt-get)")
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        _run([*sudo, "apt-get", "update", "-qq"], env=env)
        _run([*sudo, "apt-get", "install", "-y", "-qq", "--no-install-recommends", "chromium"], env=env)
    gaps = [gap for gap in missing() if browser or gap != "chromium"]
    if gaps:
        raise BrowserError(f"still missing: {', '.join(gaps)}")


def translate_in_browser(bundle: str | Path, texts: list[str], threads=(1,), warmup: int = 0,
                         max_new_tokens: int | None = None, encode: bool = False, timeout: float = 1800) -> dict:
    """Open the demo page with ``bundle`` in headless Chromium per thread count and translate ``texts`` there.

    Returns drive.mjs's result: ``browser`` and one run per thread count with the page's ``info``
    (crossOriginIsolated, threads, payload, load time) and each text's ``text``, ``ids`` and ``ms``."""
    from ekd_edge.runtime.web_engine import node_error
    from ekd_edge.runtime.web_server import serve_in_background

    gaps = missing()
    if gaps:
        raise BrowserError(f"the browser checks need {', '.join(gaps)}: run `make web-deps` "
                           "(`python -m ekd_edge.bench.browser ensure`)")
    server, url = serve_in_background(bundle)
    try:
        with tempfile.TemporaryDirectory(prefix="ekd-browser-") as scratch:
            request, result = Path(scratch) / "request.json", Path(scratch) / "result.json"
            request.write_text(json.dumps({"texts": list(texts), "threads": list(threads), "warmup": warmup,
                                           "max_new_tokens": max_new_tokens, "encode": encode,
                                           "chromium": chromium_path()}, ensure_ascii=False))
            try:
                done = subprocess.run(["node", str(DRIVER), url, str(request), str(result)], capture_output=True,
                                      text=True, timeout=timeout, cwd=REPOSITORY)
            except subprocess.TimeoutExpired:
                raise BrowserError(f"the browser did not finish within {timeout:.0f} s") from None
            if done.returncode != 0:
                detail = node_error(done.stderr)
                raise BrowserError(f"the browser run failed: {' '.join(detail.split())[:400]}")
            return json.loads(result.read_text())
    finally:
        server.shutdown()
        server.server_close()


def main(argv: list[str] | None = None) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog="python -m ekd_edge.bench.browser",
                                     description="Install what the browser tests need (npm packages, chromium).")
    parser.add_argument("command", choices=["ensure", "status"])
    parser.add_argument("--npm-only", action="store_true", help="the npm packages only, no chromium (what exports need)")
    args = parser.parse_args(argv)
    say = lambda message: print(f"[browser] {message}", flush=True)  # noqa: E731
    if args.command == "ensure":
        try:
            ensure(say, browser=not args.npm_only)
        except (BrowserError, OSError) as exc:
            say(f"cannot set up the browser checks: {exc}")
            if in_ci():
                return 1
            say("not in CI (CI unset): web exports and the tests that need a browser will be skipped")
            return 0
    gaps = missing()
    say("ready: node, npm packages, " + (chromium_path() or "?") if not gaps else f"missing: {', '.join(gaps)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
