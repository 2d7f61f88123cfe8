"""Langevin dynamics prefers flat regions; grokking seen through curvature and the LLC.

Part (a), an exact toy. ``L(x, y) = ½ a(x) ‖y‖²`` with ``x`` on a circle (the optimal
manifold ``y = 0``) and ``y ∈ R^d`` transverse, ``a(x) = exp(s cos x)``. Langevin dynamics
at temperature ``T`` samples ``exp(−L/T)``; integrating ``y`` out leaves the marginal

    p(x) ∝ ∫ exp(−a(x) ‖y‖² / 2T) dy ∝ a(x)^(−d/2) = exp(−(s d / 2) cos x),

a von Mises law centred on the flattest point ``x = π`` with concentration ``s d / 2``,
whatever ``T``. The flat-to-sharp occupation ratio therefore grows like ``exp(s d)``:
entropy, not energy, pulls the sampler to flat minima, exponentially in the number of
transverse directions. Many SGLD chains run in one compiled program, their ``x`` histogram
accumulated on device, and are compared with the exact marginal; a Metropolis-adjusted
(MALA) run removes the O(step) discretisation bias of SGLD.

Part (b), grokking. Seeds of a small MLP on one-hot pairs ``(a, b) → a + b mod p`` train
as one vmapped population with AdamW + weight decay and with SGLD (+ the same Gaussian
prior); at checkpoints we measure train/test accuracy, weight norm, Hessian trace
(Hutchinson), top Hessian eigenvalue (Lanczos) and the local learning coefficient.

Examples:
  >>> import numpy as np
  >>> from lljax.experiments import langevin
  >>> p = langevin.exact_bin_probabilities(4, 0.5, 8)
  >>> round(float(p.sum()), 6), int(np.argmax(p)) in (3, 4)
  (1.0, True)

References:
  Welling & Teh 2011 (SGLD); Roberts & Tweedie 1996 (MALA); Power et al. 2022,
  arXiv:2201.02177 (grokking); Nanda et al. 2023, arXiv:2301.05217; Liu et al. 2022,
  arXiv:2210.01117 (Omnigrok, weight norm); Lau et al. 2023, arXiv:2308.12108 (LLC).
"""

from __future__ import annotations

import functools
import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from lljax import curvature, ensemble, losses, models, optim, spectrum, train
from lljax import data as data_lib
from lljax import llc as llc_lib
from lljax.experiments import Measurement, Result, Verdict, all_of, measure, register

CLAIM = (
    "(a) SGLD's stationary occupation along a degenerate manifold is ∝ a(x)^(−d/2), so its "
    "preference for flat regions grows exponentially with the number d of transverse "
    "directions; (b) AdamW with weight decay generalises on modular addition long after "
    "fitting it (grokking), while the weight norm and the LLC fall."
)
PROBE_CHUNK = 128  # checkpoints x seeds measured per compiled call

CLAIM_A = (
    "SGLD's stationary occupation of the manifold coordinate matches a(x)^(−d/2) and the "
    "flat/sharp occupation ratio grows exponentially in d with the exact rate."
)
CLAIM_B = (
    "AdamW + weight decay reaches test accuracy long after train accuracy (positive grokking "
    "delay), and over that delay the weight norm and the LLC decrease."
)


# ----------------------------------------------------------------------------------------
# Part (a): the toy with a degenerate manifold.


def curvature_profile(x, sharpness):
    """Transverse curvature ``a(x) = exp(s cos x)``: sharpest at ``x = 0``, flattest at ``π``."""
    return jnp.exp(sharpness * jnp.cos(x))


def toy_loss(params, sharpness):
    """``Σ_chains ½ a(x) ‖y‖²`` for ``params = {"x": (chains,), "y": (chains, d)}``.

    Chains do not interact, so the gradient of the sum is every chain's own gradient.
    """
    a = curvature_profile(params["x"], sharpness)
    return 0.5 * jnp.sum(a * jnp.sum(jnp.square(params["y"]), axis=-1))


def exact_marginal(x, dim: int, sharpness: float):
    """The exact stationary density of ``x`` on ``[0, 2π)``: ``a(x)^(−d/2)``, normalised.

    It is the von Mises density with mean ``π`` and concentration ``κ = s d / 2``.
    """
    import scipy.special

    kappa = 0.5 * sharpness * dim
    x = np.asarray(x, np.float64)
    # exp(−κ cos x) / (2π I0(κ)), with the scaled Bessel function for large κ.
    return np.exp(-kappa * np.cos(x) - kappa) / (2 * np.pi * scipy.special.i0e(kappa))


def exact_bin_probabilities(dim: int, sharpness: float, num_bins: int, *, step_size=0.0):
    """Probabilities of ``num_bins`` equal bins of ``[0, 2π)`` under ``a(x)^(−d/2)``.

    Integrated by the composite Simpson rule on 64 panels per bin (error far below 1e-9).
    """
    n = 64 * num_bins
    grid = np.linspace(0.0, 2 * np.pi, n + 1)
    f = exact_marginal(grid, dim, sharpness)
    h = grid[1] - grid[0]
    per_bin = []
    for k in range(num_bins):
        g = f[64 * k : 64 * (k + 1) + 1]
        per_bin.append(h / 3 * (g[0] + g[-1] + 4 * g[1:-1:2].sum() + 2 * g[2:-1:2].sum()))
    p = np.asarray(per_bin)
    return p / p.sum()


def arc_masks(num_bins: int, half_width: float = np.pi / 4) -> tuple[np.ndarray, np.ndarray]:
    """Boolean bin masks of the flat arc ``|x − π| < w`` and the sharp arc ``|x| < w``.

    A bin belongs to an arc when its centre does.

    Raises:
      ValueError: if an arc holds no bin or the arcs overlap.
    """
    centres = (np.arange(num_bins) + 0.5) * 2 * np.pi / num_bins
    dist_sharp = np.minimum(centres, 2 * np.pi - centres)
    flat = np.abs(centres - np.pi) < half_width
    sharp = dist_sharp < half_width
    if not flat.any() or not sharp.any() or (flat & sharp).any():
        raise ValueError(
            f"half_width: {half_width} gives empty or overlapping arcs with {num_bins} bins"
        )
    return flat, sharp


def log_occupation_ratio(probs, flat, sharp):
    """``log(P(flat arc) / P(sharp arc))`` along the last axis of ``probs``."""
    probs = np.asarray(probs, np.float64)
    return np.log(probs[..., flat].sum(-1)) - np.log(probs[..., sharp].sum(-1))


def fit_slope(x, y) -> np.ndarray:
    """Least-squares slope of ``y`` against ``x`` along the last axis of ``y``."""
    x = np.asarray(x, np.float64)
    y = np.asarray(y, np.float64)
    xc = x - x.mean()
    return (y - y.mean(-1, keepdims=True)) @ xc / np.sum(xc**2)


