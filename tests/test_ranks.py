"""is_first_process: the launch's first process, whichever launcher named the ranks."""

import pytest

from lightning_sdm.ranks import RANK_VARIABLES, is_first_process


@pytest.fixture(autouse=True)
def no_launcher(monkeypatch):
    for name in RANK_VARIABLES:
        monkeypatch.delenv(name, raising=False)


def test_a_plain_process_is_the_first():
    assert is_first_process()


@pytest.mark.parametrize(
    "variable", ["RANK", "LOCAL_RANK", "NODE_RANK", "SLURM_PROCID", "JSM_NAMESPACE_RANK"]
)
def test_any_launcher_naming_another_rank_makes_it_not_the_first(monkeypatch, variable):
    monkeypatch.setenv(variable, "0")
    assert is_first_process()
    monkeypatch.setenv(variable, "3")
    assert not is_first_process()
