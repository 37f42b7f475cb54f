"""A real HTTP server on 127.0.0.1 serving a folder, with faults injected on request:
503 answers, connections dropped partway through a file, files that never succeed."""

from __future__ import annotations

import threading
from collections import Counter
from dataclasses import dataclass, field
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


@dataclass
class Faults:
    """What the server does wrong, per file name (counted per GET of that name)."""

    unavailable_first: dict[str, int] = field(default_factory=dict)  # 503 for the first n
    dropped_first: dict[str, int] = field(default_factory=dict)  # cut partway, first n
    always_dropped: set[str] = field(default_factory=set)
    gets: Counter = field(default_factory=Counter)
    lock: threading.Lock = field(default_factory=threading.Lock)


class FaultyHandler(SimpleHTTPRequestHandler):
    def __init__(self, *args, faults: Faults, **kwargs) -> None:
        self.faults = faults
        super().__init__(*args, **kwargs)

    def log_message(self, *args) -> None:  # quiet tests
        pass

    def do_GET(self) -> None:
        name = Path(self.path.split("?")[0]).name
        with self.faults.lock:
            self.faults.gets[name] += 1
            count = self.faults.gets[name]
        if count <= self.faults.unavailable_first.get(name, 0):
            self.send_error(503, "Service Unavailable")
            return
        dropped = name in self.faults.always_dropped
        if dropped or count <= self.faults.dropped_first.get(name, 0):
            path = Path(self.translate_path(self.path))
            data = path.read_bytes()
            self.send_response(200)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data[: len(data) // 2])  # half, then the connection goes
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(2)
            return
        super().do_GET()


class FolderServer:
    """`with FolderServer(folder) as server:` serves `folder` at `server.url`."""

    def __init__(self, folder: Path, faults: Faults | None = None) -> None:
        self.faults = faults or Faults()
        handler = partial(FaultyHandler, directory=str(folder), faults=self.faults)
        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def __enter__(self) -> FolderServer:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