class ToySamples(NamedTuple):
    """Histograms of the chains' ``x`` (on-device summaries of a toy run).

    Attributes:
      counts: ``(len(dims), groups, bins)`` visits per bin, pooled over the chains of
        each independent group and over the recorded steps.
      acceptance: ``(len(dims),)`` mean MALA acceptance probability (1 for SGLD).
    """

    counts: jax.Array
    acceptance: jax.Array


def _bins(x, num_bins):
    u = jnp.mod(x, 2 * jnp.pi) / (2 * jnp.pi)
    return jnp.clip(jnp.floor(u * num_bins).astype(jnp.int32), 0, num_bins - 1)


def _histogram(x, num_groups, num_bins):
    onehot = jax.nn.one_hot(_bins(x, num_bins), num_bins, dtype=jnp.float32)
    return onehot.reshape(num_groups, -1, num_bins).sum(1)


def _flat_layout(dims: tuple[int, ...], n: int) -> np.ndarray:
    """Owner chain of every transverse coordinate when all dims share one flat vector."""
    return np.concatenate(
        [np.repeat(np.arange(n) + i * n, d) for i, d in enumerate(dims)] + [np.zeros(0, int)]
    ).astype(np.int32)


def flat_toy_loss(params, owner, sharpness):
    """:func:`toy_loss` for chains of different ``d`` packed in two flat vectors.

    ``params = {"x": (chains,), "y": (coords,)}``; coordinate ``k`` belongs to chain
    ``owner[k]``. One leaf per variable whatever the dims, so the program stays small.
    """
    a = curvature_profile(params["x"], sharpness)
    return 0.5 * jnp.sum(jnp.take(a, owner) * jnp.square(params["y"]))


@functools.partial(
    jax.jit,
    static_argnames=(
        "dims",
        "num_groups",
        "chains_per_group",
        "num_burnin",
        "num_records",
        "thin",
        "num_bins",
        "sampler",
    ),
)
def sample_toy(
    key,
    sharpness,
    step_size,
    temperature,
    *,
    dims: tuple[int, ...],
    num_groups: int,
    chains_per_group: int,
    num_burnin: int,
    num_records: int,
    thin: int,
    num_bins: int,
    sampler: str = "sgld",
) -> ToySamples:
    """Runs Langevin chains on the toy for every ``d`` in ``dims``, in one compiled call.

    ``x`` starts uniform on the circle (no preference) and ``y`` from its exact conditional
    ``N(0, T / a(x))``. After ``num_burnin`` steps, ``x`` is binned every ``thin`` steps,
    ``num_records`` times; the histogram is accumulated on device per group of chains (the
    groups are independent repetitions, for standard errors). ``x`` is not wrapped during
    the dynamics: ``L`` is 2π-periodic, so the chain on the real line projects onto the
    circle chain (this also keeps MALA's proposal density exact).

    ``sampler="sgld"``: one :func:`lljax.optim.sgld` transformation on all chains packed
    in flat vectors (:func:`flat_toy_loss`); the noise is independent per coordinate, so
    this is exactly one SGLD per chain. ``"mala"``: :func:`lljax.optim.mala_step` vmapped
    over the chains of each ``d`` (each chain accepts on its own).

    Args:
      key: PRNG key.
      sharpness: ``s`` in ``a(x) = exp(s cos x)``.
      step_size: the step ε.
      temperature: T (the exact marginal does not depend on it).
      dims: transverse dimensions ``d`` (static).
      num_groups, chains_per_group: chain layout (static).
      num_burnin, num_records, thin: steps (static).
      num_bins: histogram bins on ``[0, 2π)`` (static).
      sampler: ``"sgld"`` or ``"mala"`` (static).

    Returns:
      A :class:`ToySamples`.
    """
    n = num_groups * chains_per_group
    k_init, k_run = jr.split(key)
    kx, ky = jr.split(k_init)
    x = jr.uniform(kx, (len(dims) * n,), maxval=2 * jnp.pi)
    owner = jnp.asarray(_flat_layout(tuple(dims), n))
    sd = jnp.sqrt(temperature / curvature_profile(x, sharpness))
    y = jnp.take(sd, owner) * jr.normal(ky, owner.shape)
    flat = {"x": x, "y": y}

    def histograms(xs):
        return _histogram(xs, len(dims) * num_groups, num_bins).reshape(
            len(dims), num_groups, num_bins
        )

    if sampler == "sgld":
        opt = optim.sgld(step_size, temperature, key=k_run)
        grad_fn = jax.grad(flat_toy_loss)

        def advance(carry):
            p, state, acc = carry
            updates, state = opt.update(grad_fn(p, owner, sharpness), state)
            return optax.apply_updates(p, updates), state, acc

        carry = (flat, opt.init(flat), jnp.ones(len(dims)))
        positions = lambda c: c[0]["x"]
    elif sampler == "mala":
        # Per-d stacks {"x": (n,), "y": (n, d)}, one potential per chain.
        chains, start = {}, 0
        for i, d in enumerate(dims):
            ys = y[start : start + n * d].reshape(n, d)
            chains[i] = {"x": x[i * n : (i + 1) * n], "y": ys}
            start += n * d
        potential = lambda q: toy_loss(jax.tree.map(lambda v: v[None], q), sharpness)
        init_one = lambda q: optim.mala_init(potential, q)
        mstate = {i: jax.vmap(init_one)(chains[i]) for i in chains}

        def advance(carry):
            p, ms, acc, k = carry
            k, sub = jr.split(k)
            new_p, new_ms, accs = {}, {}, []
            step_one = lambda q, s, kk: optim.mala_step(
                potential, q, s, key=kk, step_size=step_size, temperature=temperature
            )
            for i in p:
                keys = jr.split(jr.fold_in(sub, i), n)
                new_p[i], new_ms[i], info = jax.vmap(step_one)(p[i], ms[i], keys)
                accs.append(jnp.mean(info.acceptance_prob))
            return new_p, new_ms, acc + jnp.stack(accs), k

        carry = (chains, mstate, jnp.zeros(len(dims)), k_run)
        positions = lambda c: jnp.concatenate([c[0][i]["x"] for i in sorted(c[0])])
    else:
        raise ValueError(f"sampler: expected 'sgld' or 'mala', got {sampler!r}")

    # One scan over all steps (one copy of the step in the program: fast compiles); the
    # histogram is added only on recorded steps.
    def body(c, t):
        inner, counts = c
        inner = advance(inner)
        record = (t >= num_burnin) & ((t - num_burnin + 1) % thin == 0)
        counts = jax.lax.cond(record, lambda: counts + histograms(positions(inner)), lambda: counts)
        return (inner, counts), None

    counts0 = jnp.zeros((len(dims), num_groups, num_bins), jnp.float32)
    total = num_burnin + num_records * thin
    (carry, counts), _ = jax.lax.scan(body, (carry, counts0), jnp.arange(total))
    acceptance = carry[2] if sampler == "sgld" else carry[2] / total
    return ToySamples(counts, acceptance)


