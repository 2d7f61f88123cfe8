"""Hessian spectra across a seed population on MNIST-1D: bulk, outliers, MP law, BatchNorm.

Four measurements, all on populations trained or initialised as one vmapped program:

1. **Outliers vs classes.** A population of MLPs (with and without BatchNorm, the same init
   and data-order keys) is trained on MNIST-1D with Adam. For every member the Hessian of
   the training loss on ``eval_size`` training examples gets its top ``top_k`` eigenvalues
   (thick-restart Lanczos, :func:`lljax.spectrum.eigsh`) and its spectral density
   (stochastic Lanczos quadrature, :func:`lljax.spectrum.density`), all members in one
   ``jax.vmap``. Prediction tested: about ``C = 10`` outliers separated from the bulk
   (Sagun et al. 2017; Papyan 2019 attributes them to the ``C`` class means of the logit
   gradients), accepted when the mean count's 95% t interval (``mean ± t_{n−1} s.e.``,
   :meth:`~lljax.experiments.Measurement.margin`) lies within ``C ± tolerance``.

   Counting rule. The SLQ density is smoothed with Papyan's kernel (σ from the Lanczos
   length and the spectral range); an isolated eigenvalue then shows as a bump of height
   ``h₁ = 1/(P σ √(2π))`` (``P`` parameters). The *bulk edge* is the first eigenvalue above
   the density's mode where the smoothed density falls below ``edge_level · h₁``, i.e.
   where the bulk stops being a continuum at that resolution; outliers are the Lanczos
   eigenvalues above the edge. An independent count is ``P ×`` the SLQ mass above the edge.

2. **Marchenko–Pastur at initialisation.** For a wide 1-hidden-layer ReLU net ``[40, W, C]``
   with squared loss, the Gauss–Newton block of the readout weights is exactly
   ``(1/n) ΦᵀΦ ⊗ I_C`` (``Φ``: the ``n × W`` hidden features), the Gram matrix of random
   features. If the features were i.i.d. its spectrum would be MP with aspect ratio
   ``W/n`` (Pennington & Bahri 2017 model the GGN as Wishart). Its SLQ density (built
   with :func:`lljax.curvature.ggn` + :func:`lljax.curvature.restrict`) is compared with
   the MP law at that ratio (scale fitted) by the total-variation distance between the two
   densities smoothed with the same Gaussian kernel; the floor of this pipeline is the same
   distance for an exact Wishart matrix with the network's structure, ``(1/n) ZᵀZ ⊗ I_C``
   (``Z``: ``n × W`` i.i.d. Gaussian; :func:`kron_identity`), whose Rademacher-probe SLQ
   density averages ``C`` copies of each eigenvector just as the network's does. A
   best-fitting ratio is reported.

3. **Evolution.** λ_max and the trace (Hutchinson, from the SLQ probes) at ``checkpoints``
   equally spaced steps, including initialisation (progressive sharpening: Jastrzębski et
   al. 2020, Cohen et al. 2021).

4. **BatchNorm.** Ghorbani, Krishnan & Xiao (2019) report that BatchNorm removes the large
   outliers. The BatchNorm Hessian here is that of the network with its normalisation
   frozen at population statistics of the training set (BatchNorm as an affine layer),
   which is what Ghorbani et al. measure at evaluation; training uses batch statistics.

Verdict rules compare a mean over seeds with a threshold through its 95% Student-t margin
(``t_{n−1}(0.975) × s.e.``, not 2 s.e., which is anti-conservative for the few seeds run);
the comparison with a nonzero threshold allows a relative slack of :data:`REL_SLACK`, so that
an exact tie is not decided by float rounding: ties count as *within* the threshold.

References:
  Sagun, Evci, Güney, Dauphin & Bottou, arXiv:1706.04454.
  Papyan, arXiv:1811.07062; Papyan, JMLR 21 (2020), arXiv:2008.11865.
  Ghorbani, Krishnan & Xiao, arXiv:1901.10159.
  Pennington & Bahri, ICML 2017; Pennington & Worah, NeurIPS 2017.
  Jastrzębski et al., arXiv:2002.09572; Cohen et al., arXiv:2103.00065.
  Marchenko & Pastur, Math. USSR-Sbornik 1 (1967).
"""

from __future__ import annotations

import math
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from lljax import curvature, ensemble, losses, models, spectrum
from lljax import data as data_lib
from lljax.experiments import Result, Verdict, measure, register

CLAIM = (
    "After training on MNIST-1D (C = 10 classes), the Hessian of an MLP has about C outlier "
    "eigenvalues separated from its bulk."
)
CLAIM_BN = "BatchNorm reduces the number of Hessian outliers (Ghorbani et al. 2019)."
CLAIM_MP = (
    "At initialisation the Gauss–Newton (readout) block of a wide 1-hidden-layer net follows "
    "the Marchenko–Pastur law with aspect ratio W/n."
)
CLAIM_SHARP = "The top Hessian eigenvalue grows during training (progressive sharpening)."

NORMS = ("none", "batch")

#: Relative slack of a verdict's comparison with its threshold: ``x ≤ limit`` is tested as
#: ``x ≤ limit · (1 + REL_SLACK)``, so an exact tie (e.g. ``|mean − C| + margin`` equal to the
#: tolerance in exact arithmetic) counts as within the threshold whatever the rounding.
REL_SLACK = 1e-9

#: Streams of a member's key ``jax.random.key(seed + i)``. :func:`lljax.ensemble.train`
#: splits that key into its init and data-order keys, and ``jax.random.split(k)`` equals
#: ``(fold_in(k, 0), fold_in(k, 1))``: streams 0 and 1 are taken.
MP_STREAM = 2
ANALYSIS_STREAM = 3


