"""Quickstart: reproduce the MNIST-1D baseline table (Greydanus & Kobak 2020).

Trains logistic regression, an MLP and a CNN (and, on request, the bidirectional GRU) on
MNIST-1D with the settings of the paper's benchmark code: Adam with learning rate 1e-2, no
weight decay, batch size 100, 6000 steps, evaluation every 250 steps; the MLP has 100 hidden
units with a residual second layer, the CNN three 1-D conv layers of 25 channels (kernels
5, 3, 3, stride 2) and a linear classifier, the GRU 6 hidden units in each direction. Linear
and conv kernels start uniform in ±1/√fan_in (PyTorch's default, which the paper used) and
their biases at 0; the GRU's input kernels, recurrent kernels and biases all start uniform in
±1/√hidden, PyTorch's ``nn.GRU`` default (flax's own GRU defaults, LeCun-normal input and
orthogonal recurrent kernels, start with 18× and 3× that variance at 6 hidden units).

Each model is trained from ``num_seeds`` seeds; the table reports the final test accuracy
as mean ± standard error over seeds beside the published number, and the verdict checks the
published ordering and agreement within ``tolerance`` percentage points.

Parameter counts match the paper's code (logistic 410, MLP 15210, CNN 5210); flax's GRU cell
omits two redundant bias vectors of PyTorch's, so the GRU has 5110 instead of 5134.

Deviations from the paper's code: minibatches are reshuffled every epoch (the paper cycles
through the training set in a fixed order); PyTorch's uniform bias initialisation of the
linear and conv layers (the GRU's classifier included) is replaced by zeros; and since the
GRU cell has one bias where PyTorch sums two (``b_ir + b_hr``, ``b_iz + b_hz``), its reset
and update gates start with half PyTorch's bias variance. The paper reports one run per
model; here ``num_seeds`` runs give a mean and standard error, and the final (not the best)
test accuracy is the measurement.

References:
  Greydanus & Kobak, "Scaling down deep learning with MNIST-1D", arXiv:2011.14439.
"""

from __future__ import annotations

import math
import time
from typing import Any

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np

from lljax import data as data_lib
from lljax import init as init_lib
from lljax import losses, models
from lljax.experiments import Result, Verdict, measure, register

#: Published MNIST-1D test accuracies (%) of the paper's Table 1 / the mnist1d README.
PUBLISHED = {"logistic": 32.0, "mlp": 68.0, "cnn": 94.0, "gru": 91.0}

#: The paper's training settings (mnist1d ``get_model_args`` and the benchmark notebook).
PAPER = {
    "learning_rate": 1e-2,
    "weight_decay": 0.0,
    "batch_size": 100,
    "steps": 6000,
    "eval_every": 250,
}

MODELS = ("logistic", "mlp", "cnn", "gru")

CLAIM = (
    "MNIST-1D separates model classes as published: test accuracy orders logistic < MLP < CNN "
    "(GRU near the CNN) and each baseline lands near its published value (32%, 68%, 94%, 91%)."
)


def torch_uniform() -> init_lib.InitScheme:
    """Kernels uniform in ±1/√fan_in (PyTorch's default ``Linear``/``Conv1d`` init), zero biases.

    Var(W) = 1/(3 fan_in), i.e. σ_w² = 1/3.
    """

    def kernel(key, shape, dtype=jnp.float32):
        fan_in = math.prod(shape[:-1]) if len(shape) > 1 else shape[0]
        bound = 1.0 / math.sqrt(fan_in)
        return jr.uniform(key, shape, dtype, -bound, bound)

    def zeros(key, shape, dtype=jnp.float32):
        del key
        return jnp.zeros(shape, dtype)

    return init_lib.InitScheme("torch_uniform", kernel, zeros, sigma_w2=1.0 / 3.0)


