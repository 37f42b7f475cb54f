"""benchmarks/remote_data.py --quick: a row per source, the machine, rates that are rates."""

import json

from tests.benchmark_runs import run_benchmark


def test_the_quick_run_measures_local_http_and_s3_side_by_side(tmp_path):
    out = run_benchmark("remote_data.py", "--quick", "--cache", "--json", str(tmp_path / "r.json"))
    payload = json.loads((tmp_path / "r.json").read_text())
    assert payload["machine"]["cpu"] and "| local disk |" in out and "| HTTP |" in out
    rows = payload["rows"]
    assert set(rows) == {"local disk", "HTTP", "S3", "S3, cached (2nd epoch)"}
    assert all(rate > 0 for rates in rows.values() for rate in rates)
