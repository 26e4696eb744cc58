"""A local HTTP server for download tests: Range requests, dropped connections, 503s.

Bound to 127.0.0.1 on a free port and run in a thread; no network is used.
"""

from __future__ import annotations

import re
import threading
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class FileServer:
    """Serves `files` (URL path -> bytes) with misbehaviours configurable per path.

    - drop_after[path] = n: the first answer sends only n bytes of the body and closes the
      connection (announcing the whole length, unless the path is in no_length or chunked).
    - fail_first[path] = k: the first k requests get 503.
    - ignore_range: paths answered 200 with the whole file even when a Range is asked for.
    - no_length: paths answered without Content-Length: the body ends when the connection
      closes, so a client cannot tell a cut-short body from a whole one.
    - chunked: paths answered with Transfer-Encoding: chunked (the last chunk marks the end;
      a dropped answer never sends it).
    """

    def __init__(self, files: dict[str, bytes] | None = None):
        self.files: dict[str, bytes] = dict(files or {})
        self.drop_after: dict[str, int] = {}
        self.fail_first: dict[str, int] = {}
        self.ignore_range: set[str] = set()
        self.no_length: set[str] = set()
        self.chunked: set[str] = set()
        self.requests: list[tuple[str, str | None]] = []
        self._answered: Counter[str] = Counter()
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> FileServer:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._server.shutdown()
        self._server.server_close()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args) -> None:
                pass

            def do_GET(self) -> None:
                path = self.path
                requested = self.headers.get("Range")
                with server._lock:
                    server.requests.append((path, requested))
                    server._answered[path] += 1
                    nth = server._answered[path]
                if path not in server.files:
                    self.send_error(404)
                    return
                if nth <= server.fail_first.get(path, 0):
                    self.send_error(503)
                    return
                data = server.files[path]
                start = 0
                match = re.fullmatch(r"bytes=(\d+)-", requested or "")
                if match and path not in server.ignore_range:
                    start = int(match.group(1))
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                body = data[start:]
                chunked = path in server.chunked
                if chunked:
                    self.send_header("Transfer-Encoding", "chunked")
                elif path not in server.no_length:
                    self.send_header("Content-Length", str(len(body)))
                self.send_header("Connection", "close")
                self.end_headers()
                self.close_connection = True
                limit = server.drop_after.get(path) if nth == 1 else None
                if not chunked:
                    self.wfile.write(body[:limit])
                    return
                for offset in range(0, len(body), 1000):
                    piece = body[offset : offset + 1000]
                    if limit is not None and offset + len(piece) > limit:  # cut in this chunk
                        self.wfile.write(b"%x\r\n%s" % (len(piece), piece[: limit - offset]))
                        return
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(piece), piece))
                self.wfile.write(b"0\r\n\r\n")

        return Handler
