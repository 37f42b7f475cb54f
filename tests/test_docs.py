"""The documentation site builds without a warning (broken links, missing pages, stale
API references fail it), and the README's links land on its pages."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_the_site_builds_strictly(tmp_path):
    environment = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "-q", "-d", str(tmp_path)],
        cwd=ROOT, capture_output=True, text=True, env=environment, timeout=600,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-3000:]
    assert (tmp_path / "guides" / "families" / "index.html").is_file()
    api = (tmp_path / "reference" / "families" / "index.html").read_text(encoding="utf-8")
    assert "ModelFamily" in api and "sampling_from" in api  # built from the docstrings
    # The benchmarks page is benchmarks/README.md itself, included whole.
    page = (tmp_path / "benchmarks" / "index.html").read_text(encoding="utf-8")
    assert "decoding_speed.py" in page and "dit_speed.py" in page


def test_the_readme_links_to_pages_that_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    pages = re.findall(r"\]\((docs/[^)#]+)", readme)
    assert pages, "the README links to the documentation"
    missing = [page for page in pages if not (ROOT / page).is_file()]
    assert not missing, missing
