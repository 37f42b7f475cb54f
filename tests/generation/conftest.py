import pytest


@pytest.fixture(autouse=True)
def _in_a_temporary_folder(tmp_path, monkeypatch):
    """A test that does not pass --output_dir (or one whose refusal fails) writes and locks
    ./generated: there, not in the checkout, where it would make the next test's run refuse
    an occupied folder, and a test running beside it on another worker find it locked."""
    monkeypatch.chdir(tmp_path)