def torch_rnn_uniform(hidden: int):
    """PyTorch's ``nn.GRU`` initialiser: every weight and bias uniform in ±1/√hidden.

    Var = 1/(3 hidden) whatever the parameter's shape (PyTorch scales the input kernels by
    the hidden size too, not by their fan-in).
    """
    bound = 1.0 / math.sqrt(hidden)

    def init(key, shape, dtype=jnp.float32):
        return jr.uniform(key, shape, dtype, -bound, bound)

    return init


def torch_gru_cell(hidden: int, param_dtype=jnp.float32):
    """A flax ``GRUCell`` initialised like ``torch.nn.GRU``: input kernels, recurrent
    kernels and biases all from :func:`torch_rnn_uniform` (flax's defaults are LeCun-normal
    input and orthogonal recurrent kernels and zero biases)."""
    import flax.linen as nn

    uniform = torch_rnn_uniform(hidden)
    return nn.GRUCell(
        hidden,
        kernel_init=uniform,
        recurrent_kernel_init=uniform,
        bias_init=uniform,
        param_dtype=param_dtype,
    )


def _paper_mlp(hidden: int, scheme: init_lib.InitScheme) -> models.Model:
    """The paper's MLP: ``h = relu(W1 x); h = h + relu(W2 h); out = W3 h``."""
    import flax.linen as nn

    class PaperMLP(nn.Module):
        @nn.compact
        def __call__(self, x):
            dense = lambda n, name: nn.Dense(
                n,
                kernel_init=scheme.kernel,
                bias_init=scheme.bias,
                param_dtype=x.dtype,
                name=name,
            )
            h = jax.nn.relu(dense(hidden, "Dense_0")(x))
            h = h + jax.nn.relu(dense(hidden, "Dense_1")(h))
            return dense(10, "Dense_2")(h)

    return models.wrap(PaperMLP(), (40,), name=f"mlp[40, {hidden}, {hidden}(residual), 10]")


def _paper_gru(hidden: int, scheme: init_lib.InitScheme) -> models.Model:
    """The paper's bidirectional GRU over the 40 time steps, all outputs flattened -> linear.

    The cells are :func:`torch_gru_cell` (PyTorch's ``nn.GRU`` init); the classifier uses
    ``scheme``.
    """
    import flax.linen as nn

    class PaperGRU(nn.Module):
        @nn.compact
        def __call__(self, x):
            seq = x[..., None]  # (batch, time, 1)
            cell = lambda: torch_gru_cell(hidden, x.dtype)
            fwd = nn.RNN(cell(), name="forward")(seq)
            bwd = nn.RNN(cell(), reverse=True, keep_order=True, name="backward")(seq)
            h = jnp.concatenate([fwd, bwd], axis=-1).reshape((x.shape[0], -1))
            return nn.Dense(
                10,
                kernel_init=scheme.kernel,
                bias_init=scheme.bias,
                param_dtype=x.dtype,
                name="Dense_0",
            )(h)

    return models.wrap(PaperGRU(), (40,), name=f"bigru[{hidden}]")


def build_model(
    name: str, *, mlp_hidden: int = 100, cnn_channels: int = 25, gru_hidden: int = 6
) -> models.Model:
    """One of the paper's baselines: ``"logistic"``, ``"mlp"``, ``"cnn"`` or ``"gru"``.

    Raises:
      ValueError: for an unknown name.
    """
    scheme = torch_uniform()
    if name == "logistic":
        return models.mlp([40, 10], init=scheme)
    if name == "mlp":
        return _paper_mlp(mlp_hidden, scheme)
    if name == "cnn":
        return models.cnn(
            (40,),
            10,
            channels=(cnn_channels,) * 3,
            kernel_size=(5, 3, 3),
            strides=2,
            padding=1,
            init=scheme,
        )
    if name == "gru":
        return _paper_gru(gru_hidden, scheme)
    raise ValueError(f"name: unknown baseline {name!r}; expected one of {MODELS}")


def _num_params(params) -> int:
    return int(sum(np.size(p) for p in jax.tree.leaves(params)))