def stream_keys(seeds, stream: int) -> jax.Array:
    """``fold_in(key(s), stream)`` for every seed ``s``: ``(len(seeds),)`` keys."""
    if stream in (0, 1):
        raise ValueError(f"stream: 0 and 1 are the init and data-order keys, got {stream}")
    return jnp.stack([jr.fold_in(jr.key(s), stream) for s in seeds])


# --------------------------------------------------------------------------------------
# Marchenko–Pastur law and distances


def mp_density(x, ratio: float, scale: float = 1.0) -> np.ndarray:
    """Continuous part of the Marchenko–Pastur density of ``(1/m) XᵀX``, ``X`` ``m × p``.

    ``ratio = p/m``, entries of variance ``scale``. On ``[a, b] = scale (1 ∓ √ratio)²`` the
    density is ``√((b − x)(x − a)) / (2π scale · ratio · x)``; for ``ratio > 1`` an atom of
    mass ``1 − 1/ratio`` at 0 (see :func:`mp_atom`) completes it.

    Examples:
      >>> import numpy as np
      >>> x = np.linspace(0.0, 4.0, 40001)
      >>> round(float(np.sum(mp_density(x, 0.25)) * (x[1] - x[0])), 3)
      1.0
    """
    if ratio <= 0 or scale <= 0:
        raise ValueError(f"ratio/scale: expected positive values, got {ratio}, {scale}")
    x = np.asarray(x, np.float64)
    a, b = mp_edges(ratio, scale)
    inside = (x > a) & (x < b)
    out = np.zeros_like(x)
    xi = x[inside]
    out[inside] = np.sqrt((b - xi) * (xi - a)) / (2 * math.pi * scale * ratio * xi)
    return out


def mp_edges(ratio: float, scale: float = 1.0) -> tuple[float, float]:
    """Support ``[scale (1 − √ratio)², scale (1 + √ratio)²]`` of the MP law's continuous part."""
    r = math.sqrt(ratio)
    return scale * (1 - r) ** 2, scale * (1 + r) ** 2


def mp_atom(ratio: float) -> float:
    """Mass of the MP law at zero: ``max(0, 1 − 1/ratio)``."""
    return max(0.0, 1.0 - 1.0 / ratio)


def _gauss(grid, centres, sigma):
    z = (grid[:, None] - centres[None, :]) / sigma
    return np.exp(-0.5 * z * z) / (sigma * math.sqrt(2 * math.pi))


def smoothed_mp(grid, ratio: float, scale: float, sigma: float, num_nodes: int = 400):
    """The MP law (atom included) convolved with a Gaussian of std ``sigma``, on ``grid``."""
    grid = np.asarray(grid, np.float64)
    a, b = mp_edges(ratio, scale)
    # Midpoint rule on a Chebyshev-like grid dense at the square-root edges.
    t = (np.arange(num_nodes) + 0.5) / num_nodes
    u = a + (b - a) * 0.5 * (1 - np.cos(math.pi * t))
    du = (b - a) * 0.5 * math.pi * np.sin(math.pi * t) / num_nodes
    w = mp_density(u, ratio, scale) * du
    w *= (1.0 - mp_atom(ratio)) / np.sum(w)
    out = _gauss(grid, u, sigma) @ w
    atom = mp_atom(ratio)
    if atom > 0:
        out = out + atom * _gauss(grid, np.zeros(1), sigma)[:, 0]
    return out


def smoothed_measure(grid, nodes, weights, sigma: float):
    """Gaussian-smoothed density of the discrete measure ``Σ weights δ(nodes)`` (sums to 1)."""
    nodes = np.asarray(nodes, np.float64).ravel()
    weights = np.asarray(weights, np.float64).ravel()
    return _gauss(np.asarray(grid, np.float64), nodes, sigma) @ (weights / weights.sum())


def tv_distance(p, q, dx: float) -> float:
    """Total-variation distance ``½ ∫ |p − q|`` of two densities on a uniform grid."""
    return float(0.5 * np.sum(np.abs(np.asarray(p) - np.asarray(q))) * dx)


def mp_comparison(
    nodes, weights, ratio: float, *, num_points: int = 400, fit_ratio: bool = False
) -> dict[str, Any]:
    """TV distance between an SLQ measure and the MP law at ``ratio`` (scale fitted).

    The grid spans ``[−0.1 h, h]`` with ``h`` 2.5 times the measure's 75% quantile and both
    densities are smoothed with ``σ = h / 60``. The MP scale minimises the distance over a
    log grid; with ``fit_ratio`` the ratio is fitted too (a factor 1/4 to 4 around ``ratio``).

    Returns:
      ``{"tv", "scale", "grid", "density", "mp", "sigma"}`` (plus ``"fit_ratio"`` and
      ``"fit_tv"`` with ``fit_ratio``).
    """
    nodes = np.asarray(nodes, np.float64).ravel()
    weights = np.asarray(weights, np.float64).ravel()
    weights = weights / weights.sum()
    order = np.argsort(nodes)
    cdf = np.cumsum(weights[order])
    # A quantile, not the maximum: a few spikes must not stretch the grid over the bulk.
    q75 = float(nodes[order][min(np.searchsorted(cdf, 0.75), nodes.size - 1)])
    hi = 2.5 * max(q75, 1e-12)
    grid = np.linspace(-0.1 * hi, hi, num_points)
    dx = float(grid[1] - grid[0])
    sigma = hi / 60.0
    dens = smoothed_measure(grid, nodes, weights, sigma)
    scales = q75 * np.geomspace(0.05, 2.0, 48)

    def best(r):
        tvs = [tv_distance(dens, smoothed_mp(grid, r, s, sigma), dx) for s in scales]
        i = int(np.argmin(tvs))
        return tvs[i], float(scales[i])

    tv, scale = best(ratio)
    out = {
        "tv": tv,
        "scale": scale,
        "grid": grid,
        "density": dens,
        "mp": smoothed_mp(grid, ratio, scale, sigma),
        "sigma": sigma,
    }
    if fit_ratio:
        fits = [(*best(ratio * f), ratio * f) for f in np.geomspace(0.25, 4.0, 13)]
        fit_tv, fit_scale, fit_r = min(fits)
        out.update(fit_tv=fit_tv, fit_ratio=float(fit_r), fit_scale=fit_scale)
        out["mp_fit"] = smoothed_mp(grid, fit_r, fit_scale, sigma)
    return out


