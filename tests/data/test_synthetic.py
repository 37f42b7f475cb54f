"""The hidden-Markov source and the exact per-pattern floors, checked by brute force."""

import itertools

import numpy as np
import pytest

from lightning_sdm.data.synthetic import HiddenMarkovSource, pattern_floor, pattern_nll
from lightning_sdm.patterns import make_pattern

LEVELS, TIMESTEPS = 3, 3


def steps_of(name: str, k: int = 1, timesteps: int = TIMESTEPS, levels: int = LEVELS):
    return make_pattern(name, k=k).layout(timesteps, levels).token_steps.numpy()


def all_grids_probability(source: HiddenMarkovSource) -> tuple[np.ndarray, np.ndarray]:
    """Every grid [G, C, T] and its probability, summing over every hidden path."""
    v, c, t = source.cardinality, source.num_levels, TIMESTEPS
    grids = np.array(list(itertools.product(range(v), repeat=c * t))).reshape(-1, c, t)
    probability = np.zeros(len(grids))
    for path in itertools.product(range(source.num_states), repeat=t):
        p_path = source.initial[path[0]]
        for a, b in itertools.pairwise(path):
            p_path *= source.transition[a, b]
        p_grids = np.full(len(grids), p_path)
        for u, h in enumerate(path):
            p_grids *= source.emission_0[h, grids[:, 0, u]]
            for level in range(1, c):
                p_grids *= source.emission[level - 1, h, grids[:, level - 1, u], grids[:, level, u]]
        probability += p_grids
    return grids, probability


def brute_force_nll(source, grid, token_steps, grids, probability) -> float:
    total = 0.0
    for level, t in itertools.product(range(LEVELS), range(TIMESTEPS)):
        known = token_steps < token_steps[level, t]
        consistent = (grids[:, known] == grid[known]).all(1)
        target = consistent & (grids[:, level, t] == grid[level, t])
        total -= np.log(probability[target].sum() / probability[consistent].sum())
    return total


@pytest.mark.parametrize(
    ("name", "k"), [("parallel", 1), ("delay", 1), ("flat", 1), ("stack", 1), ("stack_delay", 2)]
)
def test_floors_equal_brute_force_enumeration(name, k):
    source = HiddenMarkovSource.random(seed=3, states=2, levels=LEVELS, cardinality=3)
    grids, probability = all_grids_probability(source)
    assert abs(probability.sum() - 1) < 1e-12
    token_steps = steps_of(name, k)
    for grid in source.sample(4, TIMESTEPS, seed=1):
        exact = brute_force_nll(source, grid, token_steps, grids, probability)
        assert abs(pattern_nll(source, grid, token_steps) - exact) < 1e-9


def test_flat_is_the_entropy_and_no_pattern_beats_it():
    source = HiddenMarkovSource.random(seed=0, states=4, levels=4, cardinality=8)
    heldout = source.sample(40, 24, seed=7)
    floors = {
        (name, k): pattern_floor(source, heldout, steps_of(name, k, 24, 4))
        for name, k in [
            ("flat", 1),
            ("delay", 1),
            ("parallel", 1),
            ("stack_delay", 1),
            ("stack_delay", 3),
        ]
    }
    flat = floors[("flat", 1)]
    assert all(value >= flat - 1e-9 for value in floors.values())
    assert floors[("stack_delay", 1)] == pytest.approx(floors[("delay", 1)])  # same schedule
    assert floors[("parallel", 1)] > floors[("delay", 1)] > flat


def test_the_source_saves_every_array_and_loads_back(tmp_path):
    source = HiddenMarkovSource.random(seed=5, states=3, levels=3, cardinality=4)
    heldout = source.sample(2, 5, seed=0)
    path = source.save(tmp_path / "source.npz", heldout)
    with np.load(path) as data:
        assert set(data.files) == {
            "initial",
            "transition",
            "emission_0",
            "emission",
            "seed",
            "heldout",
        }
        assert data["emission"].shape == (2, 3, 4, 4)
        assert np.allclose(data["emission"].sum(-1), 1) and np.allclose(
            data["transition"].sum(1), 1
        )
    loaded, grids = HiddenMarkovSource.load(path)
    assert np.array_equal(grids, heldout) and loaded.seed == 5
    assert np.array_equal(loaded.emission, source.emission)