def occupation_distance(counts, exact) -> dict[str, float]:
    """Distance of the pooled histogram from the exact bin probabilities, with its noise.

    Args:
      counts: ``(groups, bins)`` visit counts of independent groups of chains.
      exact: ``(bins,)`` exact probabilities.

    Returns:
      ``tv``: total variation ``½ Σ |h̄ − p|`` of the pooled frequencies ``h̄`` (mean of the
      groups' frequencies); ``tv_noise``: its expected value from Monte-Carlo noise alone,
      ``½ Σ_k σ_k √(2/π)`` with ``σ_k`` the standard error of ``h̄_k`` across groups (this
      accounts for autocorrelation within chains); ``chi2_per_bin``: ``Σ (h̄ − p)² / σ²``
      divided by the number of bins, ≈ 1 when the difference is noise alone.
    """
    counts = np.asarray(counts, np.float64)
    freq = counts / counts.sum(-1, keepdims=True)
    g = freq.shape[0]
    mean = freq.mean(0)
    se = freq.std(0, ddof=1) / math.sqrt(g)
    diff = mean - np.asarray(exact, np.float64)
    return {
        "tv": float(0.5 * np.abs(diff).sum()),
        "tv_noise": float(0.5 * np.sum(se) * math.sqrt(2 / math.pi)),
        "chi2_per_bin": float(np.sum(diff**2 / np.maximum(se, 1e-12) ** 2) / diff.size),
    }


def toy_verdict(
    tv: dict[int, float],
    tv_noise: dict[int, float],
    slope: Measurement,
    exact_slope: float,
    *,
    tv_tolerance: float,
    slope_rel_tolerance: float,
) -> Verdict:
    """The rule for part (a), from the measured numbers.

    The occupation matches when, for every ``d``, the excess distance ``tv − tv_noise`` is
    at most ``tv_tolerance`` (room for SGLD's O(step) bias). The slope of the log
    flat/sharp ratio against ``d`` is judged by its 95% interval ``slope ± margin`` (t
    quantile over the groups, :meth:`~lljax.experiments.Measurement.margin`) against the
    band ``exact ± slope_rel_tolerance · |exact|``: it agrees when the interval lies inside
    the band and the slope is positive, disagrees when the interval misses the band or
    holds no positive slope, and is undecided otherwise (including fewer than 2 groups).

    SUPPORTED when the occupation matches and the slope agrees; NOT SUPPORTED when the
    occupation mismatches or the slope disagrees; UNDECIDED otherwise.
    """
    worst = max(tv, key=lambda d: tv[d] - tv_noise[d])
    excess = tv[worst] - tv_noise[worst]
    match = excess <= tv_tolerance
    margin = slope.margin()
    band = slope_rel_tolerance * abs(exact_slope)
    dev = abs(slope.value - exact_slope)
    slope_ok: bool | None
    if dev - margin > band or slope.value + margin <= 0:
        slope_ok = False
    elif dev + margin <= band and slope.value > 0:
        slope_ok = True
    else:  # includes a missing margin (fewer than 2 groups): every comparison is False
        slope_ok = None
    slope_word = {True: "agrees", False: "disagrees", None: "undecided"}[slope_ok]
    if not math.isfinite(margin):
        slope_word += " (no interval: fewer than 2 groups)"
    evidence = (
        f"largest TV from a(x)^(−d/2) is {tv[worst]:.4f} at d={worst} (noise level "
        f"{tv_noise[worst]:.4f}; rule: excess ≤ {tv_tolerance:g}) — "
        f"{'match' if match else 'mismatch'}; log(flat/sharp) vs d slope {slope} (95% "
        f"interval ± {margin:.4f}) vs exact {exact_slope:.4f} (rule: interval > 0 and inside "
        f"exact ± {100 * slope_rel_tolerance:g}%; disagrees if it misses that band) — "
        f"{slope_word}"
    )
    return Verdict(CLAIM_A, all_of([match, slope_ok]), evidence)


# ----------------------------------------------------------------------------------------
# Part (b): grokking on modular addition.


def one_hot_pairs(p: int, train_fraction: float, *, seed: int = 0) -> data_lib.Dataset:
    """:func:`lljax.data.modular_arithmetic` (addition) with inputs ``[onehot(a), onehot(b)]``."""
    raw = data_lib.modular_arithmetic(p, "add", train_fraction, seed=seed)

    def enc(x):
        return jnp.concatenate([jax.nn.one_hot(x[:, 0], p), jax.nn.one_hot(x[:, 1], p)], 1)

    return data_lib.Dataset(
        enc(raw.x_train),
        raw.y_train,
        enc(raw.x_test),
        raw.y_test,
        name=f"modular_add_{p}_onehot",
        num_classes=p,
    )


def make_optimizer(name: str, *, learning_rate, weight_decay, temperature=0.0, key=None):
    """``"adamw"``: ``optax.adamw``; ``"sgld"``: Gaussian prior ``wd/2 ‖w‖²`` then SGLD.

    The SGLD chain targets ``exp(−(L + wd/2 ‖w‖²) / T)`` (the :mod:`lljax.optim` rule).
    """
    if name == "adamw":
        return optax.adamw(learning_rate, weight_decay=weight_decay)
    if name == "sgld":
        return optax.chain(
            optax.add_decayed_weights(weight_decay),
            optim.sgld(learning_rate, temperature, key=key),
        )
    raise ValueError(f"optimizer: expected 'adamw' or 'sgld', got {name!r}")


@functools.partial(
    jax.jit, static_argnames=("loss_fn", "optimizer", "num_checkpoints", "every", "batch_size")
)
def _train_checkpoints(loss_fn, optimizer, data, states, *, num_checkpoints, every, batch_size):
    """Advances a stacked population ``num_checkpoints`` times by ``every`` steps.

    Returns the final states and the params after every segment, ``(checkpoints, seeds,
    ...)``: one compiled program (``vmap`` of :func:`lljax.train.run` inside a scan).
    """

    def segment(st, _):
        run = lambda s: train.run(
            loss_fn, optimizer, data, s, num_steps=every, batch_size=batch_size
        )
        st, out = jax.vmap(run)(st)
        return st, (st.params, out["nonfinite_step"])

    return jax.lax.scan(segment, states, None, length=num_checkpoints)


class _Probe(NamedTuple):
    train_accuracy: jax.Array
    test_accuracy: jax.Array
    train_loss: jax.Array
    test_loss: jax.Array
    weight_norm: jax.Array
    hessian_trace: jax.Array
    hessian_trace_stderr: jax.Array
    top_eigenvalue: jax.Array
    llc: jax.Array
    llc_stderr: jax.Array


