"""Batches per second from local disk, an HTTP server and an S3 server, side by side: the
training DataModule at 2 ranks x 2 workers over the same shards, one epoch each.

    python benchmarks/remote_data.py [--shards 32 --items 32 --seconds 30 --rounds 2]
    python benchmarks/remote_data.py --quick   # a smoke run

The servers run on this machine (Python's HTTP server; moto's S3 server, when moto[server]
and s3fs are installed), so a row measures what reading through the protocol costs, not a
network: on a cluster add the network's bandwidth and latency. `--cache` adds a row reading
S3 through the local shard cache, second epoch (no downloads).
"""

from __future__ import annotations

import argparse
import itertools
import json
import logging
import multiprocessing
import os
import socket
import statistics
import sys
import tempfile
import threading
import time
import urllib.request
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lightning_sdm.codecs import CodecIdentity
from lightning_sdm.data.datamodule import TokenShardsDataModule
from lightning_sdm.data.shards import ShardWriter, TokenizedItem
from lightning_sdm.data.tokenize import TokenizeConfig, write_index
from lightning_sdm.machine import machine, machine_line

CODEC = CodecIdentity(frame_rate=50.0, num_codebooks=4, sample_rate=32000, cardinality=2048)


def write_catalogue(folder: Path, shards: int, items: int, seconds: float) -> int:
    """Random 4 x 2048 token grids of `seconds` each, as tokenize writes them; bytes."""
    folder.mkdir(parents=True)
    rng = np.random.default_rng(0)
    frames = int(seconds * CODEC.frame_rate)
    writer = ShardWriter(folder, itertools.count(), items, 1 << 40, CODEC)
    for number in range(shards * items):
        codes = rng.integers(0, 2048, (4, frames)).astype(np.int16)
        key = f"item{number:06d}"
        writer.write(TokenizedItem(key, codes, f"caption {number}", {}, seconds, key, 32000))
    writer.finish()
    write_index(folder, CODEC, [], 0, 0, TokenizeConfig(input="", output=str(folder)))
    return sum(p.stat().st_size for p in folder.glob("shard-*.tar"))


class _Quiet(SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:
        pass


def http_server(folder: Path) -> tuple[ThreadingHTTPServer, str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(_Quiet, directory=str(folder)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, f"http://127.0.0.1:{server.server_address[1]}"


def s3_server(folder: Path):
    """moto's S3 server with the shards uploaded; None when moto or s3fs is missing."""
    try:
        import s3fs
        from moto.server import ThreadedMotoServer
    except ImportError:
        return None
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the server's request log
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))
    os.environ.update(
        AWS_ACCESS_KEY_ID="benchmark", AWS_SECRET_ACCESS_KEY="benchmark",
        AWS_DEFAULT_REGION="us-east-1", AWS_ENDPOINT_URL=endpoint,
    )  # fmt: skip
    fs = s3fs.S3FileSystem()
    fs.mkdir("catalogue")
    for path in sorted(folder.iterdir()):
        fs.put_file(str(path), f"catalogue/shards/{path.name}")
    return server, "s3://catalogue/shards"


def read_rank(location: str, rank: int, world: int, options: dict, epochs: int, out) -> None:
    """One rank's epochs after its setup (index, sidecars); puts the last epoch's batch
    count and seconds on `out`."""
    module = TokenShardsDataModule(location, **options)
    module.setup("fit")
    batches, seconds = 0, 0.0
    for _ in range(epochs):
        started = time.perf_counter()
        batches = sum(1 for _ in module.make_loader("train", rank, world))
        seconds = time.perf_counter() - started
    out.put((batches, seconds))


def epoch_rate(location: str, args, cache: str | None = None) -> tuple[float, int]:
    """Batches per second of all ranks together over one epoch (ranks as processes, each
    with its DataLoader workers; the slowest rank's epoch is the time). With a cache, a
    first pass fills it and is not timed."""
    options = {
        "batch_size": args.batch, "num_workers": args.workers, "segment_seconds": 10.0,
        "shuffle_buffer": 64, "cache_dir": cache,
    }  # fmt: skip
    context = multiprocessing.get_context("fork")
    results = context.Queue()
    if cache:
        read_rank(location, 0, 1, options, 1, results)
        results.get()
    ranks = [
        context.Process(target=read_rank, args=(location, r, args.ranks, options, 1, results))
        for r in range(args.ranks)
    ]
    for process in ranks:
        process.start()
    measured = [results.get(timeout=3600) for _ in ranks]
    for process in ranks:
        process.join()
    batches = sum(count for count, _ in measured)
    return batches / max(seconds for _, seconds in measured), batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shards", type=int, default=32)
    parser.add_argument("--items", type=int, default=32, help="items per shard")
    parser.add_argument("--seconds", type=float, default=30.0, help="audio per item")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--workers", type=int, default=2, help="per rank")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--cache", action="store_true", help="add a row through the cache")
    parser.add_argument("--quick", action="store_true", help="a smoke run (tests)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    if args.quick:
        args.shards, args.items, args.seconds, args.rounds, args.batch = 4, 4, 12.0, 1, 2
    with tempfile.TemporaryDirectory() as temp:
        folder = Path(temp) / "shards"
        size = write_catalogue(folder, args.shards, args.items, args.seconds)
        http, http_url = http_server(folder)
        s3 = s3_server(folder)
        locations = {"local disk": str(folder), "HTTP": http_url}
        if s3 is not None:
            locations["S3"] = s3[1]
        rows: dict[str, list[float]] = {name: [] for name in locations}
        if args.cache and s3 is not None:
            rows["S3, cached (2nd epoch)"] = []
        batches = 0
        for _ in range(args.rounds):  # interleaved: a slow spell hits every row alike
            for name, location in locations.items():
                rate, batches = epoch_rate(location, args)
                rows[name].append(rate)
            if "S3, cached (2nd epoch)" in rows:
                cache = tempfile.mkdtemp(dir=temp)
                rows["S3, cached (2nd epoch)"].append(epoch_rate(locations["S3"], args, cache)[0])
        http.shutdown()
        if s3 is not None:
            s3[0].stop()
    local = statistics.mean(rows["local disk"])
    lines = [
        f"{args.ranks} ranks x {args.workers} workers, batch {args.batch}, {args.shards} shards "
        f"of {args.items} items ({args.seconds:g} s each; {size / 2**20:.0f} MB), {batches} "
        f"batches per epoch, {args.rounds} rounds; {machine_line()}",
        "",
        "| source | batches/s | vs local disk |",
        "|---|---|---|",
    ]
    for name, rates in rows.items():
        mean = statistics.mean(rates)
        lines.append(f"| {name} | {mean:.1f} | {mean / local:.2f}x |")
    if s3 is None:
        lines.append("| S3 | (not measured: pip install s3fs 'moto[server]') | |")
    print("\n".join(lines))
    if args.json:
        payload = {"machine": machine(), "args": vars(args) | {"json": str(args.json)},
                   "rows": rows, "bytes": size}  # fmt: skip
        args.json.write_text(json.dumps(payload, indent=2))


if __name__ == "__main__":
    main()
