"""Saddles: index vs loss of critical points, minima vs size, and escape from a strict saddle.

Three measurements on small tanh students fitting a wider tanh teacher (float64 throughout,
so gradient norms of true critical points reach ~1e-15 and Hessian indices are exact):

1. **Index vs loss** (the analogue of Dauphin et al. 2014, Fig. 1). From many starts (random
   initialisations and snapshots along their full-batch gradient-descent trajectories, so the
   starts span the range of losses) :func:`lljax.critical.find_critical_point` runs
   Levenberg–Marquardt on ``½‖∇L‖²``, one vmapped program per width. Points whose final
   gradient norm is not tiny are minima of ``‖∇L‖²`` that are not critical points (Frye et al.
   2019) and are discarded. Copies of a critical point under the network's symmetries share
   loss and index, so the rank correlation is taken over distinct ``(loss, index)`` pairs.
2. **Minima vs size**: the fraction of converged searches ending at a minimum (index 0), per
   initialisation seed, as the hidden width (parameter count) grows. Wider students train
   more slowly, and a search started from a GD snapshot taken mid-descent tends to end at a
   saddle, so the fraction is confounded by GD's run length: the trend counts only when, at
   every width, GD had stopped descending by its last snapshot for most initialisations
   (:func:`gd_stationary`, :func:`resolve_trend`); otherwise it is "unresolved" and the
   verdict undecided, with the fractions and the diagnosis in the evidence.
3. **Escape times** from a strict saddle found in (1), for gradient descent started at the
   saddle, perturbed GD (one Gaussian kick, Jin et al. 2017), noisy GD (isotropic Gaussian
   noise each step) and SGD (minibatches drawn with replacement), over vmapped seeds
   (:func:`lljax.critical.escape_times`), against the quadratic-saddle law
   :func:`lljax.critical.saddle_escape_cdf` with the noise measured at the saddle.

References:
  Dauphin et al. 2014, arXiv:1406.2572 (index vs error of critical points).
  Bray & Dean 2007, arXiv:cond-mat/0611023 (critical points of Gaussian fields).
  Frye et al. 2019, arXiv:1901.10603 (gradient-norm minimisation finds non-critical points).
  Jin et al. 2017, arXiv:1703.00887 (perturbed gradient descent escapes saddles).
"""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jax.flatten_util import ravel_pytree

from lljax import _linalg, critical, curvature, ensemble, losses, models, spectrum
from lljax import data as data_lib
from lljax.experiments import (
    MIN_CLUSTERS,
    Measurement,
    Result,
    Verdict,
    measure,
    progress,
    register,
)

NAME = "saddles"
CLAIM = (
    "Critical points of small networks with a higher loss have a higher index (fraction of "
    "negative Hessian eigenvalues), and the fraction of critical points that are minima falls "
    "as the parameter count grows (Dauphin et al. 2014)."
)
METHODS = ("GD", "perturbed GD", "noisy GD", "SGD")

#: GD counts as stationary at its last snapshot when its loss changed by at most this
#: fraction over the last snapshot interval (:func:`gd_stationary`).
STATIONARY_RTOL = 1e-2
#: The minima trend is resolved when more than this fraction of each width's
#: initialisations had stationary GD (:func:`resolve_trend`).
STATIONARY_MAJORITY = 0.5


def num_params(input_dim: int, width: int) -> int:
    """Parameters of the student ``input_dim -> width -> 1`` with biases."""
    return (input_dim + 2) * width + 1


# ---------------------------------------------------------------------------------------------
# Critical points from many starts


def _gd_snapshots(loss_fn, params, batch, snapshot_steps, learning_rate):
    """Full-batch GD from stacked ``params``; returns ``(len(snapshot_steps), members, ...)``."""
    snaps = jnp.asarray(snapshot_steps)
    num_steps = int(max(snapshot_steps))

    def one(p0):
        buf = jax.tree.map(lambda a: jnp.zeros((len(snapshot_steps), *a.shape), a.dtype), p0)
        # A snapshot at step 0 is the start itself.
        buf = jax.tree.map(lambda b, a: jnp.where(snaps[0] == 0, b.at[0].set(a), b), buf, p0)

        def body(carry, t):
            p, buf = carry
            g = jax.grad(loss_fn)(p, batch)
            p = jax.tree.map(lambda a, b: a - learning_rate * b, p, g)
            i = jnp.clip(jnp.searchsorted(snaps, t + 1), 0, len(snapshot_steps) - 1)
            hit = snaps[i] == t + 1
            buf = jax.tree.map(lambda b, a: jnp.where(hit, b.at[i].set(a), b), buf, p)
            return (p, buf), None

        (_, buf), _ = jax.lax.scan(body, (p0, buf), jnp.arange(num_steps))
        return buf

    out = jax.vmap(one)(params)
    return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), out)