# --------------------------------------------------------------------------------------
# Bulk edge and outliers


def bulk_edge(grid, density, level: float) -> float:
    """First grid point above the density's mode where ``density < level`` (else the top).

    Examples:
      >>> import numpy as np
      >>> g = np.linspace(0, 10, 101)
      >>> d = np.exp(-2 * g) + 0.1 * np.exp(-(((g - 9) / 0.2) ** 2))  # bulk + outlier at 9
      >>> round(bulk_edge(g, d, 1e-3), 1)
      3.5
    """
    grid, density = np.asarray(grid), np.asarray(density)
    mode = int(np.argmax(density))
    below = np.nonzero(density[mode:] < level)[0]
    return float(grid[mode + below[0]]) if below.size else float(grid[-1])


def count_outliers(eigenvalues, edge: float) -> int:
    """Number of eigenvalues strictly above ``edge``."""
    return int(np.sum(np.asarray(eigenvalues) > edge))


def single_eigenvalue_height(num_params: int, sigma: float) -> float:
    """Peak height of one isolated eigenvalue (mass ``1/P``) under a Gaussian kernel ``σ``."""
    return 1.0 / (num_params * sigma * math.sqrt(2 * math.pi))


# --------------------------------------------------------------------------------------
# Verdict rules


def within(x: float, limit: float) -> bool:
    """``x ≤ limit`` up to a relative slack :data:`REL_SLACK` (ties count as within).

    Examples:
      >>> within(2.0000000000000004, 2.0), within(2.001, 2.0)
      (True, False)
    """
    return x <= limit + REL_SLACK * abs(limit)


def _margin_text(m, what: str, fmt: str = ".2f") -> str:
    """``"what ± 95% t-margin 1.43 (t with 2 d.f. × s.e.)"``: the rule in the evidence."""
    if m.n < 2:
        return f"{what} ± 95% t-margin"
    return f"{what} ± 95% t-margin {m.margin():{fmt}} (t with {m.n - 1} d.f. × s.e.)"


def outlier_verdict(counts, num_classes: int, tolerance: float, censored: bool) -> Verdict:
    """Supported when ``|mean − C| + margin ≤ tolerance`` (the 95% t interval of the mean lies
    within the tolerance; :meth:`~lljax.experiments.Measurement.margin`), not supported when
    ``|mean − C| − margin > tolerance``, else undecided. Ties count as within (see
    :func:`within`): a boundary case supports, it never refutes.

    A single seed gives no interval and leaves the claim undecided, as in every verdict here.
    """
    m = measure(counts)
    margin = m.margin()
    gap = abs(m.value - num_classes)
    evidence = (
        f"outliers per seed {[int(c) for c in counts]}, mean {m} vs C = "
        f"{num_classes} (rule: {_margin_text(m, '|mean − C|')} vs {tolerance:g})"
    )
    if censored:
        return Verdict(CLAIM, None, evidence + "; some counts hit top_k (censored)")
    if not math.isfinite(margin):
        return Verdict(CLAIM, None, evidence + "; one seed gives no error bar")
    if within(gap + margin, tolerance):
        return Verdict(CLAIM, True, evidence)
    if not within(gap - margin, tolerance):
        return Verdict(CLAIM, False, evidence)
    return Verdict(CLAIM, None, evidence + "; the 95% interval straddles the tolerance")


def difference_verdict(claim: str, diffs, what: str) -> Verdict:
    """Paired differences ``diffs`` (positive = claim): mean − margin > 0 supports, mean +
    margin ≤ 0 refutes (margin: the 95% t margin, :meth:`~lljax.experiments.Measurement.margin`),
    otherwise (or with one seed) undecided."""
    m = measure(diffs)
    margin = m.margin()
    evidence = f"{what}: {m} over {m.n} paired seeds (rule: {_margin_text(m, 'mean')} vs 0)"
    if not math.isfinite(margin):
        return Verdict(claim, None, evidence + "; one seed gives no error bar")
    if m.value - margin > 0:
        return Verdict(claim, True, evidence)
    if m.value + margin <= 0:
        return Verdict(claim, False, evidence)
    return Verdict(claim, None, evidence)


def batchnorm_verdict(counts_plain, counts_batch, top_k: int) -> Verdict:
    """:func:`difference_verdict` of the paired outlier counts without minus with BatchNorm;
    undecided, with the censored counts named, when any count reaches ``top_k``.

    A count that reaches ``top_k`` is only a lower bound on the number of outliers, so the
    paired differences and their standard error are unknown (even the sign of the error is:
    a larger true difference can come with a larger standard error), as for the plain counts
    in :func:`outlier_verdict`.
    """
    counts_plain, counts_batch = np.asarray(counts_plain), np.asarray(counts_batch)
    v = difference_verdict(
        CLAIM_BN, counts_plain - counts_batch, "outliers without minus with BatchNorm"
    )
    censored = [
        f"{name} {[int(c) for c in counts]}"
        for name, counts in (("plain", counts_plain), ("BatchNorm", counts_batch))
        if np.any(counts >= top_k)
    ]
    if not censored:
        return v
    return Verdict(
        CLAIM_BN,
        None,
        v.evidence + f"; some counts hit top_k = {top_k} (censored): " + ", ".join(censored),
    )


