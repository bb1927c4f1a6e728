"""The web app's files, read once at start-up and kept in memory with their version, ETags and gzip.

The SPA is small (a page, some ES modules, a stylesheet, a few vendored
libraries), so holding it in memory costs little and means a request never
touches the file system: there is no path to traverse, and a file changed on
disk after start-up cannot make a page mix two versions. `version` is a short
hash of every file's path and bytes; it is part of each asset's URL
(`/static/<version>/app.js`), so the assets can be cached forever and a new
release is fetched afresh. `index.html` is the one file rendered: each
`{{STATIC}}` in it becomes that versioned prefix.

Text assets larger than a packet are gzipped here once, so neither the server
nor a CDN in front has to do it per request. This module knows no routes;
`web.py` serves what it loads.
"""

from __future__ import annotations

import gzip
import hashlib
import mimetypes
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

STATIC_PREFIX = "/static"
STATIC_PLACEHOLDER = b"{{STATIC}}"
INDEX_FILE = "index.html"
VERSION_LENGTH = 12
GZIP_MIN_BYTES = 1024
_SKIPPED_DIRECTORIES = frozenset({"node_modules", "__pycache__"})
_MEDIA_TYPES = {
    ".js": "text/javascript",
    ".mjs": "text/javascript",
    ".css": "text/css",
    ".html": "text/html",
    ".json": "application/json",
    ".map": "application/json",
    ".webmanifest": "application/manifest+json",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".ico": "image/x-icon",
    ".woff2": "font/woff2",
    ".woff": "font/woff",
    ".txt": "text/plain",
    ".wasm": "application/wasm",
}
_COMPRESSIBLE = ("text/", "application/json", "application/manifest+json", "image/svg+xml")


@dataclass(slots=True, frozen=True)
class Asset:
    """One file as served: its bytes, type and strong ETag, and a gzipped copy where that saves bytes."""

    body: bytes
    media_type: str
    etag: str
    gzipped: bytes | None = None

    @property
    def gzip_etag(self) -> str:
        # A different representation needs a different strong validator (RFC 9110 §8.8.3).
        return self.etag[:-1] + '-gz"'


@dataclass(slots=True, frozen=True)
class WebBundle:
    """Every file of the web app, by its path relative to the root (`app.js`, `vendor/marked.js`)."""

    version: str
    assets: Mapping[str, Asset]
    index: Asset | None

    @classmethod
    def load(cls, root: Path) -> WebBundle:
        """Read `root` (a missing directory gives an empty bundle, whose `index` is None)."""
        files = _read_files(root)
        digest = hashlib.sha256()
        for name in sorted(files):
            digest.update(name.encode() + b"\0" + hashlib.sha256(files[name]).digest())
        version = digest.hexdigest()[:VERSION_LENGTH]
        assets = {name: make_asset(name, body) for name, body in files.items()}
        index = None
        if INDEX_FILE in files:
            prefix = f"{STATIC_PREFIX}/{version}".encode()
            index = make_asset(INDEX_FILE, files[INDEX_FILE].replace(STATIC_PLACEHOLDER, prefix))
        return cls(version=version, assets=assets, index=index)


def make_asset(name: str, body: bytes) -> Asset:
    media_type = media_type_of(name)
    etag = '"' + hashlib.sha256(body).hexdigest()[:32] + '"'
    gzipped = None
    if len(body) >= GZIP_MIN_BYTES and media_type.startswith(_COMPRESSIBLE):
        # mtime=0 keeps the bytes (and so what a CDN caches) the same on every replica.
        candidate = gzip.compress(body, compresslevel=9, mtime=0)
        if len(candidate) < len(body):
            gzipped = candidate
    if media_type.startswith("text/") or media_type.endswith("json"):
        media_type += "; charset=utf-8"
    return Asset(body=body, media_type=media_type, etag=etag, gzipped=gzipped)


def media_type_of(name: str) -> str:
    """The type a browser needs: module scripts must be JavaScript, whatever the system's mime table says."""
    suffix = Path(name).suffix.lower()
    if suffix in _MEDIA_TYPES:
        return _MEDIA_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(name, strict=False)
    return guessed or "application/octet-stream"


def _read_files(root: Path) -> dict[str, bytes]:
    """Regular files under `root` by relative POSIX path; hidden files and tool directories are left out."""
    if not root.is_dir():
        return {}
    files: dict[str, bytes] = {}
    for path in sorted(root.rglob("*")):
        relative = path.relative_to(root)
        if any(part.startswith(".") or part in _SKIPPED_DIRECTORIES for part in relative.parts):
            continue
        # Symlinks are followed only inside the root, so a link cannot publish a file from elsewhere.
        if path.is_file() and path.resolve().is_relative_to(root.resolve()):
            files[relative.as_posix()] = path.read_bytes()
    return files