def distinct(loss, index, *, scale: float = 1.0, decimals: int = 7) -> np.ndarray:
    """Indices of the first occurrence of each distinct ``(round(loss / scale), index)`` pair.

    Copies of one critical point under permutations or sign flips of hidden units have the
    same loss and index, so they count once.
    """
    keys = [(round(float(v) / scale, decimals), int(i)) for v, i in zip(loss, index, strict=True)]
    seen: dict[tuple, int] = {}
    for j, k in enumerate(keys):
        seen.setdefault(k, j)
    return np.array(sorted(seen.values()), dtype=int)


def _search_width(width, *, data, input_dim, key, num_inits, snapshot_steps, gd_lr, lm_steps):
    model = models.mlp([input_dim, width, 1], activation="tanh", init="lecun", dtype=jnp.float64)
    loss_fn = losses.mse(model)
    batch = (data.x_train, data.y_train)
    p0 = ensemble.init(model, key=key, num_members=num_inits)
    snaps = jax.jit(_gd_snapshots, static_argnums=(0, 3, 4))(
        loss_fn, p0, batch, tuple(snapshot_steps), gd_lr
    )
    starts = jax.tree.map(lambda a: a.reshape(-1, *a.shape[2:]), snaps)  # (snap * init, ...)

    @jax.jit
    def find(p, b):
        one = lambda q: critical.find_critical_point(loss_fn, q, b, num_steps=lm_steps)
        return jax.vmap(one)(p)

    start_loss = jax.jit(jax.vmap(loss_fn, in_axes=(0, None)))(starts, batch)
    cp = find(starts, batch)
    s, m = len(snapshot_steps), num_inits
    return {
        "width": width,
        "num_params": num_params(input_dim, width),
        "loss": np.asarray(cp.loss),
        "grad_norm": np.asarray(cp.grad_norm),
        "index": np.asarray(cp.index),
        "negative_fraction": np.asarray(cp.negative_fraction),
        "min_eigenvalue": np.asarray(cp.eigenvalues[:, 0]),
        "start_loss": np.asarray(start_loss),
        "init_seed": np.tile(np.arange(m), s),
        "start_step": np.repeat(np.asarray(snapshot_steps), m),
        "params": cp.params,
        "eigenvalues": np.asarray(cp.eigenvalues),
        "loss_fn": loss_fn,
    }


def minima_fraction_per_seed(index, converged, init_seed, num_inits: int) -> np.ndarray:
    """Per initialisation seed, the fraction of its converged searches that found a minimum.

    Seeds without a converged search give NaN.
    """
    out = np.full(num_inits, np.nan)
    for s in range(num_inits):
        sel = converged & (init_seed == s)
        if sel.any():
            out[s] = float(np.mean(index[sel] == 0))
    return out


def minima_trend(fractions: list[Measurement], sizes: list[int]) -> tuple[str, float]:
    """``"decreasing"``, ``"increasing"`` or ``"flat"`` minima fraction with size, and τ.

    Decreasing: Kendall τ(size, fraction) < 0 and the smallest size's fraction exceeds the
    largest size's by more than the 95% t margin of their difference (increasing: mirror).
    The sizes are compared by value, whatever their order in the lists. The difference's
    standard error combines both (independent seeds); its margin uses ``min(n₁, n₂) − 1``
    degrees of freedom, the conservative bound on Welch's.
    """
    ok = sorted(
        (i for i, f in enumerate(fractions) if math.isfinite(f.value)), key=lambda i: sizes[i]
    )
    if len(ok) < 2:
        return "flat", math.nan
    vals = np.array([fractions[i].value for i in ok])
    tau = ensemble.rank_correlation(np.array([sizes[i] for i in ok], float), vals).value
    smallest, largest = fractions[ok[0]], fractions[ok[-1]]
    se = math.sqrt(sum(s**2 for s in (smallest.stderr, largest.stderr) if math.isfinite(s)))
    diff = smallest.value - largest.value
    margin = Measurement(diff, se, min(smallest.n, largest.n)).margin()
    if math.isfinite(tau) and tau < 0 and diff > margin:
        return "decreasing", tau
    if math.isfinite(tau) and tau > 0 and -diff > margin:
        return "increasing", tau
    return "flat", tau


def gd_stationary(
    start_loss, start_step, init_seed, num_inits: int, *, rtol: float = STATIONARY_RTOL
) -> np.ndarray:
    """Per initialisation, whether its GD had stopped descending by the last snapshot.

    Stationary: ``|L(s_K−1) − L(s_K)| ≤ rtol · L(s_K)`` over the last snapshot interval
    ``[s_K−1, s_K]``. With fewer than two snapshot steps nothing is known: all ``False``.

    Args:
      start_loss, start_step, init_seed: per start (as returned by the width's search).
      num_inits: initialisations.
      rtol: relative loss change accepted over the last interval.

    Returns:
      ``(num_inits,)`` bools.
    """
    start_loss, start_step = np.asarray(start_loss, float), np.asarray(start_step)
    init_seed = np.asarray(init_seed)
    steps = np.unique(start_step)
    out = np.zeros(num_inits, bool)
    if steps.size < 2:
        return out
    for s in range(num_inits):
        sel = init_seed == s
        last = start_loss[sel & (start_step == steps[-1])]
        prev = start_loss[sel & (start_step == steps[-2])]
        if last.size and prev.size:
            out[s] = bool(abs(prev[0] - last[0]) <= rtol * abs(last[0]))
    return out