def mp_verdict(tv_net, tv_null, margin: float) -> Verdict:
    """The network's TV distance over the Wishart ⊗ I_C floor, paired by seed: supported when
    the excess + its 95% t margin ≤ ``margin`` (ties count as within, :func:`within`), not
    supported when excess − t margin > ``margin``, otherwise (or with one seed) undecided."""
    net, null = measure(tv_net), measure(tv_null)
    excess = measure(np.subtract(tv_net, tv_null))
    t_margin = excess.margin()
    evidence = (
        f"TV distance to MP: network {net}, exact Wishart ⊗ I_C {null} (pipeline floor); "
        f"excess {excess} over {excess.n} paired seeds "
        f"(rule: {_margin_text(excess, 'excess', '.3f')} vs {margin:g})"
    )
    if not math.isfinite(t_margin):
        return Verdict(CLAIM_MP, None, evidence + "; one seed gives no error bar")
    if within(excess.value + t_margin, margin):
        return Verdict(CLAIM_MP, True, evidence)
    if not within(excess.value - t_margin, margin):
        return Verdict(CLAIM_MP, False, evidence)
    return Verdict(CLAIM_MP, None, evidence + "; the 95% interval straddles the margin")


# --------------------------------------------------------------------------------------
# Curvature of a population


def _analysis_fn(model, loss_fn, norm: str, *, eval_size, hessian_batch, top_k, lanczos_steps,
                 max_restarts, slq_probes, slq_steps):  # fmt: skip
    """``fn(params, keys, x, y, x_all)``: top-k, SLQ and trace of every member's Hessian."""

    def fn(params, key, x, y, x_all):
        kw = {"stats": model.stats(params, x_all)} if norm == "batch" else {}
        H = curvature.hessian(loss_fn, params, (x, y), batch_size=hessian_batch, **kw)
        k_top, k_slq = jr.split(key)
        top = spectrum.eigsh(
            H,
            k=top_k,
            key=k_top,
            num_steps=lanczos_steps,
            max_restarts=max_restarts,
            return_eigenvectors=False,
        )
        dens = spectrum.density(H, key=k_slq, num_probes=slq_probes, num_steps=slq_steps)
        # vᵀHv/‖v‖² · P for a Rademacher v is Hutchinson's sample: the trace for free.
        samples = H.size * jnp.sum(dens.weights * dens.nodes, axis=1)
        return {
            "top": top.eigenvalues,
            "converged": top.converged,
            "nodes": dens.nodes,
            "weights": dens.weights,
            "bounds": dens.bounds,
            "trace": jnp.mean(samples),
            "trace_se": jnp.std(samples, ddof=1) / math.sqrt(slq_probes),
        }

    return jax.jit(jax.vmap(fn, in_axes=(0, 0, None, None, None)))


def _member_outliers(out: dict, i: int, num_params: int, edge_level: float) -> dict:
    d = spectrum.DensityResult(
        jnp.asarray(out["nodes"][i]), jnp.asarray(out["weights"][i]), jnp.asarray(out["bounds"][i])
    )
    s = d.smooth(preset="papyan", num_points=1024)
    grid, dens, sigma = np.asarray(s.grid), np.asarray(s.density), float(s.sigma)
    edge = bulk_edge(grid, dens, edge_level * single_eigenvalue_height(num_params, sigma))
    top = np.asarray(out["top"][i])
    above = np.asarray(out["nodes"][i]) > edge
    slq_count = num_params * float(np.mean(np.sum(np.asarray(out["weights"][i]) * above, axis=1)))
    h1 = single_eigenvalue_height(num_params, sigma)
    edges_alt = [bulk_edge(grid, dens, f * edge_level * h1) for f in (0.1, 10.0)]
    return {
        "edge": edge,
        "count": count_outliers(top, edge),
        "count_level_x0.1": count_outliers(top, edges_alt[0]),
        "count_level_x10": count_outliers(top, edges_alt[1]),
        "slq_count": slq_count,
        "grid": grid,
        "density": dens,
        "top": top,
        "ratio": float(top[0] / edge) if edge > 0 else math.nan,
    }


def kron_identity(g: jax.Array, num_classes: int) -> curvature.Operator:
    """``g ⊗ I_C`` as an operator, without forming it: ``v ↦ (g @ v.reshape(W, C)).ravel()``.

    The readout block of the squared-loss GGN of ``[d, W, C]`` is ``(1/n) ΦᵀΦ ⊗ I_C`` in the
    raveled order of the ``(W, C)`` kernel (row ``w·C + c``); this is the same structure for
    any symmetric ``(W, W)`` matrix ``g``, at ``O(W² C)`` per product and ``W²`` memory.

    Examples:
      >>> import jax.numpy as jnp
      >>> op = kron_identity(jnp.array([[2.0, 1.0], [1.0, 3.0]]), 2)
      >>> op.size, op.matvec(jnp.array([1.0, 0.0, 0.0, 0.0])).tolist()
      (4, [2.0, 0.0, 1.0, 0.0])
    """
    g = jnp.asarray(g)
    if g.ndim != 2 or g.shape[0] != g.shape[1]:
        raise ValueError(f"g: expected a square matrix, got shape {g.shape}")
    w = int(g.shape[0])

    def matvec(v):
        v = jnp.asarray(v, g.dtype).reshape(w, num_classes)
        return jnp.matmul(g, v, precision="highest").ravel()

    return curvature.Operator(matvec, w * num_classes, g.dtype, name=f"matrix ⊗ I_{num_classes}")


