"""Synthetic study designs for the fits' self-checks: clean ones, which every applicable fit must
trust, and flawed ones, each of which the check that names its flaw must catch.

    python -m tests.analysis.designs      # prints the table: flaw | fit | check | detail

All data come from one Chinchilla surface (SURFACE) with seeded multiplicative noise.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from scalinglab.analysis import checks
from scalinglab.analysis.laws import chinchilla_loss, fit_chinchilla, fit_power_law
from scalinglab.analysis.laws.envelope import fit_envelope
from scalinglab.analysis.laws.hparams import fit_hparams
from scalinglab.analysis.laws.isoflop import fit_isoflop
from scalinglab.analysis.report import agreements
from scalinglab.analysis.result import FitResult
from scalinglab.analysis.section import Section

SURFACE = {"E": 1.7, "A": 400.0, "B": 410.0, "alpha": 0.34, "beta": 0.28}
NOISE = 0.005  # about 0.5%, multiplicative
N_BOOTSTRAP = 50
CLEAN_BUDGETS = np.geomspace(1e17, 3e18, 4)  # 4 budgets spanning 30x
CLEAN_SIZES = np.geomspace(10**-0.5, 10**0.5, 7)  # 7 sizes spanning 10x around the optimum


def n_opt(C, surface=SURFACE):
    """The surface's compute-optimal size at C = 6ND FLOPs."""
    s = surface
    a = s["beta"] / (s["alpha"] + s["beta"])
    G = (s["alpha"] * s["A"] / (s["beta"] * s["B"])) ** (1 / (s["alpha"] + s["beta"]))
    return G * (np.asarray(C, float) / 6) ** a


def noisy(loss, seed: int = 0, noise: float = NOISE) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return np.asarray(loss) * np.exp(noise * rng.standard_normal(np.shape(loss)))


def isoflop_grid(budgets=CLEAN_BUDGETS, sizes=CLEAN_SIZES, *, seed=0, noise=NOISE, centre=n_opt):
    """Budgets x sizes (factors around each budget's `centre`): C, N, D, loss."""
    C = np.repeat(budgets, len(sizes))
    N = np.concatenate([centre(c) * np.asarray(sizes) for c in budgets])
    D = C / (6 * N)
    return C, N, D, noisy(chinchilla_loss(N, D, **SURFACE), seed, noise)


def ladder(n_sizes: int = 8, tokens_per_param: float = 20.0, *, seed=0):
    """A model-size ladder at a fixed tokens-per-parameter ratio: N, D, loss."""
    N = 1e7 * 2.0 ** np.arange(n_sizes)
    D = tokens_per_param * N
    return N, D, noisy(chinchilla_loss(N, D, **SURFACE), seed)


def curves(sizes, ends, n_logged: int = 30, *, seed=0):
    """Training curves: the loss at each logged token count up to each curve's end (the surface
    read along D, as if each point were a run trained to it). flops, loss, n_params, run_id, end."""
    rows = []
    for k, (size, end) in enumerate(zip(sizes, ends, strict=True)):
        tokens = np.geomspace(1e6, end, n_logged)
        rows.append((6 * size * tokens, chinchilla_loss(size, tokens, **SURFACE), size, k, end))
    flops, loss, n_params, run_id, schedule_end = (
        np.concatenate([np.broadcast_to(r[i], (n_logged,)) for r in rows]) for i in range(5)
    )
    return flops, noisy(loss, seed, 0.002), n_params, run_id, schedule_end


def hparam_grid(batch_sizes, *, seed=0):
    """Per budget an lr x batch-size grid around a known optimum: C, lr, batch, loss."""
    budgets = np.geomspace(1e17, 1e21, 5)
    lrs = 1e-4 * 2 ** (np.arange(17) / 2)
    C, lr, batch = (g.ravel() for g in np.meshgrid(budgets, lrs, batch_sizes, indexing="ij"))
    lr_opt, batch_opt = 0.02 * (C / 1e17) ** -0.15, 64 * (C / 1e17) ** 0.3
    loss = (
        3.0 * (C / 1e17) ** -0.05
        + 0.05 * np.log2(lr / lr_opt) ** 2
        + 0.02 * np.log2(batch / batch_opt) ** 2
    )
    return C, lr, batch, noisy(loss, seed)


def lowest_per_budget(C, N, D, loss):
    """The lowest-loss run of each budget, the points of L(C): C, N, D, loss."""
    budgets = [np.flatnonzero(np.equal(C, c)) for c in np.unique(C)]
    best = [rows[np.argmin(loss[rows])] for rows in budgets]
    return C[best], N[best], D[best], loss[best]


# --------------------------------------------------------------------------------------------
# Fits as the CLI makes them


def power_in_compute(C, N, D, loss) -> FitResult:
    """L(C) with the compute-law design check the CLI adds."""
    fit = fit_power_law(C, loss, n_bootstrap=N_BOOTSTRAP)
    fit.checks.insert(1, checks.compute_law(N, D, C, list(fit.params)))
    return fit


def agreement_of(C, N, D, loss) -> list[dict]:
    """Approaches 2 and 3 on the same runs, compared as the report does."""
    sections = [
        Section(title="IsoFLOP", fit=fit_isoflop(C, N, loss, n_bootstrap=N_BOOTSTRAP)),
        Section(title="Chinchilla", fit=fit_chinchilla(N, D, loss, n_bootstrap=N_BOOTSTRAP)),
    ]
    return agreements(sections)