def resolve_trend(
    trend: str, stationary_fraction: dict, *, majority: float = STATIONARY_MAJORITY
) -> tuple[str, list]:
    """The minima trend the verdict may use, and the widths that prevent it.

    ``trend`` stands when at every width more than ``majority`` of the initialisations had
    stationary GD (:func:`gd_stationary`; a NaN fraction counts as not stationary);
    otherwise the searches at some width started from still-descending GD, which finds
    fewer minima, and the trend is ``"unresolved"``.

    Returns:
      ``(trend or "unresolved", widths whose GD was still descending)``.
    """
    unsettled = [w for w, f in stationary_fraction.items() if not f > majority]
    return ("unresolved" if unsettled else trend), unsettled


def verdict(
    corr, trend: str, num_distinct: int, min_points: int = 5, trend_note: str = ""
) -> Verdict:
    """The rule: supported iff τ(loss, index)'s bootstrap CI is above 0 and minima decrease.

    Not supported if the CI is below 0 or the minima fraction increases significantly;
    undecided otherwise (including fewer than ``min_points`` distinct critical points, and
    an ``"unresolved"`` trend, see :func:`resolve_trend`). ``trend_note`` (the fractions and
    the GD diagnosis) is added to the evidence after the trend.
    """
    evidence = (
        f"Kendall tau(loss, index) = {corr.value:.3f} "
        f"[{corr.low:.3f}, {corr.high:.3f}] (95% bootstrap CI, initialisations resampled) "
        f"over {num_distinct} distinct critical points; minima fraction with size: {trend}"
        + (f" ({trend_note})" if trend_note else "")
    )
    if num_distinct < min_points or not math.isfinite(corr.low):
        return Verdict(
            CLAIM,
            None,
            evidence + f"; fewer than {min_points} usable points or {MIN_CLUSTERS} initialisations",
        )
    if corr.high < 0 or trend == "increasing":
        return Verdict(CLAIM, False, evidence + "; rule: CI below 0 or minima increase")
    if corr.low > 0 and trend == "decreasing":
        return Verdict(CLAIM, True, evidence + "; rule: CI above 0 and minima decrease")
    return Verdict(CLAIM, None, evidence + "; rule needs CI above 0 and decreasing minima")


# ---------------------------------------------------------------------------------------------
# Escape from a strict saddle


def escape_saddle(index, eigenvalues, converged, *, min_rate: float) -> int | None:
    """The search whose critical point is the escape saddle, or ``None`` if there is none.

    Among converged strict saddles with ``γ / λ_max ≥ min_rate`` (``γ = −λ_min``; GD with step
    ``c / λ_max`` escapes at rate ``≈ c · γ / λ_max`` per step) the lowest index wins, ties
    going to the largest rate; if none is that fast, the fastest saddle.
    """
    rate = -eigenvalues[:, 0] / np.maximum(eigenvalues[:, -1], 1e-300)
    cand = np.nonzero(converged & (index >= 1))[0]
    if not cand.size:
        return None
    fast = cand[rate[cand] >= min_rate]
    if fast.size:
        low = fast[index[fast] == index[fast].min()]
        return int(low[np.argmax(rate[low])])
    return int(cand[np.argmax(rate[cand])])


def predicted_mean_escape(num_steps: int, **law) -> float:
    """``E[τ] = Σ_t P(τ > t)`` from :func:`lljax.critical.saddle_escape_cdf`, truncated."""
    t = jnp.arange(num_steps)
    return float(jnp.sum(1.0 - critical.saddle_escape_cdf(t, **law)))


def law_quantile(q: float, max_steps: int, **law) -> int:
    """Smallest step ``t < max_steps`` with ``P(τ ≤ t) ≥ q`` (``max_steps`` if none)."""
    cdf = np.asarray(critical.saddle_escape_cdf(jnp.arange(max_steps), **law))
    hit = np.nonzero(cdf >= q)[0]
    return int(hit[0]) if hit.size else int(max_steps)