@functools.partial(jax.jit, static_argnames=("loss_fn", "cfg"))
def _probe_all(loss_fn, params, data, keys, cfg):
    """Every checkpoint measurement for a flat stack of params, vmapped (one program)."""
    (num_probes, lanczos_steps, llc_chains, llc_burnin, llc_draws, llc_batch, llc_gamma) = cfg
    model, per_example = loss_fn.model, loss_fn.per_example
    n = data.x_train.shape[0]
    nbeta = n / math.log(n)

    def one(p, key):
        k_tr, k_eig, k_llc = jr.split(key, 3)
        out_tr = model.apply(p, data.x_train)
        out_te = model.apply(p, data.x_test)
        acc = lambda o, y: jnp.mean(losses.accuracy_from_logits(o, y).astype(o.dtype))
        h = curvature.hessian(loss_fn, p, data.train)
        tr = spectrum.trace(h, key=k_tr, num_probes=num_probes)
        # Top Ritz value of a short fully reorthogonalised Lanczos run (converges fast on
        # the isolated top of a Hessian spectrum).
        top = spectrum.ritz(spectrum.lanczos(h, num_steps=lanczos_steps, key=k_eig)).values[-1]
        # The Euler step must resolve the sharpest direction of the tempered posterior:
        # ε (nβ λ_max + γ) = 0.2 keeps the SGLD bias there at ~10%.
        eps = 0.2 / (nbeta * jnp.maximum(top, 1.0) + llc_gamma)
        r = llc_lib.llc_samples(
            loss_fn,
            p,
            data.train,
            key=k_llc,
            num_chains=llc_chains,
            num_draws=llc_draws,
            num_burnin=llc_burnin,
            step_size=eps,
            nbeta=nbeta,
            localization=llc_gamma,
            batch_size=llc_batch,
            num_power_iterations=0,
        )
        return _Probe(
            acc(out_tr, data.y_train),
            acc(out_te, data.y_test),
            jnp.mean(per_example(out_tr, data.y_train)),
            jnp.mean(per_example(out_te, data.y_test)),
            ensemble.weight_norm(p),
            tr.value,
            tr.stderr,
            top,
            r.mean,
            r.stderr,
        )

    return jax.vmap(one)(params, keys)


def _probe_chunked(loss_fn, params, data, keys, cfg, chunk: int = PROBE_CHUNK):
    """:func:`_probe_all` over at most ``chunk`` members at a time (bounded memory: each
    member holds a Lanczos basis and LLC chains); the last chunk is padded so one compiled
    program serves every chunk."""
    m = keys.shape[0]
    size = min(m, chunk)
    outs = []
    for start in range(0, m, size):
        idx = np.minimum(np.arange(start, start + size), m - 1)
        sub = jax.tree.map(lambda a: a[idx], params)
        outs.append(jax.tree.map(np.asarray, _probe_all(loss_fn, sub, data, keys[idx], cfg)))
    return jax.tree.map(lambda *xs: np.concatenate(xs)[:m], *outs)


def crossing_step(steps, values, threshold: float) -> float:
    """First step at which ``values`` reaches ``threshold`` (``nan`` if never)."""
    hit = np.nonzero(np.asarray(values) >= threshold)[0]
    return float(np.asarray(steps)[hit[0]]) if hit.size else math.nan


def value_at(steps, values, step: float) -> float:
    """``values`` at the checkpoint ``step`` (``nan`` for a ``nan`` step)."""
    if not math.isfinite(step):
        return math.nan
    return float(np.asarray(values)[int(np.searchsorted(np.asarray(steps), step))])


def grokking_verdict(
    train_steps, test_steps, norm_ratio, llc_change, *, total_steps: int, interval: int
) -> Verdict:
    """The rule for part (b), from per-seed numbers (AdamW runs).

    ``train_steps``/``test_steps``: per seed, the first checkpoint where train/test accuracy
    reached the threshold (``nan`` if never). ``norm_ratio``: weight norm at the test
    crossing over that at the train crossing; ``llc_change``: LLC at the test crossing
    minus that at the train crossing.

    UNDECIDED if some seed never fits or never generalises within ``total_steps``, or with
    fewer than 2 seeds (no interval). Otherwise each quantity is judged by its 95% interval
    ``mean ± margin`` (Student's t over seeds, :meth:`~lljax.experiments.Measurement.margin`):

    - delay: shown when ``delay − margin > 0`` and ``delay > interval`` (one checkpoint);
      ruled out when ``delay + margin ≤ interval``;
    - weight norm: falls when ``ratio + margin < 1``; ruled out when ``ratio − margin ≥ 1``;
    - LLC: falls when ``ΔLLC + margin < 0``; ruled out when ``ΔLLC − margin ≥ 0``.

    SUPPORTED when all three are shown; NOT SUPPORTED when one is ruled out; UNDECIDED
    otherwise (an interval that neither shows nor rules out a fall does not decide).
    """
    train_steps, test_steps = np.asarray(train_steps, float), np.asarray(test_steps, float)
    n = train_steps.size
    if not np.all(np.isfinite(train_steps)) or not np.all(np.isfinite(test_steps)):
        k = int(np.sum(np.isfinite(test_steps)))
        return Verdict(
            CLAIM_B,
            None,
            f"only {k} of {n} seeds reached the test-accuracy threshold within {total_steps} "
            "steps (too short to grok; run --preset full)",
        )
    delay = measure(test_steps - train_steps)
    ratio, dllc = measure(norm_ratio), measure(llc_change)
    if n < 2:
        return Verdict(
            CLAIM_B,
            None,
            f"grokking delay {delay.value:g} steps, weight norm ratio {ratio.value:.3f}, LLC "
            f"change {dllc.value:+.3g} from {n} seed: no standard error, so no interval to "
            "decide from (run at least 2 seeds)",
        )
    md, mr, ml = delay.margin(), ratio.margin(), dllc.margin()
    parts = {
        "delay": (
            True
            if delay.value - md > 0 and delay.value > interval
            else False
            if delay.value + md <= interval
            else None
        ),
        "norm": True if ratio.value + mr < 1 else False if ratio.value - mr >= 1 else None,
        "llc": True if dllc.value + ml < 0 else False if dllc.value - ml >= 0 else None,
    }
    words = {
        "delay": {True: "delayed", False: "no delay", None: "delay undecided"},
        "norm": {True: "falls", False: "does not fall", None: "neither falls nor rules out a fall"},
        "llc": {True: "falls", False: "does not fall", None: "neither falls nor rules out a fall"},
    }

    def ci(m: Measurement, margin: float, fmt: str) -> str:
        return f"95% interval [{m.value - margin:{fmt}}, {m.value + margin:{fmt}}]"

    evidence = (
        f"{n} seeds, 95% t intervals; grokking delay {delay} steps "
        f"({ci(delay, md, '.0f')}; rule: lower end > 0 and mean > {interval}, no delay if "
        f"the upper end ≤ {interval}) — {words['delay'][parts['delay']]}; weight norm ratio "
        f"over the delay {ratio} ({ci(ratio, mr, '.3f')}; falls if the upper end < 1, does "
        f"not if the lower end ≥ 1) — {words['norm'][parts['norm']]}; LLC change {dllc} "
        f"({ci(dllc, ml, '.2f')}; falls if the upper end < 0, does not if the lower end ≥ 0) "
        f"— {words['llc'][parts['llc']]}"
    )
    return Verdict(CLAIM_B, all_of(parts.values()), evidence)


