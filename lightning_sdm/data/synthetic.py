"""A hidden-Markov token source shaped like a residual codec, and the exact lowest NLL any
model can reach with each codebook pattern on it (its floor).

Level 0 of a timestep depends on a hidden state that follows a sticky Markov chain; level
i depends on the state and on level i-1, as a residual quantiser's codes do on the coarser
ones. A pattern predicts c[i, t] from the tokens decoded before its step G(i, t): those
are always a prefix of levels at each timestep, so forward-backward over the hidden chain
gives p(c[i, t] | known tokens) exactly.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class HiddenMarkovSource:
    initial: np.ndarray  # [H]
    transition: np.ndarray  # [H, H], row-stochastic
    emission_0: np.ndarray  # [H, V]: level 0 given the state
    emission: np.ndarray  # [C - 1, H, V, V]: level i given the state and level i - 1
    seed: int

    @property
    def num_states(self) -> int:
        return self.transition.shape[0]

    @property
    def num_levels(self) -> int:
        return self.emission.shape[0] + 1

    @property
    def cardinality(self) -> int:
        return self.emission_0.shape[1]

    @classmethod
    def random(
        cls,
        seed: int = 0,
        states: int = 8,
        levels: int = 4,
        cardinality: int = 16,
        stickiness: float = 0.9,
        concentration: float = 0.3,
    ) -> HiddenMarkovSource:
        """Sparse-ish Dirichlet emissions (`concentration` < 1): each state and coarser code
        favours a few codes, so context carries information at every level."""
        rng = np.random.default_rng(seed)
        transition = (1 - stickiness) * rng.dirichlet(np.ones(states), size=states)
        transition += stickiness * np.eye(states)
        v = cardinality
        return cls(
            initial=rng.dirichlet(np.ones(states)),
            transition=transition / transition.sum(1, keepdims=True),
            emission_0=rng.dirichlet(np.full(v, concentration), size=states),
            emission=rng.dirichlet(np.full(v, concentration), size=(levels - 1, states, v)),
            seed=seed,
        )

    def sample(self, count: int, timesteps: int, seed: int) -> np.ndarray:
        """Grids [count, C, T] of int64."""
        rng = np.random.default_rng(seed)
        grids = np.empty((count, self.num_levels, timesteps), dtype=np.int64)
        for n in range(count):
            state = rng.choice(self.num_states, p=self.initial)
            for t in range(timesteps):
                if t:
                    state = rng.choice(self.num_states, p=self.transition[state])
                code = rng.choice(self.cardinality, p=self.emission_0[state])
                grids[n, 0, t] = code
                for level in range(1, self.num_levels):
                    code = rng.choice(self.cardinality, p=self.emission[level - 1, state, code])
                    grids[n, level, t] = code
        return grids

    def save(self, path: str | Path, heldout: np.ndarray) -> Path:
        path = Path(path)
        np.savez(
            path, initial=self.initial, transition=self.transition,
            emission_0=self.emission_0, emission=self.emission, seed=self.seed,
            heldout=heldout,
        )  # fmt: skip
        return path

    @classmethod
    def load(cls, path: str | Path) -> tuple[HiddenMarkovSource, np.ndarray]:
        data = np.load(path)
        source = cls(
            initial=data["initial"], transition=data["transition"],
            emission_0=data["emission_0"], emission=data["emission"], seed=int(data["seed"]),
        )  # fmt: skip
        return source, data["heldout"]

    def prefix_likelihood(self, codes: np.ndarray, length: int) -> np.ndarray:
        """p(levels 0..length-1 of one timestep = codes[:length] | h), per state [H]."""
        if length == 0:
            return np.ones(self.num_states)
        likelihood = self.emission_0[:, codes[0]].copy()
        for level in range(1, length):
            likelihood *= self.emission[level - 1, :, codes[level - 1], codes[level]]
        return likelihood

    def level_given_prefix(self, codes: np.ndarray, known: int, level: int) -> np.ndarray:
        """p(c[level] = v | h, levels 0..known-1), per state [H, V]; the levels between
        the known prefix and `level` are summed out."""
        if known > level:
            raise ValueError("the target level is inside the known prefix")
        if known == 0:
            current = self.emission_0.copy()  # [H, V]: level 0
        else:
            current = self.emission[known - 1, :, codes[known - 1], :].copy()  # level `known`
        for step in range(known + 1, level + 1):
            current = np.einsum("hu,huv->hv", current, self.emission[step - 1])
        return current


def known_prefixes(token_steps: np.ndarray, step: int) -> np.ndarray:
    """For each timestep, how many leading levels are decoded before `step` [T]; an error if
    the decoded levels of a timestep are not a prefix."""
    known = token_steps < step  # [C, T]
    lengths = known.sum(0)
    levels = np.arange(token_steps.shape[0])[:, None]
    if not np.array_equal(known, levels < lengths[None, :]):
        raise ValueError("a pattern decodes a timestep's levels out of order")
    return lengths


def pattern_nll(source: HiddenMarkovSource, grid: np.ndarray, token_steps: np.ndarray) -> float:
    """Sum over the grid's tokens of -log p(c[i, t] | tokens decoded before G(i, t)), nats."""
    timesteps = grid.shape[1]
    total = 0.0
    for step in np.unique(token_steps):
        prefixes = known_prefixes(token_steps, step)
        evidence = np.stack(
            [source.prefix_likelihood(grid[:, u], prefixes[u]) for u in range(timesteps)]
        )
        forward = np.empty((timesteps, source.num_states))
        belief = source.initial
        for u in range(timesteps):  # forward[u] = p(h_u | evidence before u), normalised
            if u:
                belief = belief @ source.transition
            forward[u] = belief / belief.sum()
            belief = forward[u] * evidence[u]
        backward = np.ones((timesteps, source.num_states))
        for u in range(timesteps - 2, -1, -1):  # p(evidence after u | h_u), normalised
            message = source.transition @ (evidence[u + 1] * backward[u + 1])
            backward[u] = message / message.sum()
        for level, t in zip(*np.nonzero(token_steps == step), strict=True):
            posterior = forward[t] * backward[t] * evidence[t]
            predictive = posterior @ source.level_given_prefix(grid[:, t], prefixes[t], level)
            total -= np.log(predictive[grid[level, t]] / posterior.sum())
    return total


def pattern_floor(source: HiddenMarkovSource, grids: np.ndarray, token_steps: np.ndarray) -> float:
    """Mean NLL per token (nats) that the best model decoding with `token_steps` reaches
    on `grids` [N, C, T]."""
    total = sum(pattern_nll(source, grid, token_steps) for grid in grids)
    return total / grids[..., : token_steps.shape[1]].size