def _escape(cp_params, loss_fn, batch, *, key, num_seeds, radius, lr_scale, batch_size, max_steps):
    flat, unravel = ravel_pytree(cp_params)
    f = lambda v, b: loss_fn(unravel(v), b)
    grad = jax.grad(f)
    x, y = batch
    n = x.shape[0]

    @jax.jit
    def local(p, b):
        # Exact Hessian and the per-example gradients projected on its most negative
        # eigenvector: a minibatch of B examples drawn with replacement moves the coordinate
        # along v by eta times noise of std sqrt(v' C v / B).
        hess = curvature.hessian(loss_fn, p, b).dense()
        lam, vecs = _linalg.eigh(hess)
        per_ex = jax.vmap(lambda xi, yi: grad(flat, (xi[None], yi[None])))(*b)
        proj = per_ex @ vecs[:, 0]
        return hess, lam, vecs[:, 0], jnp.sqrt(jnp.mean(jnp.square(proj - jnp.mean(proj))))

    hess, lam, v, proj_std = local(cp_params, batch)
    gamma, lam_max = float(-lam[0]), float(lam[-1])
    eta = lr_scale / lam_max
    sigma = float(eta * proj_std / math.sqrt(batch_size))
    s0 = sigma  # perturbed GD: one kick of the size SGD adds per step

    # One stepper for all methods, so one compiled program: the state carries the method's
    # settings after the params, z = [x, step, kick std, noise std, minibatch?], and the
    # escape direction is zero on those entries.
    p = flat.shape[0]
    direction = jnp.concatenate([v, jnp.zeros(4, flat.dtype)])

    def step(z, k):
        xk, t, kick, noise, minibatch = z[:p], z[p], z[p + 1], z[p + 2], z[p + 3]
        k1, k2, k3 = jr.split(k, 3)
        xk = xk + jnp.where(t == 0, kick, 0.0) * jr.normal(k1, (p,), flat.dtype)
        idx = jr.randint(k3, (batch_size,), 0, n)
        g = jnp.where(minibatch > 0, grad(xk, (x[idx], y[idx])), grad(xk, batch))
        xk = xk - eta * g + noise * jr.normal(k2, (p,), flat.dtype)
        return jnp.concatenate([xk, jnp.stack([t + 1.0, kick, noise, minibatch])])

    laws = {
        "GD": dict(noise_std=0.0, initial_std=0.0),
        "perturbed GD": dict(noise_std=0.0, initial_std=s0),
        "noisy GD": dict(noise_std=sigma, initial_std=0.0),
        "SGD": dict(noise_std=sigma, initial_std=0.0),
    }
    # (kick std, per-step isotropic noise std, minibatch gradient?) of each method.
    config = {
        "GD": (0.0, 0.0, 0.0),
        "perturbed GD": (s0, 0.0, 0.0),
        "noisy GD": (0.0, sigma, 0.0),
        "SGD": (0.0, 0.0, 1.0),
    }
    common = dict(curvature=gamma, learning_rate=eta, radius=radius)
    q999 = max(law_quantile(0.999, max_steps, **common, **laws[m]) for m in METHODS[1:])
    num_steps = int(min(max_steps, max(2 * q999, 10)))
    run = jax.jit(
        lambda z0, ks: critical.escape_times(
            step, z0, ks, num_steps=num_steps, radius=radius, direction=direction
        )
    )
    keys = jr.split(key, len(METHODS))
    times = {}
    for i, m in enumerate(METHODS):
        z0 = jnp.concatenate([flat, jnp.array([0.0, *config[m]], flat.dtype)])
        times[m] = np.asarray(run(z0, jr.split(keys[i], num_seeds)))
    # How quadratic the loss is along v out to the escape radius.
    l0, lp, lm = (
        float(u)
        for u in jax.jit(jax.vmap(f, in_axes=(0, None)))(
            jnp.stack([flat, flat + radius * v, flat - radius * v]), batch
        )
    )
    quad = -0.5 * gamma * radius**2
    actual = 0.5 * (lp + lm) - l0
    return {
        "times": times,
        "laws": {m: {**common, **laws[m]} for m in METHODS},
        "num_steps": num_steps,
        "gamma": gamma,
        "lambda_max": lam_max,
        "learning_rate": eta,
        "sigma": sigma,
        "index": int(np.sum(np.asarray(lam) < -1e-8 * lam_max)),
        "negative_fraction": float(
            spectrum.exact_negative_fraction(curvature.from_matrix(hess), 1e-8 * lam_max)
        ),
        "quadratic_ratio": actual / quad,
        "loss": l0,
    }


def escape_agreement(times: np.ndarray, num_steps: int, law: dict) -> dict[str, Any]:
    """Measured vs closed-form escape: escaped fraction, mean time and KS distance."""
    finite = times[np.isfinite(times)]
    t = np.arange(num_steps + 1)
    cdf = np.asarray(critical.saddle_escape_cdf(t, **law))
    ecdf = np.searchsorted(np.sort(finite), t, side="right") / times.size
    out = {
        "escaped": float(finite.size / times.size),
        "predicted_escaped": float(cdf[-1]),
        "ks": float(np.max(np.abs(ecdf - cdf))),
        "t": t,
        "cdf": cdf,
        "ecdf": ecdf,
    }
    if finite.size:
        out["mean"] = measure(finite, unit="steps")
    else:
        out["mean"] = Measurement(math.nan, math.nan, 0, (), "steps")
    if cdf[-1] > 0.99:
        out["predicted_mean"] = predicted_mean_escape(num_steps + 1, **law)
    else:
        out["predicted_mean"] = math.inf
    return out


