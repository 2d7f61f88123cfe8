"""The LLC against theory: deep linear networks (Aoyagi 2024) and ReLU rescaling invariance.

Prints the README's table: for each architecture, the exact λ of
:func:`lljax.landscape.deep_linear_learning_coefficient` beside λ̂ ± standard error from
:func:`lljax.landscape.llc` at the true parameter of :func:`lljax.landscape.deep_linear_teacher`
(noise-free, so nβ is a free inverse temperature; nβ = 1000, step size set from the exact top
Hessian eigenvalue so that ε nβ λ_max = 0.2). Then λ̂ at a ReLU teacher 2 → 4 → 1 after
rescaling its hidden layer by c and the next by 1/c: λ is invariant; the fixed-step estimator
in raw coordinates only approximately (for c near 1), in ``coordinates="leaf_rms"`` exactly up
to rounding, over four decades of c. Ends with one JSON line.

Usage::

    python benchmarks/llc_theory.py [--chains 16] [--draws 8000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

import lljax as ll

CASES = [  # (widths, true rank): shallow/deep, full-rank/rank-deficient
    ([3, 3, 3], 3),
    ([4, 3, 4], 1),
    ([4, 5, 5, 4], 2),
    ([5, 4, 3, 4, 5], 1),
    ([3, 4, 4, 4, 3], 3),
]


def _top_eigenvalue(loss_fn, params, data):
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    return float(jnp.linalg.eigvalsh(jax.hessian(lambda v: loss_fn(unravel(v), data))(flat))[-1])


def deep_linear_rows(chains, draws, burnin):
    rows = []
    for widths, rank in CASES:
        loss_fn, params, data = ll.landscape.deep_linear_teacher(widths, rank, key=jr.key(0))
        nbeta = 1000.0
        step = 0.2 / (nbeta * _top_eigenvalue(loss_fn, params, data))
        t0 = time.perf_counter()
        r = ll.landscape.llc(
            loss_fn, params, data, key=jr.key(1), num_chains=chains, num_draws=draws,
            num_burnin=burnin, step_size=step, nbeta=nbeta, batch_size=None,
        )  # fmt: skip
        lam = ll.landscape.deep_linear_learning_coefficient(widths, rank)
        rows.append(
            {
                "widths": widths,
                "rank": rank,
                "lambda": lam,
                "llc": float(r.mean),
                "stderr": float(r.stderr),
                "rel_err": float(r.mean) / lam - 1,
                "rhat": float(r.rhat),
                "seconds": time.perf_counter() - t0,
            }
        )
    return rows


def _relu_problem():
    k = jr.split(jr.key(5), 4)
    params = {
        "Dense_0": {"kernel": jr.normal(k[0], (2, 4)), "bias": 0.5 * jr.normal(k[1], (4,))},
        "Dense_1": {"kernel": jr.normal(k[2], (4, 1)), "bias": jnp.zeros(1)},
    }
    model = ll.models.mlp([2, 4, 1], activation="relu")
    x = jr.normal(k[3], (256, 2))
    return ll.losses.mse(model), params, (x, model.apply(params, x))


def rescaling_rows(chains, draws, burnin, scales, coordinates="raw"):
    loss_fn, params, data = _relu_problem()
    rows = []
    for c in scales:
        p = {
            "Dense_0": jax.tree.map(lambda a, c=c: c * a, params["Dense_0"]),
            "Dense_1": {
                "kernel": params["Dense_1"]["kernel"] / c,
                "bias": params["Dense_1"]["bias"],
            },
        }
        t0 = time.perf_counter()
        r = ll.landscape.llc(
            loss_fn, p, data, key=jr.key(1), num_chains=chains, num_draws=draws,
            num_burnin=burnin, step_size=3e-5, nbeta=1000.0, batch_size=None,
            record_every=max(1, draws // 1000), coordinates=coordinates,
        )  # fmt: skip
        rows.append(
            {
                "coordinates": coordinates,
                "c": c,
                "llc": float(r.mean),
                "stderr": float(r.stderr),
                "stability": float(r.stability),
                "ess": float(r.ess),
                "seconds": time.perf_counter() - t0,
            }
        )
    base = next(r for r in rows if r["c"] == 1.0)  # noqa: RUF015
    for r in rows:
        r["rel_diff"] = r["llc"] / base["llc"] - 1
        r["diff_stderr"] = float(np.hypot(r["stderr"], base["stderr"]) / base["llc"])
    return rows


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--chains", type=int, default=16)
    p.add_argument("--draws", type=int, default=8000)
    p.add_argument("--relu-chains", type=int, default=64)
    p.add_argument("--relu-draws", type=int, default=64000)
    p.add_argument("--quick", action="store_true", help="short chains (a smoke run)")
    a = p.parse_args(argv)
    if a.quick:
        a.chains, a.draws, a.relu_chains, a.relu_draws = 4, 500, 4, 1000
    device = jax.devices()[0].device_kind
    dl = deep_linear_rows(a.chains, a.draws, burnin=a.draws // 8)
    rs = rescaling_rows(a.relu_chains, a.relu_draws, a.relu_draws // 8, [0.5, 1.0, 2.0])
    rs += rescaling_rows(
        a.relu_chains, a.relu_draws, a.relu_draws // 8, [0.01, 0.1, 1.0, 10.0, 100.0], "leaf_rms"
    )
    print(f"# deep linear networks, {a.chains} chains x {a.draws} draws on {device}")
    print(
        f"{'widths':<18} {'rank':>4} {'λ (Aoyagi)':>10} {'λ̂ ± se':>14} {'rel. err':>8} {'R-hat':>6}"
    )
    for r in dl:
        print(
            f"{str(r['widths']):<18} {r['rank']:>4} {r['lambda']:>10.2f} "
            f"{r['llc']:>7.2f} ± {r['stderr']:<4.2f} {100 * r['rel_err']:>7.1f}% {r['rhat']:>6.3f}"
        )
    print(f"\n# ReLU 2-4-1 rescaled by (c, 1/c), {a.relu_chains} chains x {a.relu_draws} draws")
    print(f"{'coords':<9} {'c':>6} {'λ̂ ± se':>14} {'vs c=1':>16} {'ε nβ λmax':>9} {'ESS':>7}")
    for r in rs:
        print(
            f"{r['coordinates']:<9} {r['c']:>6g} {r['llc']:>7.3f} ± {r['stderr']:<5.3f} "
            f"{100 * r['rel_diff']:>+6.1f}% ± {100 * r['diff_stderr']:.1f}% "
            f"{r['stability']:>9.3f} {r['ess']:>7.0f}"
        )
    print(json.dumps({"device": device, "deep_linear": dl, "relu_rescaling": rs}))


if __name__ == "__main__":
    main()