def _mp_population(width, num_examples, num_classes, keys, x, *, probes, steps):
    """SLQ of the readout GGN block at init for each key, and of ``Wishart ⊗ I_C`` (null).

    The null has the network's operator structure (see :func:`kron_identity`): the
    Rademacher-probe SLQ density of ``g ⊗ I_C`` averages ``C`` independent probes of ``g``,
    so its noise, and so the pipeline's floor, is that of the network's density, not the
    larger one of the bare ``W × W`` matrix.
    """
    model = models.mlp([x.shape[1], width, num_classes], activation="relu", init="he")
    loss_fn = losses.mse(model)
    y = jnp.zeros((num_examples, num_classes), x.dtype)

    @jax.jit
    def net(key):
        k_init, k_slq = jr.split(key)
        params = model.init(k_init)
        G = curvature.ggn(loss_fn, params, (x, y))
        readout = curvature.restrict(G, params, "Dense_1/kernel")
        return spectrum.density(readout, key=k_slq, num_probes=probes, num_steps=steps)

    @jax.jit
    def null(key):
        k_x, k_slq = jr.split(key)
        z = jr.normal(k_x, (num_examples, width), x.dtype)
        g = jnp.matmul(z.T, z, precision="highest") / num_examples
        op = kron_identity(g, num_classes)
        return spectrum.density(op, key=k_slq, num_probes=probes, num_steps=steps)

    return jax.vmap(net)(keys), jax.vmap(null)(keys)


# --------------------------------------------------------------------------------------
# The experiment


