"""What a user does in Jupyter, told to the daemon's idle stop; and its warning, told to JupyterLab.

Activity is written as the modification time of one file (``activity_file``), at most once a
second: the daemon reads it with lstat alone. The account could set that time itself; that only
keeps the machine up, which it could do anyway by running something.

User activity:
- a kernel executing (execution_state busy, whether or not it prints) or sent a request
  (jupyter_server's kernel.last_activity, which kernel_info, comm_info and status traffic of an
  untouched tab does not move);
- input to a terminal (its "stdin" messages; not its output, not a resize);
- a successful login; a page a logged-in user loads (/lab, /tree, /notebooks/..., /files/...);
  any change a logged-in user makes (a request other than GET: save, rename, upload, start a
  kernel).
Not activity: GET requests to the REST APIs, which is all an open but untouched JupyterLab does by
itself (/api/sessions, /api/kernels, /api/terminals, /api/contents, /api/kernelspecs, /api/me,
/lab/api/..., /lsp/status), its workspace autosave, static files, the daemon's health probe
(GET <base_url>api, unauthenticated) and anything unauthenticated.

The warning: the daemon writes ``notice_file`` ({"message": ..., "due": ...} or {}); GET
<base_url>jupyter-remote/idle returns it to the front-end piece (labextension/), which shows it in
JupyterLab's notification area.
"""

from __future__ import annotations

import json
import os
import time

from jupyter_server.base.handlers import APIHandler
from jupyter_server.utils import url_path_join
from tornado import web
from tornado.ioloop import PeriodicCallback

FLUSH_INTERVAL_MS = 1000
NOTICE_PATH = "jupyter-remote/idle"
# First path segments (after base_url) of the pages a user opens.
PAGES = {"lab", "tree", "notebooks", "edit", "view", "files", "consoles", "terminals", "doc"}
# Writes JupyterLab makes by itself, with nobody at the keyboard.
BACKGROUND_WRITES = ("lab/api/workspaces",)


def is_user_request(method: str, path: str, base_url: str, status: int, logged_in: bool) -> bool:
    """Whether a finished HTTP request was something a user did (see the module's docstring)."""
    relative = path[len(base_url):] if path.startswith(base_url) else path.lstrip("/")
    if method == "POST" and relative == "login":
        return status == 302  # a successful login; a refused one is no activity
    if not logged_in or status >= 400:
        return False
    if method != "GET":
        return not relative.startswith(BACKGROUND_WRITES)
    parts = relative.split("/")
    return parts[0] in PAGES and (len(parts) == 1 or parts[1] not in ("api", "extensions"))


class ActivityTracker:
    def __init__(self, serverapp, activity_file: str, notice_file: str) -> None:
        self.serverapp = serverapp
        self.activity_file = activity_file
        self.notice_file = notice_file
        self.base_url = serverapp.base_url
        self.last = time.time()  # the server starting counts: the daemon's clock starts with it
        self.written = 0.0

    def install(self) -> None:
        """While the extension loads: hooks and the handler, before the first request."""
        web_app = self.serverapp.web_app
        logged = web_app.settings["log_function"]

        def log_and_notice(handler) -> None:
            logged(handler)
            request = handler.request
            if is_user_request(request.method, request.path, self.base_url, handler.get_status(),
                               bool(getattr(handler, "_jupyter_current_user", None))):
                self.touch()

        web_app.settings["log_function"] = log_and_notice
        web_app.add_handlers(".*$", [(url_path_join(self.base_url, NOTICE_PATH), NoticeHandler,
                                      {"notice_file": self.notice_file})])
        self._watch_terminal_input()

    def start(self) -> None:
        self.flush()
        PeriodicCallback(self.flush, FLUSH_INTERVAL_MS).start()

    def touch(self) -> None:
        self.last = time.time()

    def latest(self) -> float:
        latest = self.last
        kernels = self.serverapp.kernel_manager
        for kernel_id in kernels.list_kernel_ids():
            kernel = kernels.get_kernel(kernel_id)
            if getattr(kernel, "execution_state", None) == "busy":
                return time.time()
            when = getattr(kernel, "last_activity", None)
            if when is not None:
                latest = max(latest, when.timestamp())
        return latest

    def flush(self) -> None:
        try:
            latest = self.latest()
            if latest > self.written:
                if not os.path.exists(self.activity_file):
                    flags = os.O_CREAT | os.O_WRONLY | os.O_NOFOLLOW
                    os.close(os.open(self.activity_file, flags, 0o644))
                os.utime(self.activity_file, (latest, latest), follow_symlinks=False)
                self.written = latest
        except FileNotFoundError:
            pass  # the daemon makes the folder before Jupyter starts; `render` alone does not
        except Exception:  # a bad tick must not stop the next
            self.serverapp.log.exception("jupyter-remote: recording activity failed")

    def _watch_terminal_input(self) -> None:
        try:
            from jupyter_server_terminals.handlers import TermSocket
        except ImportError:  # terminals not installed: nothing to watch
            return
        received = TermSocket.on_message
        tracker = self

        async def on_message(socket, message):
            # terminado's protocol: ["stdin", text] is typing; ["set_size", ...] is a resize.
            if isinstance(message, str) and message.startswith('["stdin"'):
                tracker.touch()
            return await received(socket, message)

        TermSocket.on_message = on_message  # type: ignore[method-assign]


class NoticeHandler(APIHandler):
    """The idle warning the daemon wrote, for the front-end's poll (not counted as activity)."""

    def initialize(self, notice_file: str) -> None:
        self.notice_file = notice_file

    @web.authenticated
    def get(self) -> None:
        try:
            with open(self.notice_file, encoding="utf-8") as stream:
                notice = json.load(stream)
        except (OSError, ValueError):
            notice = {}
        self.set_header("Cache-Control", "no-store")
        self.finish(json.dumps(notice))
