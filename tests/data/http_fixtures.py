"""Real servers on 127.0.0.1 for remote-data tests: a plain HTTP server serving a folder,
and a fault-injecting proxy to put in front of it or of an S3 server (503 answers,
connections dropped partway through a file, files that never arrive)."""

from __future__ import annotations

import http.client
import threading
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from http.server import BaseHTTPRequestHandler, SimpleHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

# Hop-by-hop headers a proxy must not pass on.
HOP_HEADERS = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "upgrade"}


@dataclass
class Faults:
    """What the proxy does wrong to GETs of a file (by its name, the path's last part)."""

    unavailable_first: dict[str, int] = field(default_factory=dict)  # 503 for the first n
    dropped_first: dict[str, int] = field(default_factory=dict)  # cut halfway, first n
    always_dropped: set[str] = field(default_factory=set)
    gets: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def for_get(self, name: str) -> str | None:
        """'unavailable', 'dropped' or None for this GET of `name` (counted)."""
        with self.lock:
            self.gets[name] += 1
            count = self.gets[name]
        if count <= self.unavailable_first.get(name, 0):
            return "unavailable"
        if name in self.always_dropped or count <= self.dropped_first.get(name, 0):
            return "dropped"
        return None


class _Quiet:
    def log_message(self, *args) -> None:
        pass


class _FolderHandler(_Quiet, SimpleHTTPRequestHandler):
    pass


class _ProxyHandler(_Quiet, BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def __init__(self, *args, upstream: str, faults: Faults, **kwargs) -> None:
        self.upstream = urlsplit(upstream)
        self.faults = faults
        super().__init__(*args, **kwargs)

    def _forward(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        name = urlsplit(self.path).path.rstrip("/").rsplit("/", 1)[-1]
        fault = self.faults.for_get(name) if self.command == "GET" else None
        if fault == "unavailable":
            self.send_response(503, "Service Unavailable")
            self.send_header("Content-Length", "0")
            self.end_headers()
            return
        connection = http.client.HTTPConnection(self.upstream.hostname, self.upstream.port)
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_HEADERS}
        connection.request(self.command, self.path, body=body, headers=headers)
        response = connection.getresponse()
        data = response.read()
        connection.close()
        self.send_response(response.status, response.reason)
        head = self.command == "HEAD"  # its Content-Length is the file's: passed on as is
        for key, value in response.getheaders():
            if key.lower() not in HOP_HEADERS and (head or key.lower() != "content-length"):
                self.send_header(key, value)
        if not head:
            self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        if head:
            return
        if fault == "dropped" and len(data) > 1:
            self.wfile.write(data[: len(data) // 2])  # half, then the connection goes
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        self.wfile.write(data)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward


class _Server:
    def __init__(self, handler) -> None:
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


class FolderServer(_Server):
    """`with FolderServer(folder) as server:` serves `folder` at `server.url`."""

    def __init__(self, folder) -> None:
        super().__init__(partial(_FolderHandler, directory=str(folder)))


class FaultProxy(_Server):
    """`with FaultProxy(upstream_url, faults) as proxy:` forwards every request to the
    upstream server, doing to GETs what `faults` says."""

    def __init__(self, upstream: str, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        super().__init__(partial(_ProxyHandler, upstream=upstream, faults=self.faults))


class _RefusingHandler(_Quiet, BaseHTTPRequestHandler):
    def __init__(self, *args, status: int, answered: Counter, **kwargs) -> None:
        self.status = status
        self.answered = answered
        super().__init__(*args, **kwargs)

    def _refuse(self) -> None:
        self.answered[self.command] += 1
        body = b'{"error": {"code": %d, "message": "Anonymous caller does not have access"}}'
        body %= self.status
        self.send_response(self.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _refuse


class RefusingServer(_Server):
    """`with RefusingServer(401) as server:` answers every request with that status and a
    JSON error body, as a storage API does to a caller without (good) credentials;
    `answered` counts the requests by method."""

    def __init__(self, status: int) -> None:
        self.answered: Counter = Counter()
        super().__init__(partial(_RefusingHandler, status=status, answered=self.answered))
