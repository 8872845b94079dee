"""JupyterLab's own files, gzip-compressed once and kept on disk, for browsers that offer gzip.

A first visit moves JupyterLab's JavaScript and CSS bundles, several MB that gzip to about a
quarter; neither jupyter_server nor jupyterlab_server compresses them. Here every static-file route
of Jupyter (jupyter_server's FileFindHandler and its subclasses: /static/, /static/lab/,
/lab/extensions/, /static/notebook/, ...) gets a subclass that answers a request offering gzip with a
gzip file made once per file version (path, size, mtime) and kept in a folder of the account's
(~/.cache/jupyter-remote/static-gzip), so no request pays for compression twice, also after a
restart.

Only these files are compressed: they come from installed packages and carry no secret, and
nothing a request says ends up in them. Never the HTML pages (they carry the _xsrf token), the
/api answers (secrets beside text others can influence: compression would leak them byte by byte,
the BREACH attack), nor /files/ (the user's own files, which may hold both).

gzip only, no brotli: this module must load into any Jupyter Server 2 with nothing but the
standard library, and gzip already brings the bundles to about a quarter of their size.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import inspect
import logging
import os
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from jupyter_server.base.handlers import FileFindHandler
from tornado import web
from tornado.routing import Router

try:  # jupyter_server >= 2.13 refuses unauthenticated handlers that are not marked
    from jupyter_server.auth.decorator import allow_unauthenticated
except ImportError:  # pragma: no cover - older Jupyter Server

    def allow_unauthenticated(method):
        return method


log = logging.getLogger(__name__)

# Text formats that gzip well; images, woff/woff2 fonts and archives are compressed already.
COMPRESSIBLE = frozenset({
    ".js", ".mjs", ".css", ".json", ".map", ".svg", ".html", ".txt", ".ttf", ".eot", ".otf", ".wasm",
})
MIN_SIZE = 1024  # below this the gzip header and a round trip for nothing outweigh the gain
WORTH_IT = 0.9  # a copy must save at least a tenth, or the original is served
STALE_DAYS = 30  # copies of files no longer served (after an upgrade) are removed after this


@dataclass(frozen=True)
class Encoded:
    source: str  # the file as found on Jupyter's static path
    path: str  # its gzip copy


class GzipStore:
    """gzip copies of static files in one folder, made once, off the event loop, one at a time."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.worthless: set[str] = set()  # keys of files that gzip does not shrink enough
        self.pending: dict[str, asyncio.Future[bool]] = {}  # one compression per file at a time
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="static-gzip")

    @classmethod
    def open(cls, folder: Path) -> GzipStore | None:
        try:
            folder.mkdir(mode=0o700, parents=True, exist_ok=True)
            probe = tempfile.NamedTemporaryFile(dir=folder)  # noqa: SIM115 - closed at once
            probe.close()
        except OSError as error:
            log.warning("jupyter-remote: static files go uncompressed: %s: %s", folder, error)
            return None
        store = cls(folder)
        store.executor.submit(store.prune, time.time())
        return store

    async def encoded(self, source: str) -> Encoded | None:
        """The gzip copy of `source`, made now if missing; None when not worth it."""
        try:
            status = os.stat(source)
        except OSError:
            return None  # the handler answers 404 itself
        if status.st_size < MIN_SIZE:
            return None
        key = hashlib.sha256(f"{source}\0{status.st_size}\0{status.st_mtime_ns}".encode()).hexdigest()
        if key in self.worthless:
            return None
        path = self.folder / f"{key}.gz"
        if not path.exists():
            future = self.pending.get(key)
            if future is None:
                loop = asyncio.get_running_loop()
                future = loop.run_in_executor(self.executor, self._compress, source, path,
                                              status.st_mtime_ns)
                self.pending[key] = future
                future.add_done_callback(lambda _: self.pending.pop(key, None))
            if not await future:
                self.worthless.add(key)
                return None
        return Encoded(source, str(path))

    def _compress(self, source: str, path: Path, mtime_ns: int) -> bool:
        """Writes `path` (whole or not at all); False when gzip does not save enough."""
        try:
            data = Path(source).read_bytes()
            packed = gzip.compress(data, compresslevel=9, mtime=0)
            if len(packed) > len(data) * WORTH_IT:
                return False
            handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            with os.fdopen(handle, "wb") as stream:
                stream.write(packed)
            # The copy carries the original's time: Last-Modified and 304s stay those of the file.
            os.utime(temporary, ns=(mtime_ns, mtime_ns))
            os.replace(temporary, path)
            return True
        except OSError as error:
            log.warning("jupyter-remote: cannot keep a gzip copy of %s: %s", source, error)
            return False

    def prune(self, now: float) -> None:
        """Removes copies not read for STALE_DAYS (reads update atime at least daily: relatime)."""
        limit = now - STALE_DAYS * 86400
        for entry in os.scandir(self.folder):
            try:
                if entry.stat().st_atime < limit or entry.name.endswith(".tmp"):
                    os.unlink(entry.path)
            except OSError:
                continue


