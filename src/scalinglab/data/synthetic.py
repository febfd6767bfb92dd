"""A random sparse order-1 Markov chain: a language whose entropy rate, and so the best loss any
model can reach on it, is known exactly."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np


@dataclass
class MarkovChain:
    next_states: np.ndarray  # (vocab_size, n_next): the states each state can move to
    next_probs: np.ndarray  # (vocab_size, n_next): their probabilities

    @classmethod
    def random(cls, vocab_size: int, n_next: int, seed: int) -> MarkovChain:
        """Each state moves to n_next states with Dirichlet(1) probabilities. One of them is always
        the next state mod vocab_size, which makes the chain irreducible, so its stationary
        distribution is unique."""
        rng = np.random.default_rng(seed)
        next_states = np.empty((vocab_size, n_next), dtype=np.int64)
        for state in range(vocab_size):
            successor = (state + 1) % vocab_size
            others = np.delete(np.arange(vocab_size), successor)
            next_states[state] = [successor, *rng.choice(others, n_next - 1, replace=False)]
        next_probs = rng.dirichlet(np.ones(n_next), size=vocab_size)
        return cls(next_states, next_probs)

    @property
    def vocab_size(self) -> int:
        return len(self.next_states)

    def transition_matrix(self) -> np.ndarray:
        matrix = np.zeros((self.vocab_size, self.vocab_size))
        np.put_along_axis(matrix, self.next_states, self.next_probs, axis=1)
        return matrix

    @cached_property
    def stationary_distribution(self) -> np.ndarray:
        """pi = pi P with sum(pi) = 1; the normalisation replaces one of the redundant equations."""
        equations = self.transition_matrix().T - np.eye(self.vocab_size)
        equations[-1] = 1
        pi = np.linalg.solve(equations, np.eye(self.vocab_size)[-1])
        pi = np.clip(pi, 0, None)  # rounding can leave tiny negatives
        return pi / pi.sum()

    def entropy_rate(self) -> float:
        """H(X_{t+1} | X_t) in nats with X_t stationary."""
        p = self.next_probs
        row_entropy = -(p * np.log(np.where(p > 0, p, 1))).sum(axis=1)
        return float(self.stationary_distribution @ row_entropy)

    def sample(self, n_chains: int, length: int, seed: int | list[int]) -> np.ndarray:
        """(n_chains, length) independent chains, each started from the stationary distribution."""
        rng = np.random.default_rng(seed)
        cumulative = np.cumsum(self.next_probs, axis=1)
        states = np.empty((n_chains, length), dtype=np.int64)
        states[:, 0] = rng.choice(self.vocab_size, size=n_chains, p=self.stationary_distribution)
        for t in range(1, length):
            u = rng.random(n_chains)[:, None]
            choice = (cumulative[states[:, t - 1]] < u).sum(axis=1)
            states[:, t] = self.next_states[
                states[:, t - 1], np.minimum(choice, cumulative.shape[1] - 1)
            ]
        return states