# ---------------------------------------------------------------------------------------------
# The experiment


@register(
    NAME,
    description="Index vs loss of critical points, minima vs size, escape from a saddle",
    presets={
        "quick": dict(
            widths=(1, 2, 3, 4),
            index_width=4,
            input_dim=4,
            teacher_width=8,
            num_train=64,
            label_noise=0.0,
            num_inits=24,
            snapshot_steps=(0, 10, 30, 100, 300, 1000, 3000),
            gd_learning_rate=0.1,
            lm_steps=200,
            grad_tol=1e-8,
            num_escape_seeds=128,
            escape_radius=0.1,
            escape_lr_scale=0.5,
            escape_batch_size=32,
            escape_min_rate=0.05,
            escape_max_steps=5000,
            num_bootstrap=1000,
        ),
        "full": dict(
            widths=(1, 2, 3, 4, 6, 8, 12, 16),
            index_width=8,
            input_dim=4,
            teacher_width=8,
            num_train=64,
            label_noise=0.0,
            num_inits=64,
            snapshot_steps=(0, 10, 30, 100, 300, 1000, 3000, 10000, 30000),
            gd_learning_rate=0.1,
            lm_steps=500,
            grad_tol=1e-8,
            num_escape_seeds=2048,
            escape_radius=0.1,
            escape_lr_scale=0.5,
            escape_batch_size=32,
            escape_min_rate=0.01,
            escape_max_steps=100000,
            num_bootstrap=5000,
        ),
    },
    preset_notes={
        "quick": "widths 1-4, 168 starts each, 128 escape seeds; about a minute of CPU",
        "full": "widths 1-16, 576 starts each, 2048 escape seeds; ~10 min on one GPU "
        "(float64; much longer on a CPU)",
    },
    claim=CLAIM,
)
def run(
    preset: str,
    seed: int,
    out_dir,
    *,
    widths: tuple[int, ...] = (1, 2, 3, 4),
    index_width: int = 4,
    input_dim: int = 4,
    teacher_width: int = 8,
    num_train: int = 64,
    label_noise: float = 0.0,
    num_inits: int = 24,
    snapshot_steps: tuple[int, ...] = (0, 10, 30, 100, 300, 1000, 3000),
    gd_learning_rate: float = 0.1,
    lm_steps: int = 200,
    grad_tol: float = 1e-8,
    num_escape_seeds: int = 128,
    escape_radius: float = 0.1,
    escape_lr_scale: float = 0.5,
    escape_batch_size: int = 32,
    escape_min_rate: float = 0.05,
    escape_max_steps: int = 5000,
    num_bootstrap: int = 1000,
    progress_bar: bool = True,
) -> Result:
    """Finds critical points of tanh students, relates index to loss and size, times escapes.

    Args:
      preset: preset name (recorded only).
      seed: base seed; data, inits, bootstrap and escape noise derive from it.
      out_dir: output folder (unused: the framework writes the results).
      widths: hidden widths of the students ``input_dim -> width -> 1``.
      index_width: the width whose critical points give the index-vs-loss correlation and
        the escape saddle (one of ``widths``).
      input_dim, teacher_width, num_train, label_noise: the teacher-student regression task.
      num_inits: initialisations per width; each gives one start per snapshot step.
      snapshot_steps: GD steps at which starts are taken (0 is the initialisation).
      gd_learning_rate: full-batch GD step size for the trajectories.
      lm_steps: Levenberg–Marquardt iterations per start.
      grad_tol: a search counts as a critical point if ``‖∇L‖ < grad_tol``.
      num_escape_seeds: trajectories per escape method.
      escape_radius: escape when ``|⟨x − saddle, v⟩| ≥ escape_radius`` (``v``: the most
        negative Hessian eigenvector).
      escape_lr_scale: escape step size as a multiple of ``1 / λ_max``.
      escape_batch_size: SGD minibatch size (drawn with replacement).
      escape_min_rate: the escape saddle is the lowest-index one with ``γ / λ_max`` at least
        this (see :func:`escape_saddle`).
      escape_max_steps: cap on escape trajectory length.
      num_bootstrap: bootstrap resamples for the rank-correlation interval.
      progress_bar: print progress to stderr.

    Returns:
      A :class:`~lljax.experiments.Result`.
    """
    del preset, out_dir
    widths = tuple(int(w) for w in widths)
    if not widths or min(widths) < 1:
        raise ValueError(f"widths: expected positive ints, got {widths!r}")
    if index_width not in widths:
        raise ValueError(f"index_width: expected one of widths {widths}, got {index_width}")
    if sorted(snapshot_steps) != list(snapshot_steps) or min(snapshot_steps) < 0:
        raise ValueError(f"snapshot_steps: expected sorted steps >= 0, got {snapshot_steps!r}")
    with jax.enable_x64(True):  # float64 for this run only
        return _run(
            seed=seed,
            widths=widths,
            index_width=index_width,
            input_dim=input_dim,
            teacher_width=teacher_width,
            num_train=num_train,
            label_noise=label_noise,
            num_inits=num_inits,
            snapshot_steps=tuple(int(s) for s in snapshot_steps),
            gd_learning_rate=gd_learning_rate,
            lm_steps=lm_steps,
            grad_tol=grad_tol,
            num_escape_seeds=num_escape_seeds,
            escape_radius=escape_radius,
            escape_lr_scale=escape_lr_scale,
            escape_batch_size=escape_batch_size,
            escape_min_rate=escape_min_rate,
            escape_max_steps=escape_max_steps,
            num_bootstrap=num_bootstrap,
            progress_bar=progress_bar,
        )