# --------------------------------------------------------------------------------------------
# The flawed designs


def one_tokens_count():
    """Every run trained on one D (token counts equal up to whole-step rounding)."""
    N = np.geomspace(1e6, 1e8, 12)
    D = 3e8 * (1 + 0.002 * np.random.default_rng(1).standard_normal(12))
    return N, D, noisy(chinchilla_loss(N, D, **SURFACE), 1)


def cosine_one_end():
    """Seven sizes whose schedules all end at 3e8 tokens: the envelope reads intermediate points."""
    sizes = np.geomspace(1e6, 1e8, 7)
    return curves(sizes, np.full(7, 3e8))


def narrow_range():
    """Six points over a factor 3 in N: the loss barely moves, E cannot be told from A N^-alpha."""
    N = np.geomspace(1e8, 3e8, 6)
    return N, noisy(chinchilla_loss(N, 20 * N, **SURFACE), 2)


def embeddings_counted(extra: float = 1e8):
    """The surface holds in non-embedding parameters, but N counts a fixed 1e8 of embeddings too:
    the IsoFLOP minima and Approach 3's functional form then imply different exponents."""
    C, N, D, loss = isoflop_grid(np.geomspace(1e17, 1e19, 6), noise=0.002)
    return C, N + extra, D, loss


def frontier_bends(boost: float = 2.0):
    """The optimum's law changes at the largest budget (A twice as large there)."""
    C, N, D, loss = isoflop_grid()
    top = np.equal(C, C.max())
    bent = dict(SURFACE, A=SURFACE["A"] * boost)
    N[top] = n_opt(C[top], bent) * CLEAN_SIZES
    D = C / (6 * N)
    loss[top] = noisy(chinchilla_loss(N[top], D[top], **bent), 3)
    return C, N, D, loss


@dataclass
class Flaw:
    flaw: str
    fit: str
    check: str  # the check that names the flaw
    run: Callable[[], FitResult | list[dict]]

    def checks(self) -> list[dict]:
        result = self.run()
        return result.checks if isinstance(result, FitResult) else result


FLAWS = [
    Flaw(
        "one D for every run",
        "chinchilla",
        "design",
        # Degenerate: each resample's polish runs to max_iter, so few resamples.
        lambda: fit_chinchilla(*one_tokens_count(), n_bootstrap=8),
    ),
    Flaw(
        "one D for every run",
        "power L(C)",
        "design",
        lambda: (lambda N, D, L: power_in_compute(6 * N * D, N, D, L))(*one_tokens_count()),
    ),
    Flaw(
        "cosine curves that all end at one token count",
        "envelope",
        "design",
        lambda: (
            lambda f, L, n, r, e: fit_envelope(
                f, L, n, run_id=r, schedule_end=e, n_bootstrap=N_BOOTSTRAP
            )
        )(*cosine_one_end()),
    ),
    Flaw(
        "3 points for 3 parameters",
        "power L(N)",
        "design",
        lambda: fit_power_law(*ladder(3)[::2], n_bootstrap=N_BOOTSTRAP),
    ),
    Flaw(
        "E not identified (6 points over 3x in N)",
        "power L(N)",
        "bounds",
        lambda: fit_power_law(*narrow_range(), n_bootstrap=N_BOOTSTRAP),
    ),
    Flaw(
        "one batch size per budget",
        "hparams",
        "design",
        lambda: fit_hparams(*hparam_grid([256.0]), n_bootstrap=N_BOOTSTRAP),
    ),
    Flaw(
        "sizes all above the optimum (0.6x to 6x)",
        "isoflop",
        "centering",
        lambda: (lambda C, N, D, L: fit_isoflop(C, N, L, n_bootstrap=N_BOOTSTRAP))(
            *isoflop_grid(sizes=np.geomspace(0.6, 6, 7))
        ),
    ),
    Flaw(
        "budgets spanning 1.5x, 1% noise",
        "isoflop",
        "intervals",
        lambda: (lambda C, N, D, L: fit_isoflop(C, N, L, n_bootstrap=N_BOOTSTRAP))(
            *isoflop_grid(np.geomspace(1e18, 1.5e18, 4), noise=0.01)
        ),
    ),
    Flaw(
        "frontier bends at the largest budget",
        "isoflop",
        "extrapolation",
        lambda: (lambda C, N, D, L: fit_isoflop(C, N, L, n_bootstrap=N_BOOTSTRAP))(
            *frontier_bends()
        ),
    ),
    Flaw(
        "embedding parameters counted in N",
        "report: isoflop vs chinchilla",
        "agreement",
        lambda: agreement_of(*embeddings_counted()),
    ),
]


def flaw_table() -> list[tuple[str, str, str, str]]:
    """(flaw, fit, check that caught it, its detail) per flawed design; "MISSED" if it passed."""
    rows = []
    for flaw in FLAWS:
        caught = [c for c in flaw.checks() if c["name"] == flaw.check and not c["passed"]]
        name = flaw.check if caught else f"MISSED ({flaw.check})"
        rows.append((flaw.flaw, flaw.fit, name, caught[0]["detail"] if caught else ""))
    return rows


def main() -> None:
    print("| flaw | fit | check that caught it | detail |")
    print("|---|---|---|---|")
    for row in flaw_table():
        print("| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |")


if __name__ == "__main__":
    main()