def combine(a: Verdict, b: Verdict) -> Verdict:
    """Both parts: NOT SUPPORTED if either part is, SUPPORTED if both are, else UNDECIDED."""
    evidence = f"(a) {a.label}: {a.evidence}. (b) {b.label}: {b.evidence}."
    return Verdict(CLAIM, all_of([a.supported, b.supported]), evidence)


# ----------------------------------------------------------------------------------------
# The experiment.


def _run_toy(
    key,
    *,
    dims,
    sharpness,
    temperature,
    step_size,
    num_groups,
    chains_per_group,
    num_burnin,
    num_records,
    thin,
    num_bins,
    bias_step_size,
    bias_steps,
    half_width,
    tv_tolerance,
    slope_rel_tolerance,
):
    layout = dict(
        dims=tuple(dims),
        num_groups=num_groups,
        chains_per_group=chains_per_group,
        num_bins=num_bins,
    )
    k_main, k_sgld, k_mala = jr.split(key, 3)
    main = sample_toy(
        k_main,
        sharpness,
        step_size,
        temperature,
        num_burnin=num_burnin,
        num_records=num_records,
        thin=thin,
        **layout,
    )
    # The bias check: the same chains at a large step, with and without the Metropolis
    # correction (MALA is exact at any step, so the difference is SGLD's discretisation).
    b_burn, b_thin = bias_steps // 5, max(1, (bias_steps - bias_steps // 5) // num_records)
    bias = {
        "sgld": sample_toy(
            k_sgld,
            sharpness,
            bias_step_size,
            temperature,
            num_burnin=b_burn,
            num_records=num_records,
            thin=b_thin,
            **layout,
        ),
        # MALA at the largest d only, where the bias is largest (its compile is the cost).
        "mala": sample_toy(
            k_mala,
            sharpness,
            bias_step_size,
            temperature,
            num_burnin=b_burn,
            num_records=num_records,
            thin=b_thin,
            sampler="mala",
            **{**layout, "dims": (max(dims),)},
        ),
    }
    exact = {d: exact_bin_probabilities(d, sharpness, num_bins) for d in dims}
    flat, sharp = arc_masks(num_bins, half_width)
    counts = np.asarray(main.counts, np.float64)
    dist = {d: occupation_distance(counts[i], exact[d]) for i, d in enumerate(dims)}
    bias_dist = {
        "sgld": {
            d: occupation_distance(np.asarray(bias["sgld"].counts)[i], exact[d])
            for i, d in enumerate(dims)
        },
        "mala": {
            max(dims): occupation_distance(np.asarray(bias["mala"].counts)[0], exact[max(dims)])
        },
    }
    freq = counts / counts.sum(-1, keepdims=True)  # (dims, groups, bins)
    log_ratio = log_occupation_ratio(freq, flat, sharp)  # (dims, groups)
    exact_log_ratio = np.array([log_occupation_ratio(exact[d], flat, sharp) for d in dims])
    slope = measure(fit_slope(dims, log_ratio.T))
    exact_slope = float(fit_slope(dims, exact_log_ratio))
    verdict = toy_verdict(
        {d: dist[d]["tv"] for d in dims},
        {d: dist[d]["tv_noise"] for d in dims},
        slope,
        exact_slope,
        tv_tolerance=tv_tolerance,
        slope_rel_tolerance=slope_rel_tolerance,
    )
    return dict(
        exact=exact,
        dist=dist,
        bias_dist=bias_dist,
        freq=freq,
        log_ratio=log_ratio,
        exact_log_ratio=exact_log_ratio,
        slope=slope,
        exact_slope=exact_slope,
        verdict=verdict,
        acceptance=np.asarray(bias["mala"].acceptance),
    )


def _run_grokking(
    key,
    *,
    p,
    train_fraction,
    width,
    num_seeds,
    optimizers,
    steps,
    checkpoint_every,
    learning_rate,
    weight_decay,
    sgld_learning_rate,
    sgld_temperature,
    sgld_weight_decay,
    threshold,
    hessian_probes,
    lanczos_steps,
    llc_chains,
    llc_burnin,
    llc_draws,
    llc_batch_size,
    llc_localization,
    data_seed,
):
    data = one_hot_pairs(p, train_fraction, seed=data_seed)
    model = models.mlp([2 * p, width, p])
    loss_fn = losses.cross_entropy(model)
    n = data.num_train
    num_ckpt = steps // checkpoint_every
    ckpt_steps = np.arange(num_ckpt + 1) * checkpoint_every
    cfg = (
        hessian_probes,
        lanczos_steps,
        llc_chains,
        llc_burnin,
        llc_draws,
        min(llc_batch_size, n),
        float(llc_localization),
    )
    k_init, k_opt, k_probe = jr.split(key, 3)
    init_keys = jr.split(k_init, num_seeds)  # the same initialisations for every optimizer
    params0 = jax.vmap(model.init)(init_keys)
    out = {}
    for j, name in enumerate(optimizers):
        opt_keys = jr.split(jr.fold_in(k_opt, j), num_seeds)
        if name == "adamw":
            opt = make_optimizer("adamw", learning_rate=learning_rate, weight_decay=weight_decay)
            states = jax.vmap(lambda q, k: train.init_state(q, opt, key=k))(params0, opt_keys)
        else:
            # Each member's SGLD noise key lives in its optimizer state.
            opt = lambda key: make_optimizer(
                "sgld",
                learning_rate=sgld_learning_rate,
                weight_decay=sgld_weight_decay,
                temperature=sgld_temperature,
                key=key,
            )
            states = jax.vmap(lambda q, k: train.init_state(q, opt, key=k, hyperparams={"key": k}))(
                params0, opt_keys
            )
        _, (ckpts, bad) = _train_checkpoints(
            loss_fn,
            opt,
            data,
            states,
            num_checkpoints=num_ckpt,
            every=checkpoint_every,
            batch_size=n,
        )
        # (checkpoints + 1, seeds, ...) with the initial params first, flattened for probing.
        stack = jax.tree.map(lambda a, b: jnp.concatenate([a[None], b]), params0, ckpts)
        flat = jax.tree.map(lambda a: a.reshape((-1, *a.shape[2:])), stack)
        m = (num_ckpt + 1) * num_seeds
        probe = _probe_chunked(loss_fn, flat, data, jr.split(jr.fold_in(k_probe, j), m), cfg)
        probe = {
            k: np.asarray(v).reshape(num_ckpt + 1, num_seeds).T for k, v in probe._asdict().items()
        }  # (seeds, checkpoints)
        diverged = bool(np.any(np.asarray(bad) >= 0))
        t_train = [crossing_step(ckpt_steps, a, threshold) for a in probe["train_accuracy"]]
        t_test = [crossing_step(ckpt_steps, a, threshold) for a in probe["test_accuracy"]]
        at = lambda key, ts: [value_at(ckpt_steps, probe[key][i], t) for i, t in enumerate(ts)]
        out[name] = dict(
            probe=probe,
            t_train=t_train,
            t_test=t_test,
            diverged=diverged,
            norm_ratio=np.divide(at("weight_norm", t_test), at("weight_norm", t_train)),
            llc_change=np.subtract(at("llc", t_test), at("llc", t_train)),
        )
    return dict(
        steps=ckpt_steps,
        runs=out,
        num_train=n,
        num_test=data.num_test,
        num_params=int(sum(np.size(a) for a in jax.tree.leaves(model.init(k_init)))),
    )


