"""JupyterLab's own files compressed once and kept on disk, for browsers that offer gzip or brotli.

A first visit moves JupyterLab's JavaScript and CSS bundles, several MB that gzip to about a
quarter; neither jupyter_server nor jupyterlab_server compresses them. Here every static-file route
of Jupyter (jupyter_server's FileFindHandler and its subclasses: /static/, /static/lab/,
/lab/extensions/, /static/notebook/, the theme CSS under /lab/api/themes/) gets a subclass that
answers a request offering gzip or br with a copy made once per file version (path, size, mtime;
for theme CSS, which ThemesHandler rewrites with the server's own URL, also of what it sends)
kept in a folder of the account's (~/.cache/jupyter-remote/static), so no request pays for
compression twice, also after a restart.

Only these files are compressed: they come from installed packages and carry no secret, and
nothing a request says ends up in them. Never the HTML pages (they carry the _xsrf token), the
/api answers (secrets beside text others can influence: compression would leak them byte by byte,
the BREACH attack), nor /files/ (the user's own files, which may hold both).

brotli when the `brotli` package is importable (it is in jupyter-remote's environment: wheels for
amd64 and arm64, and Debian has python3-brotli); with a Jupyter of the user's own that lacks it,
gzip only: this module needs nothing beyond the standard library.
"""

from __future__ import annotations

import asyncio
import gzip
import hashlib
import inspect
import logging
import os
from typing import TYPE_CHECKING
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from jupyter_server.base.handlers import FileFindHandler
from tornado import web
from tornado.routing import Router

try:  # optional: Jupyter's own environment may lack it (a user's Anaconda); gzip is enough then
    import brotli
except ImportError:  # pragma: no cover - depends on the environment
    brotli = None

try:  # jupyter_server >= 2.13 refuses unauthenticated handlers that are not marked
    from jupyter_server.auth.decorator import allow_unauthenticated
except ImportError:  # pragma: no cover - older Jupyter Server

    def allow_unauthenticated(method):  # type: ignore[misc]
        return method


log = logging.getLogger(__name__)

# Text formats that gzip well; images, woff/woff2 fonts and archives are compressed already.
COMPRESSIBLE = frozenset({
    ".js", ".mjs", ".css", ".json", ".map", ".svg", ".html", ".txt", ".ttf", ".eot", ".otf",
    ".wasm", ".ico",
})
MIN_SIZE = 1024  # below this the gzip header and a round trip for nothing outweigh the gain
WORTH_IT = 0.9  # a copy must save at least a tenth, or the original is served
STALE_DAYS = 30  # copies of files no longer served (after an upgrade) are removed after this


@dataclass(frozen=True)
class Encoded:
    source: str  # the file as found on Jupyter's static path
    path: str  # its compressed copy
    encoding: str  # "br" or "gzip"


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)


def _brotli(data: bytes) -> bytes:
    return brotli.compress(data, quality=11)


class CompressedStore:
    """Compressed copies of static files in one folder, each made once, off the event loop.

    gzip (level 9, about 0.1 s a MB) is made when a file is first asked for, and that request
    waits for it. brotli (quality 11: a quarter smaller than gzip for JavaScript, but about 1.5 s a
    MB) never makes anyone wait: it is made afterwards on a thread of lowest priority, and served
    from then on to browsers that offer it.
    """

    def __init__(self, folder: Path):
        self.folder = folder
        self.worthless: set[str] = set()  # "key.encoding" of copies that do not save enough
        self.pending: dict[str, asyncio.Future[bool]] = {}  # one gzip run per file at a time
        self.queued: set[str] = set()  # brotli copies waiting for the background thread
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="static-gzip")
        self.background = ThreadPoolExecutor(max_workers=1, thread_name_prefix="static-brotli",
                                             initializer=_lowest_priority)

    @classmethod
    def open(cls, folder: Path) -> CompressedStore | None:
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

    async def encoded(self, source: str, accept_encoding: str,
                      content: bytes | None = None) -> Encoded | None:
        """The best copy of `source` (or of `content`, what the handler makes of it) for this
        Accept-Encoding; None: send the response as it is."""
        try:
            status = os.stat(source)
        except OSError:
            return None  # the handler answers 404 itself
        if (status.st_size if content is None else len(content)) < MIN_SIZE:
            return None
        version = f"{source}\0{status.st_size}\0{status.st_mtime_ns}"
        if content is not None:  # a handler's rewrite may depend on more than the file
            version += f"\0{hashlib.sha256(content).hexdigest()}"
        key = hashlib.sha256(version.encode()).hexdigest()
        if brotli and f"{key}.br" not in self.worthless and offers("br", accept_encoding):
            path = self.folder / f"{key}.br"
            if path.exists():
                return Encoded(source, str(path), "br")
            if key not in self.queued:
                self.queued.add(key)
                self.background.submit(self._make, _brotli, source, content, path,
                                       status.st_mtime_ns, key)
        if f"{key}.gz" in self.worthless or not offers("gzip", accept_encoding):
            return None
        path = self.folder / f"{key}.gz"
        if not path.exists():
            future = self.pending.get(key)
            if future is None:
                loop = asyncio.get_running_loop()
                future = loop.run_in_executor(self.executor, self._make, _gzip, source, content,
                                              path, status.st_mtime_ns, key)
                self.pending[key] = future
                future.add_done_callback(lambda _: self.pending.pop(key, None))
            if not await future:
                return None
        return Encoded(source, str(path), "gzip")

    def _make(self, compress, source: str, content: bytes | None, path: Path, mtime_ns: int,
              key: str) -> bool:
        """Writes `path` (whole or not at all); False when the copy would not save enough."""
        try:
            data = Path(source).read_bytes() if content is None else content
            packed = compress(data)
            if len(packed) > len(data) * WORTH_IT:
                self.worthless.add(f"{key}{path.suffix}")  # a set's add is atomic under the GIL
                return False
            handle, temporary = tempfile.mkstemp(dir=self.folder, suffix=".tmp")
            with os.fdopen(handle, "wb") as stream:
                stream.write(packed)
            # The copy carries the original's time: Last-Modified and 304s stay those of the file.
            os.utime(temporary, ns=(mtime_ns, mtime_ns))
            os.replace(temporary, path)
            return True
        except Exception as error:  # noqa: BLE001 - a copy not made only costs bytes on the wire
            log.warning("jupyter-remote: cannot keep a compressed copy of %s: %s", source, error)
            return False

    def prune(self, now: float) -> None:
        """Removes copies not read for STALE_DAYS (reads update atime at least daily: relatime),
        and what an interrupted write left."""
        for entry in os.scandir(self.folder):
            try:
                status = entry.stat()
                if status.st_atime < now - STALE_DAYS * 86400 or (
                        entry.name.endswith(".tmp") and status.st_mtime < now - 3600):
                    os.unlink(entry.path)
            except OSError:
                continue