def offers_gzip(accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header accepts gzip (q=0 refuses it)."""
    for item in accept_encoding.split(","):
        name, _, parameters = item.strip().partition(";")
        if name.strip().lower() not in ("gzip", "*"):
            continue
        quality = parameters.strip().removeprefix("q=").strip() if "q=" in parameters else "1"
        try:
            return float(quality) > 0
        except ValueError:
            return False
    return False


def compressible(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in COMPRESSIBLE


class PrecompressedMixin:
    """Serves the gzip copy of a static file to a client that offers gzip; the rest is the base's."""

    gzip_store: GzipStore
    _encoded: Encoded | None = None

    @allow_unauthenticated  # as FileFindHandler.get: the login page needs these files
    async def get(self, path: str, include_body: bool = True) -> None:
        self._encoded = None
        if offers_gzip(self.request.headers.get("Accept-Encoding", "")):
            self.path = self.parse_url_path(path)  # as the base's get() sets it, which checks read
            found = self.get_absolute_path(self.root, self.path)
            source = self.validate_absolute_path(self.root, found)  # raises 403/404 as the base
            if source and compressible(source):
                self._encoded = await self.gzip_store.encoded(source)
        await super().get(path, include_body)

    def validate_absolute_path(self, root: str, absolute_path: str) -> str | None:
        # Every check runs on the original; only then is its copy put in its place.
        validated = super().validate_absolute_path(root, absolute_path)
        if self._encoded and validated == self._encoded.source:
            # Size and time come from this stat (tornado keeps the one it took of the original).
            self._stat_result = os.stat(self._encoded.path)
            return self._encoded.path
        return validated

    def get_content_type(self) -> str:
        if self._encoded:
            original, self.absolute_path = self.absolute_path, self._encoded.source
            try:
                return super().get_content_type()
            finally:
                self.absolute_path = original
        return super().get_content_type()

    def set_extra_headers(self, path: str) -> None:
        super().set_extra_headers(path)
        if self._encoded:
            self.set_header("Content-Encoding", "gzip")
        if compressible(path):  # caches must keep the two encodings apart
            self.set_header("Vary", "Accept-Encoding")


def precompressed(handler: type[FileFindHandler], store: GzipStore) -> type[FileFindHandler]:
    return type(f"Precompressed{handler.__name__}", (PrecompressedMixin, handler),
                {"gzip_store": store})


def serves_files_as_they_are(handler: type) -> bool:
    """A static-file handler that sends files unchanged (ThemesHandler rewrites its CSS: not it)."""
    return (isinstance(handler, type) and issubclass(handler, FileFindHandler)
            and all(inspect.getattr_static(handler, name)
                    is inspect.getattr_static(web.StaticFileHandler, name)
                    for name in ("get_content", "get_content_size")))


def install(app: web.Application, store: GzipStore) -> int:
    """Swaps every static-file route of `app` for its precompressed variant; how many it swapped.

    Called once every extension has added its routes (JupyterLab loads after this extension).
    """
    made: dict[type, type] = {}
    swapped = 0
    routers: list[Router] = [app.default_router]
    while routers:
        for rule in getattr(routers.pop(), "rules", []):
            target = rule.target
            if isinstance(target, Router):
                routers.append(target)
            elif serves_files_as_they_are(target) and not issubclass(target, PrecompressedMixin):
                if target not in made:
                    made[target] = precompressed(target, store)
                rule.target = made[target]
                swapped += 1
    return swapped


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jupyter-remote" / "static-gzip"


def start(serverapp) -> None:
    store = GzipStore.open(cache_folder())
    if store is None:
        return
    swapped = install(serverapp.web_app, store)
    serverapp.log.info("jupyter-remote: %s static-file routes serve gzip copies from %s",
                       swapped, store.folder)