def _mean_se(a, axis=0):
    a = np.asarray(a, np.float64)
    n = a.shape[axis]
    se = a.std(axis, ddof=1) / math.sqrt(n) if n > 1 else np.zeros_like(a.mean(axis))
    return a.mean(axis), se


def _toy_figures(toy, dims, sharpness, num_bins, step_size, bias_step_size):
    from lljax import plot

    def occupation():
        plt = plot.pyplot()
        fig, axes = plt.subplots(
            1, len(dims), figsize=(2.6 * len(dims), 3.0), layout="constrained", sharey=True
        )
        axes = np.atleast_1d(axes)
        width = 2 * np.pi / num_bins
        centres = (np.arange(num_bins) + 0.5) * width
        grid = np.linspace(0, 2 * np.pi, 400)
        for ax, (i, d) in zip(axes, enumerate(dims), strict=True):
            mean, se = _mean_se(toy["freq"][i])
            ax.errorbar(centres, mean / width, se / width, fmt="o", ms=3, label="SGLD")
            ax.plot(grid, exact_marginal(grid, d, sharpness), "k-", lw=1, label="a(x)^(−d/2)")
            ax.set(title=f"d = {d}", xlabel="x (flat at π)")
        axes[0].set_ylabel("density of x")
        axes[0].legend(frameon=False, fontsize="x-small")
        return fig

    def ratio():
        plt = plot.pyplot()
        fig, ax = plt.subplots(figsize=(5.2, 3.8), layout="constrained")
        mean, se = _mean_se(toy["log_ratio"], axis=1)
        ax.errorbar(dims, mean, se, fmt="o", label=f"SGLD, slope {toy['slope']}")
        ax.plot(dims, toy["exact_log_ratio"], "k--", label=f"exact, slope {toy['exact_slope']:.3f}")
        ax.set(
            xlabel="transverse dimensions d",
            ylabel="log(P(flat arc) / P(sharp arc))",
            title="Preference for the flat region grows exponentially in d",
        )
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize="small")
        return fig

    def bias():
        series = {
            f"SGLD ε={step_size:g}": (dims, [toy["dist"][d]["tv"] for d in dims]),
            f"SGLD ε={bias_step_size:g}": (dims, [toy["bias_dist"]["sgld"][d]["tv"] for d in dims]),
            "Monte-Carlo noise level": (dims, [toy["dist"][d]["tv_noise"] for d in dims]),
        }
        fig = plot.curves(
            series,
            xlabel="transverse dimensions d",
            ylabel="total variation from a(x)^(−d/2)",
            title="SGLD discretisation bias; MALA (×) removes it",
        )
        ax = fig.axes[0]
        dm = max(dims)
        ax.plot(
            [dm],
            [toy["bias_dist"]["mala"][dm]["tv"]],
            "kx",
            ms=9,
            label=f"MALA ε={bias_step_size:g}",
        )
        ax.legend(frameon=False, fontsize="small")
        return fig

    return {"toy_occupation": occupation, "toy_flat_sharp_ratio": ratio, "toy_bias": bias}


def _grok_figures(grok, threshold):
    from lljax import plot

    steps = grok["steps"]

    def accuracy():
        series = {}
        for name, r in grok["runs"].items():
            for split in ("train", "test"):
                m, se = _mean_se(100 * r["probe"][f"{split}_accuracy"])
                series[f"{name} {split}"] = (steps, m, se)
        fig = plot.curves(
            series, ylabel="accuracy (%)", title="Modular addition: train vs test accuracy"
        )
        fig.axes[0].axhline(100 * threshold, color="0.5", lw=0.8, ls=":")
        return fig

    def geometry():
        plt = plot.pyplot()
        fig, axes = plt.subplots(2, 2, figsize=(9.0, 6.4), layout="constrained")
        panels = [
            ("weight_norm", "weight norm"),
            ("hessian_trace", "Hessian trace (train loss)"),
            ("top_eigenvalue", "top Hessian eigenvalue"),
            ("llc", "local learning coefficient"),
        ]
        for ax, (key, label) in zip(axes.ravel(), panels, strict=True):
            series = {}
            for name, r in grok["runs"].items():
                m, se = _mean_se(r["probe"][key])
                series[name] = (steps, m, se)
            plot.curves(series, ylabel=label, ax=ax)
            for r in grok["runs"].values():
                t = np.nanmean(r["t_test"]) if np.isfinite(r["t_test"]).any() else None
                if t is not None:
                    ax.axvline(t, color="0.5", lw=0.8, ls=":")
        fig.suptitle("Over training (dotted: mean step test accuracy crosses the threshold)")
        return fig

    return {"grokking_accuracy": accuracy, "grokking_geometry": geometry}