def _lowest_priority() -> None:
    """brotli runs at nice 19: the kernels and the event loop come first (Linux nices threads)."""
    try:
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
    except (AttributeError, OSError):
        pass


def offers(encoding: str, accept_encoding: str) -> bool:
    """Whether an Accept-Encoding header accepts `encoding` (q=0 refuses it)."""
    for item in accept_encoding.split(","):
        name, _, parameters = item.strip().partition(";")
        if name.strip().lower() not in (encoding, "*"):
            continue
        quality = parameters.strip().removeprefix("q=").strip() if "q=" in parameters else "1"
        try:
            return float(quality) > 0
        except ValueError:
            return False
    return False


def compressible(path: str) -> bool:
    return os.path.splitext(path)[1].lower() in COMPRESSIBLE


# Mixed into FileFindHandler and its subclasses (precompressed()); type checkers see that base.
_MixinBase = FileFindHandler if TYPE_CHECKING else object


class PrecompressedMixin(_MixinBase):  # type: ignore[valid-type,misc]
    """Serves a compressed copy of a static file to a client that offers it; the rest: the base."""

    compressed_store: CompressedStore
    _encoded: Encoded | None = None

    @allow_unauthenticated  # as FileFindHandler.get: the login page needs these files
    async def get(self, path: str, include_body: bool = True) -> None:
        self._encoded = None
        accept_encoding = self.request.headers.get("Accept-Encoding", "")
        if offers("gzip", accept_encoding) or offers("br", accept_encoding):
            self.path = self.parse_url_path(path)  # as the base's get() sets it, which checks read
            found = self.get_absolute_path(self.root, self.path)
            source = self.validate_absolute_path(self.root, found)  # raises 403/404 as the base
            if source and compressible(source):
                self._encoded = await self.compressed_store.encoded(
                    source, accept_encoding, self._rewritten(source))
        await super().get(path, include_body)

    def _rewritten(self, source: str) -> bytes | None:
        """What a handler that rewrites its files (ThemesHandler: URLs in CSS) sends for `source`;
        None for a handler that sends files as they are."""
        if rewrites_nothing(type(self)):
            return None
        self.absolute_path = source  # as the base's get() sets it, which get_content reads
        content = self.get_content(source)
        return content if isinstance(content, bytes) else b"".join(content)

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
            self.set_header("Content-Encoding", self._encoded.encoding)
        if compressible(path):  # caches must keep the two encodings apart
            self.set_header("Vary", "Accept-Encoding")


def precompressed(handler: type[FileFindHandler], store: CompressedStore) -> type[FileFindHandler]:
    return type(f"Precompressed{handler.__name__}", (PrecompressedMixin, handler),
                {"compressed_store": store})


def rewrites_nothing(handler: type) -> bool:
    """Whether a static-file handler sends its files unchanged (ThemesHandler rewrites its CSS's
    URLs: its copies are made of what it sends; a copy's own name ends in .gz or .br, which it
    sends unchanged)."""
    return all(inspect.getattr_static(handler, name)
               is inspect.getattr_static(web.StaticFileHandler, name)
               for name in ("get_content", "get_content_size"))


def install(app: web.Application, store: CompressedStore) -> int:
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
            elif (isinstance(target, type) and issubclass(target, FileFindHandler)
                  and not issubclass(target, PrecompressedMixin)):
                if target not in made:
                    made[target] = precompressed(target, store)
                rule.target = made[target]
                swapped += 1
    return swapped


def cache_folder() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "jupyter-remote" / "static"


def start(serverapp) -> None:
    store = CompressedStore.open(cache_folder())
    if store is None:
        return
    swapped = install(serverapp.web_app, store)
    serverapp.log.info("jupyter-remote: %s static-file routes serve %s copies from %s", swapped,
                       "brotli and gzip" if brotli else "gzip", store.folder)