@register(
    "spectra",
    description="Hessian spectra of MNIST-1D MLP populations: outliers vs classes, MP at init, "
    "evolution, BatchNorm",
    presets={
        "quick": dict(
            widths=(40, 32, 32, 10),
            num_seeds=3,
            steps=1200,
            batch_size=100,
            learning_rate=3e-3,
            checkpoints=3,
            eval_size=512,
            hessian_batch=512,
            top_k=16,
            lanczos_steps=40,
            max_restarts=4,
            slq_probes=3,
            slq_steps=48,
            edge_level=0.01,
            tolerance=2.0,
            mp_width=128,
            mp_examples=512,
            mp_probes=4,
            mp_steps=40,
            mp_margin=0.1,
            norms=NORMS,
            progress=True,
        ),
        "full": dict(
            widths=(40, 128, 128, 10),
            num_seeds=16,
            steps=8000,
            batch_size=100,
            learning_rate=3e-3,
            checkpoints=8,
            eval_size=4000,
            hessian_batch=1000,
            top_k=40,
            lanczos_steps=120,
            max_restarts=20,
            slq_probes=16,
            slq_steps=120,
            edge_level=0.01,
            tolerance=2.0,
            mp_width=1024,
            mp_examples=4096,
            mp_probes=16,
            mp_steps=100,
            mp_margin=0.1,
            norms=NORMS,
            progress=True,
        ),
    },
    preset_notes={
        "quick": "MLP 40-32-32-10, 3 seeds x 1200 Adam steps, with and without BatchNorm; "
        "about 100 s of CPU time",
        "full": "MLP 40-128-128-10, 16 seeds x 8000 steps, Hessian on the whole training set, "
        "MP with W = 1024, n = 4096; roughly 10-20 min on one GPU (estimate)",
    },
    claim=CLAIM,
)
def run(
    preset: str,
    seed: int,
    out_dir,
    *,
    widths: tuple[int, ...] = (40, 32, 32, 10),
    num_seeds: int = 3,
    steps: int = 1200,
    batch_size: int = 100,
    learning_rate: float = 3e-3,
    checkpoints: int = 3,
    eval_size: int = 512,
    hessian_batch: int = 512,
    top_k: int = 16,
    lanczos_steps: int = 40,
    max_restarts: int = 4,
    slq_probes: int = 3,
    slq_steps: int = 48,
    edge_level: float = 0.01,
    tolerance: float = 2.0,
    mp_width: int = 128,
    mp_examples: int = 512,
    mp_probes: int = 4,
    mp_steps: int = 40,
    mp_margin: float = 0.1,
    norms: tuple[str, ...] = NORMS,
    progress: bool = True,
) -> Result:
    """Hessian outliers, MP at init, evolution and BatchNorm on an MNIST-1D population.

    Args:
      preset: preset name (recorded only).
      seed: base seed; member ``i`` has key ``jax.random.key(seed + i)`` (its init and
        data-order keys, shared by the BatchNorm and plain populations); the spectral
        probes and the MP part use other streams of that key (:func:`stream_keys`).
      out_dir: output folder (unused: the framework writes the results).
      widths: MLP widths, input 40 and output 10.
      num_seeds: population size.
      steps, batch_size, learning_rate: Adam training.
      checkpoints: spectra at this many equally spaced steps after initialisation.
      eval_size: training examples the Hessian is taken over.
      hessian_batch: batch size of the dataset-level Hessian (memory).
      top_k, lanczos_steps, max_restarts: :func:`lljax.spectrum.eigsh` settings.
      slq_probes, slq_steps: :func:`lljax.spectrum.density` settings.
      edge_level: bulk-edge threshold in units of one isolated eigenvalue's peak height.
      tolerance: accepted ``|outliers − C|``.
      mp_width, mp_examples, mp_probes, mp_steps: the MP part (hidden width ``W``,
        examples ``n``, SLQ settings); one init per seed.
      mp_margin: accepted TV excess over the Wishart floor.
      norms: populations to train, ``"none"`` (required) and optionally ``"batch"``.
      progress: print progress.

    Returns:
      A :class:`~lljax.experiments.Result`.
    """
    del preset, out_dir
    if num_seeds < 1 or checkpoints < 1 or steps < checkpoints:
        raise ValueError(
            f"num_seeds/checkpoints/steps: expected num_seeds >= 1 and 1 <= checkpoints <= "
            f"steps, got {num_seeds}, {checkpoints}, {steps}"
        )
    norms = tuple(norms)
    if "none" not in norms or not set(norms) <= set(NORMS):
        raise ValueError(f"norms: expected 'none' and optionally 'batch', got {norms!r}")
    if top_k + 2 > lanczos_steps:
        raise ValueError(f"lanczos_steps: expected >= top_k + 2 = {top_k + 2}, got {lanczos_steps}")
    data = data_lib.mnist1d()
    C = data.num_classes
    if top_k <= C:
        raise ValueError(f"top_k: expected more than the {C} classes, got {top_k}")
    seeds = [seed + i for i in range(num_seeds)]
    member_keys = jnp.stack([jr.key(s) for s in seeds])
    # A one-device member mesh places fresh and resumed train states alike, so resuming
    # from a checkpoint reuses the compiled training chunk.
    mesh = ensemble.member_mesh(jax.devices()[:1])
    spec_keys = stream_keys(seeds, ANALYSIS_STREAM)  # not the init/data-order keys
    x_eval, y_eval = data.x_train[:eval_size], data.y_train[:eval_size]
    marks = [round(steps * j / checkpoints) for j in range(checkpoints + 1)]
    settings = dict(eval_size=eval_size, hessian_batch=hessian_batch, top_k=top_k,
                    lanczos_steps=lanczos_steps, max_restarts=max_restarts,
                    slq_probes=slq_probes, slq_steps=slq_steps)  # fmt: skip
    say = print if progress else (lambda *a, **k: None)

    # 1, 3, 4: train each population in segments (resuming from a checkpoint folder, so the
    # run equals an uninterrupted one) and measure the spectra at every mark.
    per_norm: dict[str, dict] = {}
    for norm in norms:
        model = models.mlp(list(widths), norm=None if norm == "none" else norm)
        loss_fn = losses.cross_entropy(model)
        optimizer = optax.adam(learning_rate)
        analyse = _analysis_fn(model, loss_fn, norm, **settings)
        params0 = jax.device_put(ensemble.init(model, keys=member_keys), jax.devices()[0])
        num_params = int(sum(np.size(p) for p in jax.tree.leaves(params0))) // num_seeds
        say(f"[spectra] {norm}: {num_params} params, {num_seeds} seeds, marks {marks}", flush=True)
        evo = [jax.device_get(analyse(params0, spec_keys, x_eval, y_eval, data.x_train))]
        with tempfile.TemporaryDirectory() as ckpt:
            for t in marks[1:]:
                pop = ensemble.train(
                    model,
                    loss_fn,
                    optimizer,
                    data,
                    keys=member_keys,
                    mesh=mesh,
                    steps=t,
                    batch_size=batch_size,
                    eval_every=marks[1],
                    checkpoint_dir=ckpt,
                    progress=progress,
                )
                params = jax.device_put(pop.params, jax.devices()[0])  # as params0: one compile
                evo.append(jax.device_get(analyse(params, spec_keys, x_eval, y_eval, data.x_train)))
        final = evo[-1]
        members = [_member_outliers(final, i, num_params, edge_level) for i in range(num_seeds)]
        per_norm[norm] = {
            "num_params": num_params,
            "history": pop.history,
            "evo_top": np.stack([e["top"][:, 0] for e in evo], axis=1),
            "evo_trace": np.stack([e["trace"] for e in evo], axis=1),
            "members": members,
            "converged": np.asarray(final["converged"]),
            "init_members": [
                _member_outliers(evo[0], i, num_params, edge_level) for i in range(num_seeds)
            ],
        }

    # 2: Marchenko–Pastur at initialisation, one wide net per seed, vs exact Wishart ⊗ I_C.
    say(f"[spectra] MP: W = {mp_width}, n = {mp_examples}", flush=True)
    x_mp = data.x_train[:mp_examples]
    mp_keys = stream_keys(seeds, MP_STREAM)
    net_d, null_d = _mp_population(
        mp_width, mp_examples, C, mp_keys, x_mp, probes=mp_probes, steps=mp_steps
    )
    ratio = mp_width / mp_examples
    net_cmp = [
        mp_comparison(net_d.nodes[i], net_d.weights[i], ratio, fit_ratio=(i == 0))
        for i in range(num_seeds)
    ]
    null_cmp = [mp_comparison(null_d.nodes[i], null_d.weights[i], ratio) for i in range(num_seeds)]
    tv_net = [c["tv"] for c in net_cmp]
    tv_null = [c["tv"] for c in null_cmp]

    # Measurements and verdicts.
    plain = per_norm["none"]
    counts = {n: [m["count"] for m in per_norm[n]["members"]] for n in norms}
    censored = any(c >= top_k for c in counts["none"])
    verdict = outlier_verdict(counts["none"], C, tolerance, censored)
    if "batch" in norms:
        v_bn = batchnorm_verdict(counts["none"], counts["batch"], top_k)
    else:
        v_bn = Verdict(CLAIM_BN, None, "the BatchNorm population was not run (norms)")
    sharpen = plain["evo_top"][:, -1] - plain["evo_top"][:, 0]
    v_sharp = difference_verdict(CLAIM_SHARP, sharpen, "λ_max(final) − λ_max(init)")
    v_mp = mp_verdict(tv_net, tv_null, mp_margin)

    def stat(norm, key):
        return measure([m[key] for m in per_norm[norm]["members"]])

    acc = {
        n: {
            s: measure(100 * np.asarray(per_norm[n]["history"][f"{s}_accuracy"])[:, -1], unit="%")
            for s in ("train", "test")
        }
        for n in norms
    }
    m_counts = {n: measure(counts[n]) for n in norms}
    measurements = {
        "outliers": m_counts,
        "outliers_slq_mass": {n: stat(n, "slq_count") for n in norms},
        "outliers_edge_level_x0.1": {n: stat(n, "count_level_x0.1") for n in norms},
        "outliers_edge_level_x10": {n: stat(n, "count_level_x10") for n in norms},
        "outliers_at_init": {
            n: measure([m["count"] for m in per_norm[n]["init_members"]]) for n in norms
        },
        "bulk_edge": {n: stat(n, "edge") for n in norms},
        "lambda_max": {n: measure(per_norm[n]["evo_top"][:, -1]) for n in norms},
        "lambda_max_over_edge": {n: stat(n, "ratio") for n in norms},
        "lambda_C_over_lambda_C+1": {
            n: measure([m["top"][C - 1] / m["top"][C] for m in per_norm[n]["members"]])
            for n in norms
        },
        "trace": {n: measure(per_norm[n]["evo_trace"][:, -1]) for n in norms},
        "lambda_max_init": {n: measure(per_norm[n]["evo_top"][:, 0]) for n in norms},
        "trace_init": {n: measure(per_norm[n]["evo_trace"][:, 0]) for n in norms},
        "train_accuracy": {n: acc[n]["train"] for n in norms},
        "test_accuracy": {n: acc[n]["test"] for n in norms},
        "eigsh_converged_fraction": {n: float(per_norm[n]["converged"].mean()) for n in norms},
        "mp_tv_network": measure(tv_net),
        "mp_tv_wishart": measure(tv_null),
        "mp_ratio_predicted": ratio,
        "mp_ratio_fitted": net_cmp[0]["fit_ratio"],
        "mp_tv_fitted_ratio": net_cmp[0]["fit_tv"],
        "num_params": {n: per_norm[n]["num_params"] for n in norms},
        "verdicts": {"outliers": verdict, "batchnorm": v_bn, "mp": v_mp, "sharpening": v_sharp},
    }

    def row(quantity, values, reference=""):
        """One summary row; ``values`` per norm in ``norms`` ("—" for a norm not run)."""
        cols = dict(zip(norms, values, strict=True))
        return {
            "quantity": quantity,
            "no norm": cols.get("none", "—"),
            "batchnorm": cols.get("batch", "—"),
            "reference": reference,
        }

    def per(fn):
        return [fn(n) for n in norms]

    mm = measurements
    summary = [
        row("train / test accuracy (%)", per(lambda n: f"{acc[n]['train']} / {acc[n]['test']}")),
        row("outliers above bulk edge", per(m_counts.get), f"C = {C} ± {tolerance:g}"),
        row("outliers from SLQ mass", per(lambda n: stat(n, "slq_count")), f"C = {C}"),
        row(
            "outliers, edge_level x0.1 | x10",
            per(lambda n: f"{stat(n, 'count_level_x0.1')} | {stat(n, 'count_level_x10')}"),
            "robustness of the rule",
        ),
        row("outliers at init", per(mm["outliers_at_init"].get)),
        row("bulk edge", per(lambda n: stat(n, "edge"))),
        row("λ_max / bulk edge", per(lambda n: stat(n, "ratio"))),
        row("λ_C / λ_C+1", per(mm["lambda_C_over_lambda_C+1"].get)),
        row(
            "λ_max init → final",
            per(lambda n: f"{mm['lambda_max_init'][n]} → {mm['lambda_max'][n]}"),
        ),
        row("trace init → final", per(lambda n: f"{mm['trace_init'][n]} → {mm['trace'][n]}")),
    ]
    extra = [
        ("MP TV distance: net | Wishart ⊗ I_C", f"{measure(tv_net)} | {measure(tv_null)}",
         f"paired excess ≤ {mp_margin:g} at 95% (t)"),
        ("MP aspect ratio: fitted | predicted W/n",
         f"{net_cmp[0]['fit_ratio']:.3g} | {ratio:.3g}", ""),
    ] + [(f"verdict: {k}", v.label, v.evidence) for k, v in mm["verdicts"].items()]  # fmt: skip
    for quantity, value, reference in extra:
        summary.append(
            {"quantity": quantity, "no norm": value, "batchnorm": "", "reference": reference}
        )

    data_out = {
        "marks": np.asarray(marks),
        "mp": {
            "grid": net_cmp[0]["grid"],
            "density_network": net_cmp[0]["density"],
            "mp_predicted_ratio": net_cmp[0]["mp"],
            "mp_fitted_ratio": net_cmp[0]["mp_fit"],
            "grid_null": null_cmp[0]["grid"],
            "density_null": null_cmp[0]["density"],
            "mp_null": null_cmp[0]["mp"],
        },
    }
    for n in norms:
        p = per_norm[n]
        data_out[n] = {
            "top_eigenvalues": np.stack([m["top"] for m in p["members"]]),
            "bulk_edge": np.asarray([m["edge"] for m in p["members"]]),
            "outliers": [int(c) for c in counts[n]],
            "density_grid": np.stack([m["grid"] for m in p["members"]]),
            "density": np.stack([m["density"] for m in p["members"]]),
            "lambda_max": p["evo_top"],
            "trace": p["evo_trace"],
            "eval_step": np.asarray(p["history"]["eval_step"]),
            "test_accuracy": 100 * np.asarray(p["history"]["test_accuracy"]),
        }

    return Result(
        summary=summary,
        measurements=measurements,
        verdict=verdict,
        figures={
            "spectra": lambda: _spectra_figure(data_out, C),
            "top_eigenvalues": lambda: _top_figure(data_out, C),
            "marchenko_pastur": lambda: _mp_figure(data_out, ratio, mp_width, mp_examples),
            "evolution": lambda: _evolution_figure(data_out),
        },
        settings={
            "optimizer": "adam",
            "loss": "cross-entropy",
            "dataset": "mnist1d (seed 42, 4000/1000)",
            "hessian": f"training loss on the first {eval_size} training examples",
            "batchnorm_hessian": "population statistics of the training set (frozen BN)",
            "outlier_rule": "eigsh eigenvalues above the bulk edge, where the Papyan-smoothed "
            "SLQ density first drops below edge_level x one eigenvalue's peak",
            "mp_operator": "readout block of the squared-loss GGN of mlp[40, W, 10] at He init",
            "mp_null": "(1/n) Z^T Z ⊗ I_C, Z n x W standard Gaussian (the network's structure)",
        },
        seeds=seeds,
        data=data_out,
        notes=[
            "Papyan 2019/2020 and Sagun et al. 2017 use CNNs on MNIST/CIFAR trained to ~100% "
            "train accuracy; here MLPs on MNIST-1D, far from interpolation on the quick preset.",
            "The Hessian is on a fixed subset of the training set (eval_size), not all of it.",
            "The MP comparison uses the Gram matrix of the readout layer (an exact GGN block), "
            "not the full GGN: the first-layer block has a different scale and no MP model. "
            "The features' linear part has rank <= 40 (the input dimension), so about 40/W of "
            "that spectrum are spikes outside any MP bulk (Pennington & Worah 2017): the "
            "full preset's W = 1024 is closer to the theory's regime than the quick W = 128.",
            "The trace is Hutchinson's estimate from the SLQ probes (s.e. over probes).",
            f"eigsh converged fraction: {measurements['eigsh_converged_fraction']}",
        ],
    )