def paper_optimizer(learning_rate: float = 1e-2, weight_decay: float = 0.0):
    """``torch.optim.Adam(lr, weight_decay)`` as optax: L2 added to the gradient, then Adam.

    (PyTorch's Adam ``weight_decay`` is coupled L2, not AdamW's decoupled decay.)
    """
    import optax

    opt = optax.adam(learning_rate)
    if weight_decay:
        opt = optax.chain(optax.add_decayed_weights(weight_decay), opt)
    return opt


def train_baseline(
    model: models.Model | str,
    data: data_lib.Dataset,
    *,
    seed: int,
    steps: int,
    batch_size: int = 100,
    eval_every: int = 250,
    sampling: str = "epoch",
    optimizer=None,
    loss_fn=None,
    progress: bool = True,
) -> dict[str, Any]:
    """Trains one baseline from one seed; returns its history (accuracies in %) and time.

    ``optimizer`` defaults to :func:`paper_optimizer`. Pass the same ``model``, ``loss_fn``
    and ``optimizer`` objects for every seed: the compiled training chunk is cached on them
    (they are static arguments), so later seeds skip compilation.
    """
    from lljax import train

    model = build_model(model) if isinstance(model, str) else model
    loss_fn = loss_fn or losses.cross_entropy(model)
    optimizer = optimizer or paper_optimizer()
    k_init, k_data = jr.split(jr.key(seed))
    params = model.init(k_init)
    t0 = time.perf_counter()
    r = train.fit(
        loss_fn,
        params,
        optimizer,
        data,
        steps=steps,
        batch_size=batch_size,
        key=k_data,
        eval_every=eval_every,
        sampling=sampling,
        progress=progress,
    )
    h = r.history
    return {
        "model": model.name,
        "num_params": _num_params(params),
        "eval_step": np.asarray(h["eval_step"]),
        "test_accuracy": 100.0 * np.asarray(h["test_accuracy"]),
        "train_accuracy": 100.0 * np.asarray(h["train_accuracy"]),
        "test_loss": np.asarray(h["test_loss"]),
        "seconds": time.perf_counter() - t0,
    }


def train_population(
    model: models.Model | str,
    data: data_lib.Dataset,
    *,
    seeds: list[int],
    steps: int,
    batch_size: int = 100,
    eval_every: int = 250,
    sampling: str = "epoch",
    optimizer=None,
    progress: bool = True,
) -> list[dict[str, Any]]:
    """:func:`train_baseline` for several seeds as one vmapped population.

    Member ``i`` uses exactly the init and data-order keys that :func:`train_baseline`
    derives from ``seeds[i]``, so both paths train the same networks (up to float
    rounding); this one compiles once and runs all seeds in one program.
    """
    from lljax import ensemble

    model = build_model(model) if isinstance(model, str) else model
    optimizer = optimizer or paper_optimizer()
    pairs = [jr.split(jr.key(s)) for s in seeds]
    init_keys = jnp.stack([p[0] for p in pairs])
    data_keys = jnp.stack([p[1] for p in pairs])
    t0 = time.perf_counter()
    pop = ensemble.train(
        model,
        losses.cross_entropy(model),
        optimizer,
        data,
        init_keys=init_keys,
        data_keys=data_keys,
        steps=steps,
        batch_size=batch_size,
        eval_every=eval_every,
        sampling=sampling,
        progress=progress,
    )
    seconds = (time.perf_counter() - t0) / len(seeds)
    h = pop.history
    num_params = _num_params(model.init(init_keys[0]))
    return [
        {
            "model": model.name,
            "num_params": num_params,
            "eval_step": np.asarray(h["eval_step"]),
            "test_accuracy": 100.0 * np.asarray(h["test_accuracy"][i]),
            "train_accuracy": 100.0 * np.asarray(h["train_accuracy"][i]),
            "test_loss": np.asarray(h["test_loss"][i]),
            "seconds": seconds,
        }
        for i in range(len(seeds))
    ]