@register(
    "langevin",
    description="SGLD's entropic preference for flat minima (exact toy) and grokking geometry",
    presets={
        "quick": dict(
            dims=(0, 2, 4, 8, 12),
            sharpness=0.5,
            temperature=1.0,
            step_size=0.02,
            num_groups=16,
            chains_per_group=64,
            num_burnin=1000,
            num_records=200,
            thin=20,
            num_bins=24,
            bias_step_size=0.1,
            bias_steps=1000,
            tv_tolerance=0.02,
            slope_rel_tolerance=0.05,
            p=23,
            train_fraction=0.8,
            width=128,
            num_seeds=3,
            optimizers=("adamw", "sgld"),
            steps=2000,
            checkpoint_every=200,
            learning_rate=1e-2,
            weight_decay=1.0,
            sgld_learning_rate=0.5,
            sgld_temperature=1e-5,
            sgld_weight_decay=1e-3,
            threshold=0.9,
            hessian_probes=8,
            lanczos_steps=16,
            llc_chains=2,
            llc_burnin=50,
            llc_draws=150,
            llc_batch_size=64,
            llc_localization=100.0,
        ),
        "full": dict(
            dims=(0, 1, 2, 4, 8, 12, 16, 24),
            sharpness=0.5,
            temperature=1.0,
            step_size=0.005,
            num_groups=32,
            chains_per_group=1024,
            num_burnin=8000,
            num_records=1000,
            thin=80,
            num_bins=48,
            bias_step_size=0.05,
            bias_steps=16000,
            tv_tolerance=0.01,
            slope_rel_tolerance=0.02,
            p=97,
            train_fraction=0.4,
            width=512,
            num_seeds=8,
            optimizers=("adamw", "sgld"),
            steps=40000,
            checkpoint_every=1000,
            learning_rate=1e-3,
            weight_decay=1.0,
            sgld_learning_rate=0.5,
            sgld_temperature=1e-5,
            sgld_weight_decay=1e-3,
            threshold=0.9,
            hessian_probes=30,
            lanczos_steps=40,
            llc_chains=4,
            llc_burnin=500,
            llc_draws=2000,
            llc_batch_size=256,
            llc_localization=100.0,
        ),
    },
    preset_notes={
        "quick": "toy: 5 dims x 1024 SGLD chains + MALA check; grokking: p=23 MLP, 3 seeds x "
        "2 optimizers x 2000 steps; about 50 s of CPU time",
        "full": "toy: 8 dims x 32768 chains, step 0.005; grokking: p=97, width 512, 8 seeds x "
        "40k steps with curvature and LLC every 1000 steps; ~20-40 min on one GPU",
    },
    claim=CLAIM,
)
def run(
    preset: str,
    seed: int,
    out_dir,
    *,
    dims=(0, 2, 4, 8, 12),
    sharpness: float = 0.5,
    temperature: float = 1.0,
    step_size: float = 0.02,
    num_groups: int = 16,
    chains_per_group: int = 64,
    num_burnin: int = 1000,
    num_records: int = 200,
    thin: int = 20,
    num_bins: int = 24,
    bias_step_size: float = 0.1,
    bias_steps: int = 1000,
    tv_tolerance: float = 0.02,
    slope_rel_tolerance: float = 0.05,
    p: int = 23,
    train_fraction: float = 0.8,
    width: int = 128,
    num_seeds: int = 3,
    optimizers=("adamw", "sgld"),
    steps: int = 2000,
    checkpoint_every: int = 200,
    learning_rate: float = 1e-2,
    weight_decay: float = 1.0,
    sgld_learning_rate: float = 0.5,
    sgld_temperature: float = 1e-5,
    sgld_weight_decay: float = 1e-3,
    threshold: float = 0.9,
    hessian_probes: int = 8,
    lanczos_steps: int = 16,
    llc_chains: int = 2,
    llc_burnin: int = 50,
    llc_draws: int = 150,
    llc_batch_size: int = 64,
    llc_localization: float = 100.0,
) -> Result:
    """Runs part (a) (the exact toy) and part (b) (grokking) and judges both claims.

    Args:
      preset: preset name (recorded only).
      seed: base seed; every key derives from ``jax.random.key(seed)``.
      out_dir: output folder (the framework writes the results).
      dims: transverse dimensions ``d`` of the toy.
      sharpness: ``s`` in ``a(x) = exp(s cos x)``.
      temperature: SGLD temperature of the toy (the exact marginal is independent of it).
      step_size: SGLD step of the main toy run.
      num_groups, chains_per_group: independent groups of chains (groups give the errors).
      num_burnin, num_records, thin: toy chain length (steps) and recording.
      num_bins: histogram bins on the circle.
      bias_step_size, bias_steps: the discretisation-bias check (SGLD vs MALA).
      tv_tolerance, slope_rel_tolerance: the decision rule of part (a) (:func:`toy_verdict`).
      p, train_fraction: modular addition mod ``p`` and the training fraction.
      width: hidden width of the one-hidden-layer ReLU MLP on one-hot pairs.
      num_seeds: seeds per optimizer (one vmapped population).
      optimizers: subset of ``("adamw", "sgld")``; the verdict of (b) uses ``"adamw"``.
      steps, checkpoint_every: full-batch training steps and the measurement interval.
      learning_rate, weight_decay: AdamW.
      sgld_learning_rate, sgld_temperature, sgld_weight_decay: SGLD with a Gaussian prior.
      threshold: accuracy threshold of the grokking delay.
      hessian_probes, lanczos_steps: Hutchinson probes for the trace; Lanczos steps for the
        top eigenvalue.
      llc_chains, llc_burnin, llc_draws, llc_batch_size, llc_localization: the LLC
        estimator (:func:`lljax.landscape.llc_samples`, nβ = n / log n).

    Returns:
      A :class:`~lljax.experiments.Result`.
    """
    del preset, out_dir
    dims = tuple(int(d) for d in dims)
    if not dims or min(dims) < 0 or len(set(dims)) < 2:
        raise ValueError(f"dims: expected at least two distinct d >= 0, got {dims!r}")
    unknown = [o for o in optimizers if o not in ("adamw", "sgld")]
    if unknown or not optimizers:
        raise ValueError(f"optimizers: expected a subset of ('adamw', 'sgld'), got {optimizers!r}")
    if num_groups < 2:
        raise ValueError(f"num_groups: expected >= 2 for error bars, got {num_groups}")
    if steps % checkpoint_every:
        raise ValueError(f"checkpoint_every: must divide steps ({steps}), got {checkpoint_every}")
    k_toy, k_grok = jr.split(jr.key(seed))

    print(f"langevin (a): {len(dims)} x {num_groups * chains_per_group} chains", flush=True)
    toy = _run_toy(
        k_toy,
        dims=dims,
        sharpness=sharpness,
        temperature=temperature,
        step_size=step_size,
        num_groups=num_groups,
        chains_per_group=chains_per_group,
        num_burnin=num_burnin,
        num_records=num_records,
        thin=thin,
        num_bins=num_bins,
        bias_step_size=bias_step_size,
        bias_steps=bias_steps,
        half_width=np.pi / 4,
        tv_tolerance=tv_tolerance,
        slope_rel_tolerance=slope_rel_tolerance,
    )
    print(f"langevin (b): p={p}, {num_seeds} seeds x {list(optimizers)}, {steps} steps", flush=True)
    grok = _run_grokking(
        k_grok,
        p=p,
        train_fraction=train_fraction,
        width=width,
        num_seeds=num_seeds,
        optimizers=tuple(optimizers),
        steps=steps,
        checkpoint_every=checkpoint_every,
        learning_rate=learning_rate,
        weight_decay=weight_decay,
        sgld_learning_rate=sgld_learning_rate,
        sgld_temperature=sgld_temperature,
        sgld_weight_decay=sgld_weight_decay,
        threshold=threshold,
        hessian_probes=hessian_probes,
        lanczos_steps=lanczos_steps,
        llc_chains=llc_chains,
        llc_burnin=llc_burnin,
        llc_draws=llc_draws,
        llc_batch_size=llc_batch_size,
        llc_localization=llc_localization,
        data_seed=seed,
    )

    # ---- part (a): measurements and summary rows.
    summary, toy_meas = [], {}
    for i, d in enumerate(dims):
        lr = measure(toy["log_ratio"][i])
        dist = toy["dist"][d]
        toy_meas[f"d={d}"] = {
            **dist,
            "log_flat_sharp_ratio": lr,
            "exact_log_flat_sharp_ratio": float(toy["exact_log_ratio"][i]),
            "tv_sgld_large_step": toy["bias_dist"]["sgld"][d]["tv"],
        }
        summary.append(
            {
                "part": "a",
                "setting": f"d={d}",
                "quantity": "TV(SGLD, exact)",
                "measured": dist["tv"],
                "reference": f"noise {dist['tv_noise']:.4f}",
            }
        )
        summary.append(
            {
                "part": "a",
                "setting": f"d={d}",
                "quantity": "log flat/sharp",
                "measured": lr,
                "reference": float(toy["exact_log_ratio"][i]),
            }
        )
    summary.append(
        {
            "part": "a",
            "setting": "all d",
            "quantity": "slope of log ratio vs d",
            "measured": toy["slope"],
            "reference": toy["exact_slope"],
        }
    )
    dm = max(dims)
    mala_tv = toy["bias_dist"]["mala"][dm]
    summary.append(
        {
            "part": "a",
            "setting": f"d={dm}, ε={bias_step_size:g}",
            "quantity": "TV: SGLD / MALA",
            "measured": f"{toy['bias_dist']['sgld'][dm]['tv']:.4f} / {mala_tv['tv']:.4f}",
            "reference": f"noise {mala_tv['tv_noise']:.4f}",
        }
    )
    toy_meas.update(
        slope=toy["slope"],
        exact_slope=toy["exact_slope"],
        point_density_slope=sharpness,
        mala_large_step=mala_tv,
        mala_acceptance=float(toy["acceptance"][0]),
    )

    # ---- part (b).
    grok_meas = {}
    for name, r in grok["runs"].items():
        pr = r["probe"]
        m = {
            "train_crossing_step": measure(r["t_train"]),
            "test_crossing_step": measure(r["t_test"]),
            "grokking_delay": measure(np.subtract(r["t_test"], r["t_train"])),
            "weight_norm_ratio_over_delay": measure(r["norm_ratio"]),
            "llc_change_over_delay": measure(r["llc_change"]),
            "final_train_accuracy": measure(100 * pr["train_accuracy"][:, -1], unit="%"),
            "final_test_accuracy": measure(100 * pr["test_accuracy"][:, -1], unit="%"),
            "final_weight_norm": measure(pr["weight_norm"][:, -1]),
            "final_hessian_trace": measure(pr["hessian_trace"][:, -1]),
            "final_top_eigenvalue": measure(pr["top_eigenvalue"][:, -1]),
            "final_llc": measure(pr["llc"][:, -1]),
            "peak_llc": measure(pr["llc"].max(1)),
            "diverged": r["diverged"],
        }
        grok_meas[name] = m
        for q, label in [
            ("grokking_delay", f"delay (test − train ≥ {100 * threshold:g}%), steps"),
            ("final_train_accuracy", "final train accuracy"),
            ("final_test_accuracy", "final test accuracy"),
            ("weight_norm_ratio_over_delay", "weight norm ratio over delay"),
            ("llc_change_over_delay", "LLC change over delay"),
            ("final_llc", "final LLC"),
        ]:
            summary.append(
                {
                    "part": "b",
                    "setting": name,
                    "quantity": label,
                    "measured": m[q],
                    "reference": None,
                }
            )

    verdict_a = toy["verdict"]
    if "adamw" in grok["runs"]:
        r = grok["runs"]["adamw"]
        verdict_b = grokking_verdict(
            r["t_train"],
            r["t_test"],
            r["norm_ratio"],
            r["llc_change"],
            total_steps=steps,
            interval=checkpoint_every,
        )
    else:
        verdict_b = Verdict(CLAIM_B, None, "AdamW was not run")

    figures = {
        **_toy_figures(toy, dims, sharpness, num_bins, step_size, bias_step_size),
        **_grok_figures(grok, threshold),
    }
    data = {
        "toy": {
            "dims": list(dims),
            "bin_edges": np.linspace(0, 2 * np.pi, num_bins + 1),
            "frequency_per_group": toy["freq"],
            "exact_bin_probabilities": np.stack([toy["exact"][d] for d in dims]),
            "log_ratio_per_group": toy["log_ratio"],
            "exact_log_ratio": toy["exact_log_ratio"],
        },
        "grokking": {
            "step": grok["steps"],
            **{
                name: {**r["probe"], "t_train": r["t_train"], "t_test": r["t_test"]}
                for name, r in grok["runs"].items()
            },
        },
    }
    notes = [
        "Toy: x is binned into equal arcs of the circle; the flat arc is |x − π| < π/4 and the "
        "sharp arc |x| < π/4. The exact log ratio is computed on the same bins, so its slope "
        f"in d ({toy['exact_slope']:.4f}) is a little below the point-density slope s = "
        f"{sharpness:g} (log a(π)^(−d/2) / a(0)^(−d/2) = s d).",
        "Toy: standard errors come from independent groups of chains; SGLD's O(step) bias "
        "is measured by the large-step run and removed by MALA (exact at any step).",
        "Toy: all chains run as one SGLD transformation on stacked parameters; the noise is "
        "independent per coordinate, so this equals one sampler per chain.",
        "Grokking: one-hot pairs into a one-hidden-layer ReLU MLP (not the transformer of "
        "Power et al.), full-batch steps, cross-entropy; curvature and the LLC are on the "
        "unregularised training loss. LLC step size ε = 0.2 / (nβ λ_max + γ) per checkpoint; "
        "at early checkpoints (not minima) the LLC is only indicative.",
        "Grokking: the weight-norm ratio over the delay is reported and enters the rule of "
        "part (b); under AdamW the step size is normalised, so the norm is set by the "
        "balance of weight decay and the normalised step more than by the loss.",
    ]
    return Result(
        summary=summary,
        measurements={
            "toy": toy_meas,
            "grokking": grok_meas,
            "verdict_a": verdict_a,
            "verdict_b": verdict_b,
        },
        verdict=combine(verdict_a, verdict_b),
        figures=figures,
        settings={
            "toy_loss": "L(x, y) = ½ exp(s cos x) ‖y‖², x on the circle",
            "model": f"mlp[{2 * p}, {width}, {p}] on one-hot pairs",
            "num_params": grok["num_params"],
            "num_train": grok["num_train"],
            "num_test": grok["num_test"],
        },
        seeds=[seed],
        data=data,
        notes=notes,
    )