# --------------------------------------------------------------------------------------
# Figures


def _spectra_figure(d, C):
    from lljax import plot

    plt = plot.pyplot()
    norms = [n for n in NORMS if n in d]
    fig, axes = plt.subplots(1, len(norms), figsize=(11, 4), layout="constrained", sharey=True)
    axes = np.atleast_1d(axes)
    for ax, n in zip(axes, norms, strict=True):
        r = d[n]
        for i in range(r["density"].shape[0]):
            line = ax.semilogy(r["density_grid"][i], np.maximum(r["density"][i], 1e-9), lw=1)[0]
            ax.axvline(r["bulk_edge"][i], color=line.get_color(), ls="--", lw=0.8)
            ax.plot(r["top_eigenvalues"][i], np.full(r["top_eigenvalues"].shape[1], 2e-7),
                    "|", color=line.get_color(), ms=10)  # fmt: skip
        ax.set_ylim(1e-7, None)
        ax.set(xlabel="eigenvalue", title=f"{'plain' if n == 'none' else 'BatchNorm'}: "
               f"outliers {list(r['outliers'])} (C = {C})")  # fmt: skip
    axes[0].set_ylabel("SLQ density (dashed: bulk edge, ticks: top-k)")
    return fig


def _top_figure(d, C):
    from lljax import plot

    plt = plot.pyplot()
    fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
    for n in (n for n in NORMS if n in d):
        top = d[n]["top_eigenvalues"]
        k = np.arange(1, top.shape[1] + 1)
        for i in range(top.shape[0]):
            label = ("plain" if n == "none" else "BatchNorm") if i == 0 else None
            style = "o-" if n == "none" else "s--"
            color = "C0" if n == "none" else "C1"
            ax.semilogy(k, top[i], style, ms=3, lw=0.8, color=color, label=label)
    ax.axvline(C + 0.5, color="0.4", ls=":", label=f"C = {C}")
    ax.set(xlabel="rank i", ylabel="λ_i (Hessian)", title="top eigenvalues per seed")
    ax.legend(frameon=False)
    return fig