def _run(
    *,
    seed,
    widths,
    index_width,
    input_dim,
    teacher_width,
    num_train,
    label_noise,
    num_inits,
    snapshot_steps,
    gd_learning_rate,
    lm_steps,
    grad_tol,
    num_escape_seeds,
    escape_radius,
    escape_lr_scale,
    escape_batch_size,
    escape_min_rate,
    escape_max_steps,
    num_bootstrap,
    progress_bar,
) -> Result:
    k_data, k_init, k_boot, k_escape = jr.split(jr.key(seed), 4)
    teacher = models.mlp(
        [input_dim, teacher_width, 1], activation="tanh", init="lecun", dtype=jnp.float64
    )
    data = data_lib.teacher_student(
        teacher, key=k_data, num_train=num_train, num_test=num_train, noise=label_noise
    )
    batch = (data.x_train, data.y_train)
    # The loss of the zero function: a natural unit for losses (every student has a critical
    # point there, where all output weights vanish).
    null_loss = float(0.5 * jnp.mean(jnp.square(data.y_train)))

    searches = {}
    for w in progress(widths, "saddles: critical points", enabled=progress_bar):
        searches[w] = _search_width(
            w,
            data=data,
            input_dim=input_dim,
            key=jr.fold_in(k_init, w),
            num_inits=num_inits,
            snapshot_steps=snapshot_steps,
            gd_lr=gd_learning_rate,
            lm_steps=lm_steps,
        )

    summary, per_width, minima, sizes = [], {}, [], []
    corr_by_width = {}
    for w, s in searches.items():
        conv = s["grad_norm"] < grad_tol
        idx = np.nonzero(conv)[0]
        keep = idx[distinct(s["loss"][idx], s["index"][idx], scale=null_loss)]
        frac = minima_fraction_per_seed(s["index"], conv, s["init_seed"], num_inits)
        frac = frac[np.isfinite(frac)]
        m = measure(frac) if frac.size else Measurement(math.nan, math.nan, 0)
        minima.append(m)
        sizes.append(s["num_params"])
        distinct_min = float(np.mean(s["index"][keep] == 0)) if keep.size else math.nan
        if keep.size >= 3:
            corr_by_width[w] = ensemble.rank_correlation(
                s["loss"][keep], s["negative_fraction"][keep]
            ).value
        stationary = gd_stationary(s["start_loss"], s["start_step"], s["init_seed"], num_inits)
        per_width[w] = {
            "converged": conv,
            "distinct": keep,
            "distinct_minima": distinct_min,
            "gd_stationary": float(np.mean(stationary)),
        }
        summary.append(
            {
                "width": w,
                "params": s["num_params"],
                "starts": int(conv.size),
                "converged": int(conv.sum()),
                "distinct": int(keep.size),
                "minima fraction (per seed)": m,
                "distinct minima fraction": distinct_min,
                "max index": int(s["index"][keep].max()) if keep.size else None,
                "tau(loss, index)": corr_by_width.get(w, math.nan),
                "GD stationary": per_width[w]["gd_stationary"],
            }
        )

    s = searches[index_width]
    keep = per_width[index_width]["distinct"]
    if keep.size >= 2:
        # Points found from one initialisation (its GD snapshots) are not independent: the
        # bootstrap resamples initialisations (no interval when there are too few).
        groups = s["init_seed"][keep]
        boot = {}
        if np.unique(groups).size >= MIN_CLUSTERS:
            boot = dict(key=k_boot, num_bootstrap=num_bootstrap, groups=groups)
        corr = ensemble.rank_correlation(s["loss"][keep], s["negative_fraction"][keep], **boot)
        spear = ensemble.rank_correlation(
            s["loss"][keep], s["negative_fraction"][keep], method="spearman", **boot
        )
    else:
        corr = spear = ensemble.RankCorrelation(
            math.nan, math.nan, math.nan, math.nan, "kendall", int(keep.size), 0.95
        )
    raw_trend, tau_size = minima_trend(minima, sizes)
    stationary_by_width = {w: per_width[w]["gd_stationary"] for w in widths}
    trend, unsettled = resolve_trend(raw_trend, stationary_by_width)
    if len(snapshot_steps) >= 2:
        interval = f"steps {snapshot_steps[-2]}-{snapshot_steps[-1]}"
    else:
        interval = "no GD interval"
    trend_note = (
        "per-seed fractions "
        + ", ".join(f"{m.value:.3g}" for m in minima)
        + f" at widths {', '.join(map(str, widths))}; GD stationary (loss change ≤ "
        f"{STATIONARY_RTOL:.0%} over {interval}) for "
        + ", ".join(f"{stationary_by_width[w]:.0%}" for w in widths)
        + " of initialisations"
    )
    if unsettled:
        trend_note += (
            f"; the {raw_trend} trend is not counted: at widths "
            f"{', '.join(map(str, unsettled))} GD was still descending at its last snapshot "
            f"(step {snapshot_steps[-1]}) for most initialisations, so their searches started "
            "mid-descent, where they find fewer minima"
        )

    conv = per_width[index_width]["converged"]
    j = escape_saddle(s["index"], s["eigenvalues"], conv, min_rate=escape_min_rate)
    escape, agreement = None, {}
    if j is not None:
        saddle = jax.tree.map(lambda a: a[j], s["params"])
        escape = _escape(
            saddle,
            s["loss_fn"],
            batch,
            key=k_escape,
            num_seeds=num_escape_seeds,
            radius=escape_radius,
            lr_scale=escape_lr_scale,
            batch_size=escape_batch_size,
            max_steps=escape_max_steps,
        )
        for m in METHODS:
            agreement[m] = escape_agreement(
                escape["times"][m], escape["num_steps"], escape["laws"][m]
            )

    v = verdict(corr, trend, int(keep.size), trend_note=trend_note)
    escape_rows = []
    for m, ag in agreement.items():
        escape_rows.append(
            {
                "method": m,
                "escaped": ag["escaped"],
                "predicted escaped": ag["predicted_escaped"],
                "mean steps": ag["mean"],
                "predicted mean": ag["predicted_mean"],
                "KS distance": ag["ks"],
            }
        )
    if escape is not None:
        noisy = [agreement[m] for m in METHODS[1:]]
        rel = [abs(a["mean"].value / a["predicted_mean"] - 1) for a in noisy]
        v = v._replace(
            evidence=v.evidence + "; escape from an index-"
            f"{escape['index']} saddle: mean steps measured/predicted "
            + ", ".join(
                f"{m} {a['mean'].value:.0f}/{a['predicted_mean']:.0f}"
                for m, a in zip(METHODS[1:], noisy, strict=True)
            )
            + f" (max relative gap {max(rel):.2f}); GD from the saddle escaped in "
            f"{agreement['GD']['escaped']:.0%} of runs within {escape['num_steps']} steps"
        )

    measurements: dict[str, Any] = {
        "kendall_tau_loss_index": Measurement(corr.value, corr.stderr, corr.n),
        "kendall_tau_ci": (corr.low, corr.high),
        "spearman_rho_loss_index": Measurement(spear.value, spear.stderr, spear.n),
        "spearman_rho_ci": (spear.low, spear.high),
        "kendall_tau_by_width": corr_by_width,
        "minima_fraction": dict(zip(widths, minima, strict=True)),
        "distinct_minima_fraction": {w: per_width[w]["distinct_minima"] for w in widths},
        "minima_trend": trend,
        "minima_trend_raw": raw_trend,
        "gd_stationary_fraction": stationary_by_width,
        "widths_gd_still_descending": unsettled,
        "kendall_tau_size_minima": tau_size,
        "num_params": dict(zip(widths, sizes, strict=True)),
        "null_loss": null_loss,
        "escape_table": escape_rows,
    }
    if escape is not None:
        measurements["escape"] = {
            "saddle_loss": escape["loss"],
            "saddle_index": escape["index"],
            "curvature_gamma": escape["gamma"],
            "lambda_max": escape["lambda_max"],
            "learning_rate": escape["learning_rate"],
            "noise_std_along_v": escape["sigma"],
            "quadratic_ratio_at_radius": escape["quadratic_ratio"],
            "saddle_negative_fraction": escape["negative_fraction"],
            **{
                m: {
                    "escaped": a["escaped"],
                    "mean_steps": a["mean"],
                    "predicted_mean_steps": a["predicted_mean"],
                    "ks_distance": a["ks"],
                }
                for m, a in agreement.items()
            },
        }

    data_out = {
        "critical_points": {
            w: {
                k: searches[w][k]
                for k in (
                    "loss",
                    "grad_norm",
                    "index",
                    "negative_fraction",
                    "start_loss",
                    "init_seed",
                    "start_step",
                    "min_eigenvalue",
                )
            }
            | {"converged": per_width[w]["converged"], "distinct": per_width[w]["distinct"]}
            for w in widths
        },
    }
    if escape is not None:
        data_out["escape"] = {
            m: {
                "times": escape["times"][m],
                "t": agreement[m]["t"],
                "cdf": agreement[m]["cdf"],
                "ecdf": agreement[m]["ecdf"],
            }
            for m in METHODS
        }

    def fig_index_loss():
        from lljax import plot

        plt = plot.pyplot()
        fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
        for w in widths:
            k = per_width[w]["distinct"]
            ax.scatter(
                searches[w]["loss"][k] / null_loss,
                searches[w]["negative_fraction"][k],
                s=40 if w == index_width else 14,
                alpha=0.9 if w == index_width else 0.5,
                label=f"width {w} ({sizes[widths.index(w)]} params)",
            )
        ax.set_xscale("log")
        ax.set(
            xlabel="loss / loss of the zero function",
            ylabel="index (fraction of negative eigenvalues)",
            title=f"critical points: Kendall τ = {corr.value:.2f} "
            f"[{corr.low:.2f}, {corr.high:.2f}] at width {index_width}",
        )
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize="small")
        return fig

    def fig_minima():
        from lljax import plot

        return plot.curves(
            {
                "per seed (mean ± s.e.)": (
                    sizes,
                    [m.value for m in minima],
                    [0.0 if not math.isfinite(m.stderr) else m.stderr for m in minima],
                ),
                "distinct critical points": (
                    sizes,
                    [per_width[w]["distinct_minima"] for w in widths],
                ),
            },
            xlabel="number of parameters",
            ylabel="fraction of critical points that are minima",
            title=f"minima vs size ({raw_trend}"
            + (", unresolved: GD still descending)" if unsettled else ")"),
        )

    def fig_escape():
        from lljax import plot

        plt = plot.pyplot()
        fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
        for m in METHODS:
            ag = agreement[m]
            (line,) = ax.plot(ag["t"], ag["ecdf"], lw=1.6, label=f"{m} (measured)")
            ax.plot(ag["t"], ag["cdf"], ls="--", lw=1.2, color=line.get_color())
        ax.plot([], [], ls="--", color="0.4", label="quadratic-saddle law")
        ax.set(
            xlabel="step",
            ylabel="P(escaped by step t)",
            title=f"escape from an index-{escape['index']} saddle "
            f"(γ = {escape['gamma']:.3g}, η = {escape['learning_rate']:.3g})",
        )
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize="small")
        return fig

    figures = {"index_vs_loss": fig_index_loss, "minima_vs_size": fig_minima}
    if escape is not None:
        figures["escape_cdf"] = fig_escape

    notes = [
        "Analogue of Dauphin et al. 2014 (arXiv:1406.2572), Fig. 1, on a teacher-student "
        "tanh regression (MSE) instead of downsampled MNIST/CIFAR, with exact float64 "
        "Hessians instead of approximations.",
        "Critical points are found by Levenberg-Marquardt on |grad L|^2 "
        "(lljax.critical.find_critical_point) from random initialisations and GD snapshots; "
        f"searches ending with |grad L| >= {grad_tol:g} are discarded as non-critical "
        "(Frye et al. 2019, arXiv:1901.10603). Which critical points are found depends on "
        "the search method and its starts: the minima fraction is that of this protocol.",
        "Rank correlations count each distinct (loss, index) pair once, so symmetric copies "
        "of a critical point do not narrow the bootstrap interval.",
        "Minima vs size: searches from GD snapshots taken mid-descent tend to end at saddles, "
        "and wider students descend more slowly, so the trend counts only if at every width "
        f"GD's loss changed by at most {STATIONARY_RTOL:.0%} over the last snapshot interval "
        f"for more than {STATIONARY_MAJORITY:.0%} of the initialisations "
        "(gd_stationary_fraction: "
        + ", ".join(f"{w}: {f:.0%}" for w, f in stationary_by_width.items())
        + ").",
        "Escape: perturbed GD uses one Gaussian kick (Jin et al. use a uniform ball); noisy "
        "GD and perturbed GD use the standard deviation SGD's minibatch noise has along the "
        "negative-curvature direction at the saddle, so the three noisy methods are "
        "comparable; the closed form is exact only for a quadratic saddle.",
    ]
    if escape is None:
        notes.append(f"No converged strict saddle at width {index_width}: escape skipped.")

    return Result(
        summary=summary,
        measurements=measurements,
        verdict=v,
        figures=figures,
        settings={
            "model": f"tanh mlp [{input_dim}, width, 1], lecun init, float64",
            "teacher": f"tanh mlp [{input_dim}, {teacher_width}, 1]",
            "loss": "mean 1/2 squared error",
        },
        seeds=[seed],
        data=data_out,
        notes=notes,
    )
