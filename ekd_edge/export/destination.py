"""Where an export may write: the one rule every export format follows.

An output directory is created when missing, filled when empty, and replaced only when it holds
a bundle that ekd-edge wrote and that still verifies against its manifest. Anything else — a
user's folder, a file, a symlink, a bundle edited by hand — is refused before any work starts and
again just before the finished bundle is moved into place.
"""

from __future__ import annotations

from pathlib import Path

from ekd_edge.errors import BundleError
from ekd_edge.runtime.manifest import MANIFEST_NAME, verify_bundle


def check_destination(out_dir: str | Path) -> None:
    out_dir = Path(out_dir)
    if out_dir.is_symlink():
        raise BundleError(f"{out_dir}: is a symbolic link; refusing to replace it (give the real directory)")
    if not out_dir.exists():
        return
    if not out_dir.is_dir():
        raise BundleError(f"{out_dir}: exists and is not a directory; refusing to replace it")
    if not any(out_dir.iterdir()):
        return
    if not (out_dir / MANIFEST_NAME).is_file():
        raise BundleError(f"{out_dir}: exists and holds files that are not an ekd-edge bundle (no {MANIFEST_NAME}); "
                          "refusing to replace it: choose another --out or empty it")
    try:
        verify_bundle(out_dir)
    except BundleError as exc:
        raise BundleError(f"{out_dir}: is not an intact ekd-edge bundle, so it is not replaced ({exc})") from None
