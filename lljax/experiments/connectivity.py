"""Mode connectivity: linear barriers, trained Bezier curves and the instability to SGD noise.

Three measurements on one MLP trained with plain SGD on MNIST-1D:

1. **Linear barriers between independent seeds.** ``2 * num_pairs`` networks are trained
   from independent initialisations and data orders (one population, one compiled call).
   Disjoint pairs ``(0, 1), (2, 3), ...`` give independent samples of the loss barrier
   ``max_t [L(θ_t) − ((1 − t) L(θ_a) + t L(θ_b))]`` on the straight line between them
   (:func:`lljax.landscape.interpolate`, training loss).
2. **Trained Bezier curves.** For the same pairs, a quadratic Bezier curve with one
   trainable bend is fitted by minimising ``E_t L(φ(t))`` (:func:`lljax.landscape.connect`,
   Garipov et al. 2018); its barrier is measured the same way, so each pair gives a paired
   difference ``linear − curve``.
3. **Instability vs spawn step** (Frankle et al. 2020). A parent is trained for ``k`` steps,
   copied, and the two copies are trained for the remaining ``steps − k`` steps with
   different data-order keys; the instability is the test-error barrier
   ``max_t E(t) − ½ (E(0) + E(1))`` between the two endpoints
   (:func:`lljax.landscape.instability`). All spawn steps and pairs run as one population:
   every member trains for the same number of scan steps and a per-member step budget
   zeroes the learning rate once its budget is spent (:func:`masked_sgd`), so a parent
   stopped at ``k`` is exactly the first ``k`` steps of its trajectory.

Verdict rule (:func:`verdict`): the claim is supported when (a) the linear barrier's
``level`` (95%) Student-t interval over pairs lies above zero, (b) the interval of the paired
difference linear − curve lies above zero *and* the curve barrier is at most
``max_curve_fraction`` of the linear one, and (c) Kendall's τ between spawn step and instability is
negative with a bootstrap confidence interval below zero (the bootstrap resamples parents,
whose points at different spawn steps are not independent; with fewer than
:data:`lljax.experiments.MIN_CLUSTERS` parents there is no interval). Parts (a) and (b) fail
when their inequality does not hold with at least two pairs, part (c) when the interval lies
at or above zero; any failing part makes the verdict negative, and a part that cannot decide
(one pair, too few parents, an interval that straddles zero) makes it undecided.

References:
  Garipov et al. 2018, "Loss surfaces, mode connectivity, and fast ensembling of DNNs",
  arXiv:1802.10026; Draxler et al. 2018, arXiv:1803.00885; Frankle et al. 2020, "Linear
  mode connectivity and the lottery ticket hypothesis", arXiv:1912.05671.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Sequence
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

from lljax import data as data_lib
from lljax import ensemble, landscape, losses, models
from lljax.experiments import (
    MIN_CLUSTERS,
    Measurement,
    Result,
    Verdict,
    all_of,
    measure,
    register,
)

CLAIM = (
    "Independently trained networks are separated by a loss barrier on the straight line "
    "between them that a trained Bezier curve removes, and two copies spawned from one SGD "
    "trajectory become linearly mode connected (their error barrier falls) as the spawn "
    "step grows."
)


def masked_sgd(learning_rate, num_steps) -> optax.GradientTransformation:
    """Plain SGD whose learning rate drops to 0 after ``num_steps`` updates.

    Used as an optimizer factory of :func:`lljax.ensemble.train` with per-member
    ``num_steps``: members with different step budgets share one compiled program, and a
    member with budget ``k`` ends exactly where its trajectory was after ``k`` steps. Plain
    SGD is stateless apart from the step count, so copying the params copies the whole
    training state (Frankle et al.'s spawning needs no optimizer state).

    Args:
      learning_rate: step size (may be a traced per-member value).
      num_steps: number of updates before the learning rate becomes 0 (may be traced).

    Examples:
      >>> import jax.numpy as jnp
      >>> opt = masked_sgd(0.5, 2)
      >>> p, s = jnp.ones(()), opt.init(jnp.ones(()))
      >>> for _ in range(4):
      ...     u, s = opt.update(jnp.ones(()), s)
      ...     p = p + u
      >>> float(p)
      0.0
    """
    return optax.sgd(lambda count: jnp.where(count < num_steps, learning_rate, 0.0))


def _train_masked(
    loss_fn, data, params, data_keys, budgets, *, steps, lr, batch, progress, evaluate=True
):
    """Trains stacked ``params`` for ``budgets[i]`` steps each, in one ensemble call."""
    m = int(budgets.shape[0])
    return ensemble.train(
        None,
        loss_fn,
        masked_sgd,
        data,
        params=params,
        data_keys=data_keys,
        steps=steps,
        batch_size=batch,
        hyperparams={
            "learning_rate": jnp.full((m,), lr, jnp.float32),
            "num_steps": jnp.asarray(budgets, jnp.int32),
        },
        # Independent draws: "epoch" recomputes a full permutation every step, which
        # dominates the cost of these small networks.
        sampling="replacement",
        eval_every=steps,
        eval_splits=("train", "test") if evaluate else (),
        progress=progress,
    )


def _take(tree, idx):
    # On the host: eager device indexing would compile one gather per leaf shape.
    idx = np.asarray(idx)
    return jax.tree.map(lambda x: np.asarray(x)[idx], tree)


def paired_stats(a, b) -> Measurement:
    """Mean ± standard error of the paired differences ``a − b`` (one value per pair)."""
    return measure(np.asarray(a, np.float64) - np.asarray(b, np.float64))


def verdict(
    linear: Sequence[float],
    curve: Sequence[float],
    spawn_steps: Sequence[float],
    instability: Sequence[float],
    *,
    level: float = 0.95,
    max_curve_fraction: float = 0.25,
    tau_interval: tuple[float, float] | None = None,
) -> tuple[Verdict, dict[str, bool | None]]:
    """The claim's verdict from per-pair barriers and the (spawn step, instability) points.

    Args:
      linear: loss barrier on the straight line, one per independent pair.
      curve: loss barrier along the trained curve, same pairs.
      spawn_steps, instability: one point per spawned pair (``k``, error barrier).
      level: coverage of the Student-t intervals over pairs
        (:meth:`~lljax.experiments.Measurement.margin`) that must exclude zero.
      max_curve_fraction: the curve barrier must be at most this fraction of the linear
        one to count as "removed" rather than merely lowered.
      tau_interval: bootstrap confidence interval of Kendall's τ: entirely below 0
        supports the claim, entirely at or above 0 contradicts it, straddling 0 is
        undecided (``None``: decided from the sign of τ alone).

    Returns:
      ``(Verdict, parts)`` where ``parts`` holds the three sub-decisions
      ``barrier``, ``curve`` and ``instability`` (``True``/``False``/``None``).
    """
    lin, cur = measure(linear), measure(curve)
    diff = paired_stats(linear, curve)
    parts: dict[str, bool | None] = {}
    if lin.n < 2:
        parts["barrier"] = None
        parts["curve"] = None
    else:
        parts["barrier"] = bool(lin.value - lin.margin(level) > 0)
        parts["curve"] = bool(
            diff.value - diff.margin(level) > 0 and cur.value <= max_curve_fraction * lin.value
        )
    k, inst = np.asarray(spawn_steps, float), np.asarray(instability, float)
    tau = math.nan
    if k.size >= 3 and np.unique(k).size >= 2:
        tau = ensemble.rank_correlation(k, inst, method="kendall").value
    if not math.isfinite(tau):
        parts["instability"] = None
    elif tau_interval is None:
        parts["instability"] = bool(tau < 0)
    elif tau_interval[1] < 0:
        parts["instability"] = True
    elif tau_interval[0] >= 0:
        parts["instability"] = False  # the interval excludes any decrease
    else:
        parts["instability"] = None  # the interval straddles 0
    if tau_interval is None:
        ci = ""
    elif not np.all(np.isfinite(tau_interval)):
        ci = f" (no interval: fewer than {MIN_CLUSTERS} parents to resample)"
    else:
        ci = f" (CI [{tau_interval[0]:.2f}, {tau_interval[1]:.2f}])"
    evidence = (
        f"linear loss barrier {lin} over {lin.n} independent pairs (rule: its "
        f"{100 * level:g}% t interval above 0); Bezier-curve barrier {cur}; paired reduction "
        f"{diff} (rule: its interval above 0 and curve ≤ "
        f"{max_curve_fraction:g} × linear); Kendall τ(spawn step, instability) = "
        f"{tau:.2f}{ci} (rule: interval below 0; at or above 0 contradicts). Parts: "
        + ", ".join(f"{n} {_label(v)}" for n, v in parts.items())
    )
    return Verdict(CLAIM, all_of(parts.values()), evidence), parts


def symlog_threshold(spawn_steps: Sequence[float]) -> float:
    """Linear range of the instability figure's symlog axis: the smallest positive spawn
    step, at least 1 (1 when no step is positive, e.g. ``spawn_steps=(0,)``)."""
    return max(1.0, float(min((k for k in spawn_steps if k > 0), default=1)))


def _label(v: bool | None) -> str:
    return {True: "yes", False: "no", None: "undecided"}[v]


def _path_band(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    n = values.shape[0]
    err = values.std(0, ddof=1) / math.sqrt(n) if n > 1 else np.zeros(values.shape[1])
    return values.mean(0), err


@register(
    "connectivity",
    description="linear barriers between seeds, Bezier curves removing them, and "
    "instability vs spawn step (Garipov et al.; Frankle et al.)",
    presets={
        "quick": dict(
            hidden=(64, 64),
            num_pairs=4,
            steps=2000,
            batch_size=32,
            learning_rate=0.5,
            spawn_steps=(0, 10, 30, 100, 300),
            num_spawn_pairs=8,
            curve_steps=1000,
            curve_learning_rate=1e-2,
            num_bends=1,
            num_points=21,
            level=0.95,
            max_curve_fraction=0.25,
            num_bootstrap=1000,
            path_chunk_size=None,
        ),
        "full": dict(
            hidden=(256, 256),
            num_pairs=8,
            steps=8000,
            batch_size=32,
            learning_rate=0.5,
            spawn_steps=(0, 10, 25, 50, 100, 250, 500, 1000, 2000, 4000),
            num_spawn_pairs=8,
            curve_steps=5000,
            curve_learning_rate=1e-2,
            num_bends=1,
            num_points=41,
            level=0.95,
            max_curve_fraction=0.25,
            num_bootstrap=2000,
            path_chunk_size=4,
        ),
    },
    preset_notes={
        "quick": "MLP 40-64-64-10, 4 seed pairs, 5 spawn steps x 8 pairs, 2000 SGD steps; "
        "about 35 s of CPU time (user+sys) on a 2-core CPU",
        "full": "MLP 40-256-256-10, 8 seed pairs, 10 spawn steps x 8 pairs, 8000 SGD steps; "
        "estimated 5-10 min on one GPU (about an hour on a 2-core CPU)",
    },
    claim=CLAIM,
)
def run(
    preset: str,
    seed: int,
    out_dir,
    *,
    hidden: Sequence[int] = (64, 64),
    num_pairs: int = 4,
    steps: int = 2000,
    batch_size: int = 32,
    learning_rate: float = 0.5,
    spawn_steps: Sequence[int] = (0, 10, 30, 100, 300),
    num_spawn_pairs: int = 8,
    curve_steps: int = 1000,
    curve_learning_rate: float = 1e-2,
    num_bends: int = 1,
    num_points: int = 21,
    level: float = 0.95,
    max_curve_fraction: float = 0.25,
    num_bootstrap: int = 1000,
    path_chunk_size: int | None = None,
    progress: bool = True,
) -> Result:
    """Measures linear and curve barriers between seeds and the instability vs spawn step.

    Args:
      preset: preset name (recorded only).
      seed: root seed; every key is ``fold_in(key(seed), ...)``.
      out_dir: output folder (unused: the framework writes the results).
      hidden: hidden widths of the ReLU MLP on MNIST-1D (40 inputs, 10 classes).
      num_pairs: disjoint pairs of independently trained networks (``2 * num_pairs`` runs).
      steps: SGD steps of every training run (spawned children train ``steps − k``).
      batch_size, learning_rate: plain SGD settings shared by every run.
      spawn_steps: steps ``k`` at which the parents are copied (each ``< steps``).
      num_spawn_pairs: parents per spawn step (each gives one pair of children).
      curve_steps, curve_learning_rate, num_bends: Bezier-curve training (Adam).
      num_points: points on each path.
      level, max_curve_fraction: verdict thresholds (see :func:`verdict`).
      num_bootstrap: bootstrap resamples for Kendall's τ.
      path_chunk_size: path points evaluated at once (``None``: all; bounds memory on
        large populations, where every pair's path is evaluated together).
      progress: print progress lines and training bars.

    Returns:
      A :class:`~lljax.experiments.Result`.
    """
    del preset, out_dir
    hidden = tuple(int(h) for h in hidden)
    spawn = tuple(sorted(int(k) for k in spawn_steps))
    if num_pairs < 1 or num_spawn_pairs < 1:
        raise ValueError(
            f"num_pairs/num_spawn_pairs: expected >= 1, got {num_pairs}/{num_spawn_pairs}"
        )
    if not spawn or spawn[0] < 0 or spawn[-1] >= steps:
        raise ValueError(f"spawn_steps: expected values in [0, steps={steps}), got {spawn_steps}")

    def say(msg):
        if progress:
            print(msg, file=sys.stderr, flush=True)

    data = data_lib.mnist1d()
    model = models.mlp([40, *hidden, 10])
    loss_fn = losses.cross_entropy(model)
    acc_fn = losses.accuracy(model)
    root = jr.key(seed)
    k_ind, k_spawn, k_curve, k_boot = (jr.fold_in(root, i) for i in range(4))
    num_k, sp = len(spawn), num_spawn_pairs

    # Independent networks have their own init and data order each; parent p of the
    # spawning runs shares one init and one data order at every spawn step, and member
    # (k, p) stops after k steps, i.e. at step k of parent p's trajectory.
    ind_init = jr.split(jr.fold_in(k_ind, 0), 2 * num_pairs)
    ind_data = jr.split(jr.fold_in(k_ind, 1), 2 * num_pairs)
    par_init = jr.split(jr.fold_in(k_spawn, 0), sp)
    par_data = jr.split(jr.fold_in(k_spawn, 1), sp)
    init = jax.jit(jax.vmap(model.init))(jnp.concatenate([ind_init, par_init]))
    ind_params = _take(init, np.arange(2 * num_pairs))
    par_params = _take(init, 2 * num_pairs + np.tile(np.arange(sp), num_k))
    budgets = np.repeat(np.asarray(spawn), sp)
    if spawn[-1] > 0:
        say(f"connectivity: parents to spawn steps {spawn} ({num_k * sp} members)")
        parents = _train_masked(
            loss_fn,
            data,
            par_params,
            par_data[np.tile(np.arange(sp), num_k)],
            budgets,
            steps=spawn[-1],
            lr=learning_rate,
            batch=batch_size,
            progress=progress,
            evaluate=False,
        ).params
    else:
        parents = par_params

    # Children (two per parent, fresh data-order keys) and the independent networks,
    # trained together in one call.
    num_children = 2 * num_k * sp
    child_data = jr.split(jr.fold_in(k_spawn, 2), num_children)
    start = jax.tree.map(
        lambda c, i: np.concatenate([np.repeat(np.asarray(c), 2, axis=0), np.asarray(i)]),
        parents,
        ind_params,
    )
    all_budgets = np.concatenate([np.repeat(steps - budgets, 2), np.full(2 * num_pairs, steps)])
    say(f"connectivity: {num_children} children + {2 * num_pairs} independent runs, {steps} steps")
    pop = _train_masked(
        loss_fn,
        data,
        start,
        jnp.concatenate([child_data, ind_data]),
        all_budgets,
        steps=steps,
        lr=learning_rate,
        batch=batch_size,
        progress=progress,
    )
    final_test_acc = np.asarray(pop.history["test_accuracy"])[:, -1]
    final_train_loss = np.asarray(pop.history["train_loss"])[:, -1]

    # Barriers. Children 2j and 2j + 1 are the two copies of parent j.
    say("connectivity: interpolating")
    child_a = _take(pop.params, np.arange(0, num_children, 2))
    child_b = _take(pop.params, np.arange(1, num_children, 2))
    ind_a = _take(pop.params, num_children + np.arange(0, 2 * num_pairs, 2))
    ind_b = _take(pop.params, num_children + np.arange(1, 2 * num_pairs, 2))

    def lmc(a, b, batch):
        return landscape.instability(
            loss_fn,
            a,
            batch,
            params_b=b,
            num_points=num_points,
            accuracy_fn=acc_fn,
            chunk_size=path_chunk_size,
        )

    lmc_pairs = jax.jit(jax.vmap(lmc, in_axes=(0, 0, None)))
    inst = lmc_pairs(child_a, child_b, data.test)
    inst_train = lmc_pairs(child_a, child_b, data.train)
    instability = np.asarray(inst.value).reshape(num_k, sp)
    inst_loss_barrier = np.asarray(inst_train.interpolation.barrier).reshape(num_k, sp)

    say(f"connectivity: training {num_pairs} Bezier curves ({curve_steps} steps)")

    def fit_curve(a, b, key):
        return landscape.connect(
            loss_fn,
            a,
            b,
            data,
            key=key,
            kind="bezier",
            num_bends=num_bends,
            steps=curve_steps,
            learning_rate=curve_learning_rate,
            batch_size=batch_size,
            num_points=num_points,
            accuracy_fn=acc_fn,
            chunk_size=path_chunk_size,
        )

    curves = jax.jit(jax.vmap(fit_curve))(ind_a, ind_b, jr.split(k_curve, num_pairs))
    lin_barrier = np.asarray(curves.linear.barrier)
    cur_barrier = np.asarray(curves.path.barrier)
    lin_err = np.asarray(curves.linear.error_barrier)
    cur_err = np.asarray(curves.path.error_barrier)
    t = np.asarray(curves.path.t[0])
    lin_losses, cur_losses = np.asarray(curves.linear.losses), np.asarray(curves.path.losses)

    # Kendall's τ between spawn step and instability over every (k, pair) point. The points
    # of one parent share its init and data order, so the bootstrap resamples parents; with
    # too few of them there is no interval (unbounded, i.e. undecided).
    k_points = np.repeat(np.asarray(spawn, float), sp)
    tau, tau_interval = None, (-math.inf, math.inf)
    if num_k >= 2:
        boot = {}
        if sp >= MIN_CLUSTERS:
            groups = np.tile(np.arange(sp), num_k)
            boot = dict(key=k_boot, num_bootstrap=num_bootstrap, groups=groups)
        tau = ensemble.rank_correlation(k_points, instability.ravel(), method="kendall", **boot)
        if boot:
            tau_interval = (tau.low, tau.high)
    result_verdict, parts = verdict(
        lin_barrier,
        cur_barrier,
        k_points,
        instability.ravel(),
        level=level,
        max_curve_fraction=max_curve_fraction,
        tau_interval=tau_interval,
    )

    # Measurements and table.
    m_lin, m_cur = measure(lin_barrier), measure(cur_barrier)
    m_red = paired_stats(lin_barrier, cur_barrier)
    m_lin_err, m_cur_err = measure(100 * lin_err, unit="%"), measure(100 * cur_err, unit="%")
    ind_acc = measure(100 * final_test_acc[num_children:], unit="%")
    child_acc = measure(100 * final_test_acc[:num_children], unit="%")
    inst_k = {str(k): measure(100 * instability[i], unit="%") for i, k in enumerate(spawn)}
    inst_loss_k = {str(k): measure(inst_loss_barrier[i]) for i, k in enumerate(spawn)}
    summary = [
        {
            "quantity": "linear path, independent seeds",
            "loss barrier (train)": m_lin,
            "error barrier (train)": m_lin_err,
            "pairs": num_pairs,
        },
        {
            "quantity": f"Bezier curve ({num_bends} bend), same pairs",
            "loss barrier (train)": m_cur,
            "error barrier (train)": m_cur_err,
            "pairs": num_pairs,
        },
        {
            "quantity": "reduction linear − curve (paired)",
            "loss barrier (train)": m_red,
            "error barrier (train)": paired_stats(100 * lin_err, 100 * cur_err)._replace(unit="%"),
            "pairs": num_pairs,
        },
    ]
    for k in spawn:
        summary.append(
            {
                "quantity": f"spawned at k={k}: instability (test error barrier)",
                "loss barrier (train)": inst_loss_k[str(k)],
                "error barrier (train)": None,
                "pairs": sp,
                "instability (test)": inst_k[str(k)],
            }
        )
    for row in summary:
        row.setdefault("instability (test)", None)

    measurements: dict[str, Any] = {
        "linear_loss_barrier": m_lin,
        "curve_loss_barrier": m_cur,
        "barrier_reduction": m_red,
        "linear_error_barrier": m_lin_err,
        "curve_error_barrier": m_cur_err,
        "instability": inst_k,
        "spawn_loss_barrier": inst_loss_k,
        "kendall_tau_spawn_instability": None if tau is None else tau._asdict(),
        "verdict_parts": parts,
        "test_accuracy_independent": ind_acc,
        "test_accuracy_children": child_acc,
        "train_loss_independent": measure(final_train_loss[num_children:]),
    }

    def path_figure():
        from lljax import plot

        lm, le = _path_band(lin_losses)
        cm, ce = _path_band(cur_losses)
        return plot.curves(
            {"straight line": (t, lm, le), f"Bezier curve ({num_bends} bend)": (t, cm, ce)},
            xlabel="t (position on the path)",
            ylabel="training loss",
            title=f"Independent seeds: {num_pairs} pairs, mean ± s.e.",
        )

    def instability_figure():
        from lljax import plot

        plt = plot.pyplot()
        fig, ax = plt.subplots(figsize=(6.4, 4.0), layout="constrained")
        ks = np.asarray(spawn, float)
        mean = 100 * instability.mean(1)
        err = 100 * instability.std(1, ddof=1) / math.sqrt(sp) if sp > 1 else np.zeros_like(mean)
        ax.errorbar(ks, mean, yerr=err, marker="o", capsize=3, label="mean ± s.e.")
        ax.plot(k_points, 100 * instability.ravel(), ".", color="0.5", alpha=0.6, label="pairs")
        ax.set_xscale("symlog", linthresh=symlog_threshold(spawn))
        title = "Instability vs spawn step"
        if tau is not None:
            title += f" (Kendall τ = {tau.value:.2f})"
        ax.set(xlabel="spawn step k", ylabel="test error barrier (%)", title=title)
        ax.grid(alpha=0.3)
        ax.legend(frameon=False, fontsize="small")
        return fig

    def spawn_paths_figure():
        from lljax import plot

        err = 100 * (1 - np.asarray(inst.interpolation.accuracies)).reshape(num_k, sp, -1)
        series = {f"k={k}": (t, *_path_band(err[i])) for i, k in enumerate(spawn)}
        return plot.curves(
            series,
            xlabel="t (straight line between the two copies)",
            ylabel="test error (%)",
            title="Spawned copies: error along the straight line",
        )

    return Result(
        summary=summary,
        measurements=measurements,
        verdict=result_verdict,
        figures={
            "barrier_paths": path_figure,
            "instability_vs_spawn": instability_figure,
            "spawn_paths": spawn_paths_figure,
        },
        settings={
            "architecture": model.name,
            "dataset": "mnist1d (seed 42, 4000/1000)",
            "optimizer": f"sgd(lr={learning_rate}), batch {batch_size}, sampling with replacement",
            "curve": f"bezier, {num_bends} bend(s), adam(lr={curve_learning_rate}), "
            f"{curve_steps} steps",
            "barrier": "max_t L(t) − chord, training loss (seeds, curves); Frankle error "
            "barrier max_t E(t) − (E(0)+E(1))/2 on the test set (instability)",
        },
        seeds=[seed],
        data={
            "t": t,
            "linear_losses": lin_losses,
            "curve_losses": cur_losses,
            "linear_accuracies": np.asarray(curves.linear.accuracies),
            "curve_accuracies": np.asarray(curves.path.accuracies),
            "linear_barrier": lin_barrier,
            "curve_barrier": cur_barrier,
            "spawn_steps": np.asarray(spawn),
            "instability": instability,
            "spawn_loss_barrier": inst_loss_barrier,
            "spawn_test_accuracies": np.asarray(inst.interpolation.accuracies).reshape(
                num_k, sp, -1
            ),
            "curve_train_losses": np.asarray(curves.train_losses)[:, :: max(1, curve_steps // 200)],
            "final_test_accuracy": final_test_acc,
        },
        notes=[
            "Small MLP on MNIST-1D instead of the papers' VGG/ResNets on CIFAR; plain SGD "
            "with a constant learning rate (no momentum, warm-up or decay), so copying the "
            "params at step k copies the whole training state.",
            "Minibatches are drawn with replacement rather than in shuffled epochs.",
            "Seed-pair and curve barriers use the training loss above the chord (Garipov et "
            "al. report training loss/error along curves); the instability is Frankle et "
            "al.'s test-error barrier max_t E(t) − (E(0) + E(1))/2.",
            "Frankle et al.'s error barrier is at least |E(0) − E(1)|/2, so a stable pair "
            "shows a small positive floor (finite test set) rather than exactly zero.",
            "Pairs are disjoint so that pair barriers are independent samples; standard "
            "errors are over pairs.",
            "Curves: one quadratic Bezier bend trained with Adam on minibatches at t ~ U(0, 1) "
            "(Garipov et al. use SGD with a schedule and more bends/epochs).",
        ],
    )