def _mp_figure(d, ratio, width, n):
    from lljax import plot

    plt = plot.pyplot()
    m = d["mp"]
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    axes[0].plot(m["grid"], m["density_network"], label="readout GGN (SLQ)")
    axes[0].plot(m["grid"], m["mp_predicted_ratio"], "--", label=f"MP, ratio W/n = {ratio:.3g}")
    axes[0].plot(m["grid"], m["mp_fitted_ratio"], ":", label="MP, fitted ratio")
    axes[0].set(title=f"1-hidden-layer ReLU net, W = {width}, n = {n}, at init",
                xlabel="eigenvalue", ylabel="smoothed density")  # fmt: skip
    axes[1].plot(m["grid_null"], m["density_null"], label="Wishart ⊗ I_C (SLQ)")
    axes[1].plot(m["grid_null"], m["mp_null"], "--", label="MP")
    axes[1].set(title="exact Wishart ⊗ I_C, same size (pipeline floor)", xlabel="eigenvalue")
    for ax in axes:
        ax.legend(frameon=False, fontsize="small")
    return fig


def _evolution_figure(d):
    from lljax import plot

    plt = plot.pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4), layout="constrained")
    for key, ax, label in (("lambda_max", axes[0], "λ_max"), ("trace", axes[1], "trace")):
        series = {}
        for n in (n for n in NORMS if n in d):
            v = d[n][key]
            se = v.std(0, ddof=1) / math.sqrt(v.shape[0]) if v.shape[0] > 1 else 0 * v[0]
            series["plain" if n == "none" else "BatchNorm"] = (d["marks"], v.mean(0), se)
        plot.curves(series, ylabel=f"Hessian {label}", title=f"{label} during training", ax=ax)
    return fig
