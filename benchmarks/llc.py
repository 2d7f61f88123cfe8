"""LLC estimation speed: lljax (chains vmapped in one program) vs devinterp (PyTorch).

Same model (an MNIST-1D MLP of ~10k parameters, trained here), same data, same sampler
settings: SGLD, 8 chains × 2000 draws, batch 500, nβ = n / log n, γ = 1. lljax's step ε
is devinterp's ``lr / 2`` (``ll.optim.to_devinterp``). A hand-written vmapped SGLD scan with
the same update is timed too: lljax's time over it is the framework's overhead. devinterp and
torch are optional: without them only the JAX programs are timed. Prints a table and writes JSON (``--out``).

Usage:
  python benchmarks/llc.py [--num-chains 8] [--num-draws 2000] [--out llc.json] [--quick]
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import lljax as ll


def train_mlp(data, widths, *, steps, key):
    model = ll.models.mlp(widths, activation="relu")
    loss_fn = ll.losses.cross_entropy(model)
    params = model.init(key)
    opt = optax.adam(3e-3)
    x, y = data.x_train, data.y_train

    @jax.jit
    def run(params, state, key):
        def body(carry, k):
            p, s = carry
            idx = jr.randint(k, (256,), 0, x.shape[0])
            g = jax.grad(loss_fn)(p, (x[idx], y[idx]))
            u, s = opt.update(g, s, p)
            return (optax.apply_updates(p, u), s), None

        return jax.lax.scan(body, (params, state), jr.split(key, steps))[0]

    params, _ = run(params, opt.init(params), key)
    return model, loss_fn, params


def time_lljax(loss_fn, params, data, settings, *, key):
    kw = dict(
        num_chains=settings["num_chains"],
        num_draws=settings["num_draws"],
        num_burnin=settings["num_burnin"],
        step_size=settings["step_size"],
        nbeta=settings["nbeta"],
        localization=settings["localization"],
        batch_size=settings["batch_size"],
    )
    t0 = time.perf_counter()
    r = ll.landscape.llc(loss_fn, params, data, key=key, **kw)
    jax.block_until_ready(r.mean)
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    r = ll.landscape.llc(loss_fn, params, data, key=jr.fold_in(key, 1), **kw)
    jax.block_until_ready(r.mean)
    warm = time.perf_counter() - t0
    return {
        "llc": float(r.mean),
        "stderr": float(r.stderr),
        "seconds_with_compile": first,
        "seconds": warm,
        "rhat": float(r.rhat),
        "ess": float(r.ess),
        "warnings": list(r.warnings),
        "device": str(jax.devices()[0].platform),
    }


def time_raw(loss_fn, params, data, settings, *, key):
    """A hand-written SGLD scan vmapped over chains, the same update as lljax's
    (Δw = −ε [nβ ĝ + γ (w − w*)] + √(2ε) ξ, batches drawn with replacement): the floor for
    one compiled program, so lljax's time over it is the framework's overhead."""
    x, y = jnp.asarray(data.x_train), jnp.asarray(data.y_train)
    n, bs = x.shape[0], settings["batch_size"]
    eps, nbeta, gamma = settings["step_size"], settings["nbeta"], settings["localization"]
    steps = settings["num_burnin"] + settings["num_draws"]

    @jax.jit
    def run(key):
        def chain(k):
            def step(p, k):
                k_batch, k_noise = jr.split(k)
                idx = jr.randint(k_batch, (bs,), 0, n)
                loss, g = jax.value_and_grad(loss_fn)(p, (x[idx], y[idx]))
                leaves, tree = jax.tree.flatten(p)
                noise = [
                    jr.normal(kk, w.shape, w.dtype)
                    for kk, w in zip(jr.split(k_noise, len(leaves)), leaves, strict=True)
                ]
                p = jax.tree.map(
                    lambda w, gw, w0, z: (
                        w - eps * (nbeta * gw + gamma * (w - w0)) + math.sqrt(2 * eps) * z
                    ),
                    p,
                    g,
                    params,
                    jax.tree.unflatten(tree, noise),
                )
                return p, loss

            return jax.lax.scan(step, params, jr.split(k, steps))[1]

        losses = jax.vmap(chain)(jr.split(key, settings["num_chains"]))
        per_chain = nbeta * (losses[:, settings["num_burnin"] :].mean(1) - loss_fn(params, (x, y)))
        return per_chain.mean(), per_chain.std(ddof=1) / math.sqrt(per_chain.shape[0])

    jax.block_until_ready(run(key))
    t0 = time.perf_counter()
    mean, stderr = jax.block_until_ready(run(jr.fold_in(key, 1)))
    return {"llc": float(mean), "stderr": float(stderr), "seconds": time.perf_counter() - t0}


def time_devinterp(params, data, settings):
    try:
        import torch
        from devinterp.optim import SGLD
        from devinterp.slt.sampler import estimate_learning_coeff_with_summary
    except ImportError as e:  # optional peer
        return {"skipped": f"devinterp/torch not installed ({e.name})"}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda":  # TF32, as XLA's default precision gives lljax on a GPU
        torch.set_float32_matmul_precision("high")
    layers = []
    names = sorted(params, key=lambda s: int(s.split("_")[1]))
    for i, name in enumerate(names):
        k = np.asarray(params[name]["kernel"])
        lin = torch.nn.Linear(k.shape[0], k.shape[1])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(k.T.copy()))
            lin.bias.copy_(torch.from_numpy(np.asarray(params[name]["bias"]).copy()))
        layers.append(lin)
        if i < len(names) - 1:
            layers.append(torch.nn.ReLU())
    model = torch.nn.Sequential(*layers).to(device)
    x = torch.from_numpy(np.asarray(data.x_train))
    y = torch.from_numpy(np.asarray(data.y_train)).long()

    class BatchLoader(torch.utils.data.DataLoader):
        """Shuffled batches by one tensor index each: the default loader fetches and stacks
        500 examples in Python per step (1.8 ms a batch on the CPU, 28 s of the 16,000 steps
        here), which would time data loading rather than devinterp's sampler. A DataLoader
        still, with ``dataset`` and ``batch_size``, which devinterp reads."""

        def __iter__(self):
            xs, ys = self.dataset.tensors
            perm = torch.randperm(len(xs))
            for i in range(0, len(xs), self.batch_size):
                idx = perm[i : i + self.batch_size]
                yield xs[idx], ys[idx]

    loader = BatchLoader(
        torch.utils.data.TensorDataset(x, y), batch_size=settings["batch_size"], shuffle=True
    )
    conv = ll.optim.to_devinterp(settings["step_size"], settings["nbeta"], settings["localization"])

    def evaluate(model, batch):
        xb, yb = batch
        out = model(xb)
        return torch.nn.functional.cross_entropy(out, yb), {"output": out}

    # Warm-up (CUDA and BLAS set-up) outside the timed run, whose time may be scaled up.
    bs = settings["batch_size"]
    evaluate(model, (x[:bs].to(device), y[:bs].to(device)))[0].backward()
    model.zero_grad(set_to_none=True)
    if device == "cuda":
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    try:
        stats = estimate_learning_coeff_with_summary(
            model,
            loader=loader,
            evaluate=evaluate,
            sampling_method=SGLD,
            optimizer_kwargs=dict(
                lr=conv["lr"], localization=conv["localization"], nbeta=conv["nbeta"]
            ),
            num_chains=settings["num_chains"],
            num_draws=settings["num_draws"],
            num_burnin_steps=settings["num_burnin"],
            device=device,
            online=False,
        )
    except Exception as e:  # devinterp's API moves between releases; report, don't crash
        return {"error": f"{type(e).__name__}: {e}"}
    seconds = time.perf_counter() - t0
    per_chain = [stats.get(f"llc-chain/{i}") for i in range(settings["num_chains"])]
    mean = float(np.mean(stats["llc/mean"]))
    std = float(np.mean(stats.get("llc/std", np.nan)))
    return {
        "llc": mean,
        "stderr": std / math.sqrt(settings["num_chains"]),
        "seconds": seconds,
        "per_chain": None if None in per_chain else [float(c) for c in per_chain],
        "device": device,
    }


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-chains", type=int, default=8)
    ap.add_argument("--num-draws", type=int, default=2000)
    ap.add_argument("--num-burnin", type=int, default=0)
    ap.add_argument("--step-size", type=float, default=5e-5)
    ap.add_argument("--train-steps", type=int, default=3000)
    ap.add_argument(
        "--devinterp-chains",
        type=int,
        default=None,
        help="chains devinterp actually runs (it runs them one after another, so its time is "
        "scaled to --num-chains; its estimate and error bar come from these chains alone)",
    )
    ap.add_argument("--quick", action="store_true", help="tiny settings for a smoke run")
    ap.add_argument(
        "--partial",
        action="store_true",
        help="print the record after the lljax run too (a timeout keeps what was measured)",
    )
    ap.add_argument("--out", default=None)
    args = ap.parse_args(argv)
    if args.quick:
        args.num_draws, args.train_steps = 100, 200

    data = ll.data.mnist1d()
    widths = [40, 100, 50, 10]
    model, loss_fn, params = train_mlp(data, widths, steps=args.train_steps, key=jr.key(0))
    num_params = sum(int(np.prod(p.shape)) for p in jax.tree.leaves(params))
    n = data.num_train
    settings = {
        "num_chains": args.num_chains,
        "num_draws": args.num_draws,
        "num_burnin": args.num_burnin,
        "step_size": args.step_size,
        "nbeta": n / math.log(n),
        "localization": 1.0,
        "batch_size": 500,
    }
    dv_chains = min(args.devinterp_chains or args.num_chains, args.num_chains)
    dv_settings = {**settings, "num_chains": dv_chains}
    results = {
        "model": model.name,
        "num_params": num_params,
        "train_loss": float(loss_fn(params, data.train)),
        "settings": settings,
        "platform": platform.platform(),
        "jax": jax.__version__,
        "lljax": time_lljax(loss_fn, params, data, settings, key=jr.key(1)),
    }
    results["raw"] = time_raw(loss_fn, params, data, settings, key=jr.key(2))
    results["lljax_over_raw"] = results["lljax"]["seconds"] / results["raw"]["seconds"]
    if args.partial:
        print(json.dumps({"partial": True, **results}), flush=True)
    results["devinterp"] = time_devinterp(params, data, dv_settings)
    dv = results["devinterp"]
    if "seconds" in dv and dv_chains != args.num_chains:
        dv["measured_chains"], dv["measured_seconds"] = dv_chains, dv["seconds"]
        dv["seconds"] *= args.num_chains / dv_chains
    if "seconds" in dv:
        results["speedup"] = dv["seconds"] / results["lljax"]["seconds"]

    lj = results["lljax"]
    print(
        f"LLC benchmark: {model.name}, {num_params} params, {args.num_chains} chains × "
        f"{args.num_draws} draws, batch 500, ε = {args.step_size:g}"
    )
    print(f"{'tool':<10} {'device':<7} {'seconds':>9} {'λ̂':>9} {'± stderr':>9}")
    print(
        f"{'lljax':<10} {lj['device']:<7} {lj['seconds']:>9.2f} {lj['llc']:>9.2f} {lj['stderr']:>9.2f}"
        f"   (first call with compile: {lj['seconds_with_compile']:.2f} s)"
    )
    raw = results["raw"]
    print(
        f"{'raw vmap':<10} {lj['device']:<7} {raw['seconds']:>9.2f} {raw['llc']:>9.2f} "
        f"{raw['stderr']:>9.2f}   (hand-written scan; lljax/raw {results['lljax_over_raw']:.2f})"
    )
    if "seconds" in dv:
        print(
            f"{'devinterp':<10} {dv['device']:<7} {dv['seconds']:>9.2f} {dv['llc']:>9.2f} {dv['stderr']:>9.2f}"
        )
        if dv_chains != args.num_chains:
            print(f"(devinterp ran {dv_chains} chains; its time is scaled to {args.num_chains})")
        print(f"speed-up: {results['speedup']:.1f}×")
    else:
        print(f"devinterp: {dv.get('skipped') or dv.get('error')}")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    print(json.dumps(results))
    return results


if __name__ == "__main__":
    jnp.zeros(())  # initialise the backend before timing
    main()