def _verdict(acc: dict[str, Any], tolerance: float, steps: int) -> Verdict:
    order = [m for m in ("logistic", "mlp", "cnn") if m in acc]
    ordered = all(acc[a].value < acc[b].value for a, b in zip(order, order[1:], strict=False))
    close = {m: abs(acc[m].value - PUBLISHED[m]) <= tolerance for m in acc}
    gaps = ", ".join(f"{m} {acc[m].value:.1f} vs {PUBLISHED[m]:.0f}" for m in acc)
    evidence = (
        f"final test accuracy (%), measured vs published: {gaps}; order "
        f"{'holds' if ordered else 'violated'}; tolerance ±{tolerance:g} points"
    )
    if len(order) < 2:
        return Verdict(CLAIM, None, evidence + "; fewer than two of logistic/MLP/CNN were run")
    supported = ordered and all(close.values())
    if not supported and steps < PAPER["steps"]:
        return Verdict(
            CLAIM,
            None,
            evidence + f"; only {steps} of the paper's "
            f"{PAPER['steps']} steps (run --preset full to decide)",
        )
    return Verdict(CLAIM, supported, evidence)


@register(
    "quickstart",
    description="MNIST-1D baselines (logistic, MLP, CNN; GRU optional) vs the published table",
    presets={
        "quick": dict(
            baselines=("logistic", "mlp", "cnn"),
            num_seeds=1,
            steps=2000,
            batch_size=100,
            learning_rate=1e-2,
            weight_decay=0.0,
            eval_every=250,
            sampling="epoch",
            tolerance=5.0,
            population=True,
        ),
        "full": dict(
            baselines=("logistic", "mlp", "cnn", "gru"),
            num_seeds=5,
            steps=6000,
            batch_size=100,
            learning_rate=1e-2,
            weight_decay=0.0,
            eval_every=250,
            sampling="epoch",
            tolerance=5.0,
            population=True,
        ),
    },
    preset_notes={
        "quick": "3 baselines x 1 seed x 2000 steps; about 25 s of CPU time (user+sys) on a "
        "2-core CPU, under a minute wall even on a busy machine",
        "full": "the paper's 6000 steps, 4 baselines x 5 seeds; several minutes on a CPU",
    },
    claim=CLAIM,
)
def run(
    preset: str,
    seed: int,
    out_dir,
    *,
    baselines: tuple[str, ...] = ("logistic", "mlp", "cnn"),
    num_seeds: int = 1,
    steps: int = 6000,
    batch_size: int = 100,
    learning_rate: float = 1e-2,
    weight_decay: float = 0.0,
    eval_every: int = 250,
    sampling: str = "epoch",
    tolerance: float = 5.0,
    population: bool = True,
    progress: bool = True,
) -> Result:
    """Trains the MNIST-1D baselines and compares their test accuracy with the paper's.

    Args:
      preset: preset name (recorded only).
      seed: base seed; seed ``seed + i`` trains repetition ``i`` of every model.
      out_dir: output folder (unused: the framework writes the results).
      baselines: models to train, from ``("logistic", "mlp", "cnn", "gru")``.
      num_seeds: independent repetitions per model (uncertainties need ≥ 2).
      steps, batch_size, learning_rate, weight_decay, eval_every: training settings
        (defaults are the paper's).
      sampling: minibatch order (see :mod:`lljax.train`); ``"epoch"`` visits every
        example once per epoch like the paper's code.
      tolerance: agreement with a published accuracy, in percentage points.
      population: train the seeds of a model as one vmapped population
        (:func:`lljax.ensemble.train`); otherwise one :func:`lljax.train.fit` per seed.
      progress: show a progress bar per training run.

    Returns:
      A :class:`~lljax.experiments.Result`.
    """
    del preset, out_dir
    unknown = [m for m in baselines if m not in MODELS]
    if unknown or not baselines:
        raise ValueError(f"baselines: expected a non-empty subset of {MODELS}, got {baselines!r}")
    if num_seeds < 1:
        raise ValueError(f"num_seeds: expected >= 1, got {num_seeds}")
    data = data_lib.mnist1d()
    seeds = [seed + i for i in range(num_seeds)]
    runs: dict[str, list[dict]] = {}
    for name in baselines:
        model = build_model(name)
        loss_fn = losses.cross_entropy(model)
        optimizer = paper_optimizer(learning_rate, weight_decay)
        common = dict(
            steps=steps,
            batch_size=batch_size,
            optimizer=optimizer,
            eval_every=eval_every,
            sampling=sampling,
            progress=progress,
        )
        if population and len(seeds) > 1:
            if progress:
                print(
                    f"training {name}: {len(seeds)} seeds as one population, {steps} steps",
                    flush=True,
                )
            runs[name] = train_population(model, data, seeds=seeds, **common)
            continue
        for s in seeds:
            if progress:
                print(f"training {name} (seed {s}, {steps} steps)", flush=True)
            runs.setdefault(name, []).append(
                train_baseline(model, data, loss_fn=loss_fn, seed=s, **common)
            )

    acc, best, train_acc, summary, curves = {}, {}, {}, [], {}
    for name, rs in runs.items():
        acc[name] = measure([r["test_accuracy"][-1] for r in rs], unit="%")
        best[name] = measure([r["test_accuracy"].max() for r in rs], unit="%")
        train_acc[name] = measure([r["train_accuracy"][-1] for r in rs], unit="%")
        summary.append(
            {
                "model": name,
                "params": rs[0]["num_params"],
                "published": f"{PUBLISHED[name]:.0f}%",
                "test acc": acc[name],
                "best during training": best[name],
                "train acc": train_acc[name],
                "seeds": len(rs),
                "time/seed s": float(np.mean([r["seconds"] for r in rs])),
            }
        )
        curve = np.stack([r["test_accuracy"] for r in rs])
        curves[name] = {
            "eval_step": rs[0]["eval_step"],
            "test_accuracy_mean": curve.mean(0),
            "test_accuracy_stderr": (
                curve.std(0, ddof=1) / math.sqrt(len(rs))
                if len(rs) > 1
                else np.zeros(curve.shape[1])
            ),
            "test_accuracy_per_seed": curve,
            "train_accuracy_mean": np.mean([r["train_accuracy"] for r in rs], axis=0),
            "test_loss_mean": np.mean([r["test_loss"] for r in rs], axis=0),
        }

    def figure():
        from lljax import plot

        series = {
            n: (c["eval_step"], c["test_accuracy_mean"], c["test_accuracy_stderr"])
            for n, c in curves.items()
        }
        seeds_text = "1 seed" if num_seeds == 1 else f"{num_seeds} seeds, mean ± s.e."
        return plot.curves(
            series,
            ylabel="test accuracy (%)",
            title=f"MNIST-1D baselines ({seeds_text}); dashed: published",
            references={n: PUBLISHED[n] for n in curves},
        )

    def bar_figure():
        from lljax import plot

        groups = {
            n: {"published": (PUBLISHED[n], None), "lljax": (acc[n].value, acc[n].stderr)}
            for n in acc
        }
        return plot.bars(groups, ylabel="test accuracy (%)", title="MNIST-1D: lljax vs paper")

    return Result(
        summary=summary,
        measurements={
            "test_accuracy": acc,
            "best_test_accuracy": best,
            "train_accuracy": train_acc,
            "published_test_accuracy": {n: PUBLISHED[n] for n in runs},
        },
        verdict=_verdict(acc, tolerance, steps),
        figures={"test_accuracy": figure, "accuracy_vs_published": bar_figure},
        settings={
            "optimizer": "adam",
            "init": "torch_uniform (kernels U(±1/√fan_in), zero bias); GRU cells: "
            "every weight and bias U(±1/√hidden), as torch.nn.GRU",
            "dataset": "mnist1d (seed 42, 4000/1000)",
            "architectures": {n: rs[0]["model"] for n, rs in runs.items()},
            "paper": PAPER,
        },
        seeds=seeds,
        data={"curves": curves},
        notes=[
            "Published numbers: Greydanus & Kobak 2020 (arXiv:2011.14439), Table 1; the "
            "paper reports single runs without error bars."
        ],
    )
