"""Population training speed: lljax.ensemble.train vs hand-written JAX and PyTorch.

One run times, on the same synthetic stream (a fixed set of Gaussian inputs with teacher
labels; every step draws ``batch`` indices with replacement from the member's key):
``members`` MLPs 784-256-256-10 (ReLU, He init), plain SGD, ``steps`` steps, batch 128.

* ``lljax``: ``ll.ensemble.train`` (one compiled program, vmap inside the step scan),
  evaluation switched off, compile excluded (second call, same static arguments);
* ``raw_vmap``: the same computation written by hand in JAX (vmapped value_and_grad inside
  ``lax.scan``) — the "no framework" floor;
* ``jax_loop``: a Python loop over members calling one jitted single-member trainer;
* ``torch_loop``: a PyTorch eager loop over seeds, and ``torch_func``: ``torch.func``
  ``functional_call`` + ``vmap`` over ``stack_module_state`` (only if torch imports).

Times include initialising the members' params and block until the results are ready.
float32 everywhere; on a GPU torch's matmuls use TF32, as XLA's default precision does.
Then two scaling tables for lljax: time per step vs members and vs hidden width.
Prints a table and JSON (also written to ``--out``).

Usage:
  python benchmarks/ensemble.py [--members 64] [--steps 500] [--quick] [--out ensemble.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import lljax as ll


def synthetic(num_examples: int, dim: int, classes: int, *, seed: int = 0) -> ll.data.Dataset:
    """A fixed synthetic stream: Gaussian inputs, labels from a random linear teacher."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(num_examples, dim)).astype(np.float32)
    w = rng.normal(size=(dim, classes)).astype(np.float32)
    y = np.argmax(x @ w, -1).astype(np.int32)
    n_test = max(1, num_examples // 8)
    return ll.data.Dataset(
        jnp.asarray(x),
        jnp.asarray(y),
        jnp.asarray(x[:n_test]),
        jnp.asarray(y[:n_test]),
        name="synthetic",
        num_classes=classes,
    )


def _timed(fn, repeats: int):
    """Best of ``repeats`` wall times of ``fn()`` (which must block)."""
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t)
    return best


# ---------------------------------------------------------------- lljax


def bench_lljax(data, widths, members, steps, batch, lr, repeats):
    model = ll.models.mlp(widths, activation="relu", init="he")
    loss_fn = ll.losses.cross_entropy(model)
    opt = optax.sgd(lr)

    def go():
        pop = ll.ensemble.train(
            model,
            loss_fn,
            opt,
            data,
            key=jr.key(0),
            num_members=members,
            steps=steps,
            batch_size=batch,
            chunk_size=steps,
            eval_splits=(),
            sampling="replacement",
            progress=False,
        )
        jax.block_until_ready(pop.params)
        return pop

    t0 = time.perf_counter()
    pop = go()
    first = time.perf_counter() - t0
    best = _timed(go, repeats)
    final = float(np.mean(pop.history["loss"][:, -10:]))
    return {"seconds": best, "first_call_seconds": first, "final_loss": final}


# ---------------------------------------------------------------- raw JAX


def raw_init(key, widths):
    params = []
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
        k = jr.fold_in(key, i)
        params.append((jr.normal(k, (a, b)) * jnp.sqrt(2.0 / a), jnp.zeros((b,))))
    return params


def raw_loss(params, x, y):
    h = x
    for i, (w, b) in enumerate(params):
        h = h @ w + b
        if i < len(params) - 1:
            h = jax.nn.relu(h)
    logp = jax.nn.log_softmax(h)
    return -jnp.mean(jnp.take_along_axis(logp, y[:, None], axis=1))


def make_raw_trainer(widths, steps, batch, lr):
    def one_step(params, key, t, x, y):
        idx = jr.randint(jr.fold_in(key, t), (batch,), 0, x.shape[0])
        loss, g = jax.value_and_grad(raw_loss)(params, x[idx], y[idx])
        return jax.tree.map(lambda p, gp: p - lr * gp, params, g), loss

    @jax.jit
    def train_population(keys, x, y):
        params = jax.vmap(lambda k: raw_init(k, widths))(keys)

        def body(p, t):
            return jax.vmap(one_step, in_axes=(0, 0, None, None, None))(p, keys, t, x, y)

        return jax.lax.scan(body, params, jnp.arange(steps))

    @jax.jit
    def train_one(key, x, y):
        params = raw_init(key, widths)

        def body(p, t):
            return one_step(p, key, t, x, y)

        return jax.lax.scan(body, params, jnp.arange(steps))

    return train_population, train_one


def bench_raw(data, widths, members, steps, batch, lr, repeats):
    train_population, train_one = make_raw_trainer(widths, steps, batch, lr)
    keys = jax.vmap(lambda i: jr.fold_in(jr.key(0), i))(jnp.arange(members))
    x, y = data.x_train, data.y_train

    def vmapped():
        return jax.block_until_ready(train_population(keys, x, y))

    def looped():
        outs = [train_one(keys[i], x, y) for i in range(members)]
        return jax.block_until_ready(outs)

    t0 = time.perf_counter()
    _, losses = vmapped()
    first_v = time.perf_counter() - t0
    t0 = time.perf_counter()
    looped()
    first_l = time.perf_counter() - t0
    return (
        {
            "seconds": _timed(vmapped, repeats),
            "first_call_seconds": first_v,
            "final_loss": float(jnp.mean(losses[-10:])),
        },
        {"seconds": _timed(looped, repeats), "first_call_seconds": first_l},
    )


# ---------------------------------------------------------------- PyTorch (optional)


def bench_torch(data, widths, members, steps, batch, lr, repeats, loop_members):
    try:
        import torch
        from torch.func import functional_call, grad_and_value, stack_module_state
    except ImportError:
        return None
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    if dev == "cuda":  # TF32, as XLA's default precision gives the JAX variants on a GPU
        torch.set_float32_matmul_precision("high")
    x = torch.as_tensor(np.array(data.x_train), device=dev)
    y = torch.as_tensor(np.array(data.y_train), device=dev).long()
    n = x.shape[0]

    def make(seed):
        torch.manual_seed(seed)
        layers = []
        for i, (a, b) in enumerate(zip(widths[:-1], widths[1:], strict=True)):
            lin = torch.nn.Linear(a, b)
            torch.nn.init.kaiming_normal_(lin.weight, nonlinearity="relu")
            torch.nn.init.zeros_(lin.bias)
            layers.append(lin)
            if i < len(widths) - 2:
                layers.append(torch.nn.ReLU())
        return torch.nn.Sequential(*layers).to(dev)

    def sync():
        if dev == "cuda":
            torch.cuda.synchronize()

    def eager_loop(num_members=loop_members, num_steps=steps):
        for s in range(num_members):
            net = make(s)
            opt = torch.optim.SGD(net.parameters(), lr=lr)
            g = torch.Generator(device=dev).manual_seed(s)
            for _ in range(num_steps):
                idx = torch.randint(0, n, (batch,), device=dev, generator=g)
                loss = torch.nn.functional.cross_entropy(net(x[idx]), y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        sync()

    def func_vmap():
        nets = [make(s) for s in range(members)]
        params, buffers = stack_module_state(nets)
        base = make(0).to("meta")

        def loss_one(p, b, xb, yb):
            return torch.nn.functional.cross_entropy(functional_call(base, (p, b), (xb,)), yb)

        step = torch.func.vmap(grad_and_value(loss_one))
        g = torch.Generator(device=dev).manual_seed(0)
        for _ in range(steps):
            idx = torch.randint(0, n, (members, batch), device=dev, generator=g)
            grads, _ = step(params, buffers, x[idx], y[idx])
            with torch.no_grad():
                for k in params:
                    params[k].sub_(lr * grads[k])
        sync()

    eager_loop(1, min(steps, 10))  # warm-up: one-time set-up would be scaled up below
    eager_loop_t = _timed(eager_loop, 1) * members / loop_members
    func_vmap()  # warm-up
    return {
        "torch_loop": {
            "seconds": eager_loop_t,
            "measured_members": loop_members,
            "device": dev,
            "torch": torch.__version__,
            "float32_matmul_precision": torch.get_float32_matmul_precision(),
        },
        "torch_func": {"seconds": _timed(func_vmap, repeats), "device": dev},
    }


# ---------------------------------------------------------------- scaling


def scaling(data, widths, member_list, width_list, width_members, steps, batch, lr, scale, emit):
    """Fills ``scale`` row by row, calling ``emit()`` after each row."""
    rows_m, rows_w = [], []
    scale.update(steps=steps, vs_members=rows_m, vs_width=rows_w)
    for m in member_list:
        r = bench_lljax(data, widths, m, steps, batch, lr, 1)
        rows_m.append(
            {
                "members": m,
                "ms_per_step": 1e3 * r["seconds"] / steps,
                "member_steps_per_s": m * steps / r["seconds"],
            }
        )
        emit()
    for w in width_list:
        ws = [widths[0], w, w, widths[-1]]
        r = bench_lljax(data, ws, width_members, steps, batch, lr, 1)
        rows_w.append(
            {"width": w, "members": width_members, "ms_per_step": 1e3 * r["seconds"] / steps}
        )
        emit()


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--members", type=int, default=64)
    p.add_argument("--steps", type=int, default=500)
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--lr", type=float, default=0.05)
    p.add_argument("--num-examples", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--torch-loop-members",
        type=int,
        default=None,
        help="members actually run in the PyTorch eager loop (time scaled up)",
    )
    p.add_argument("--no-scaling", action="store_true")
    p.add_argument(
        "--quick",
        action="store_true",
        help="8 members, 50 steps, small scaling tables (CPU smoke run)",
    )
    p.add_argument(
        "--partial",
        action="store_true",
        help="print the record so far after each part (a timeout keeps what was measured)",
    )
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    on_cpu = jax.default_backend() == "cpu"
    if a.quick:
        a.members, a.steps, a.repeats, a.num_examples = 8, 50, 2, 2048
    widths = [784, 256, 256, 10]
    data = synthetic(a.num_examples, widths[0], widths[-1])
    loop_members = a.torch_loop_members or (min(a.members, 2 if on_cpu else 8))

    dev = jax.devices()[0]
    res, ratios, scale = {}, {}, {}
    out = {
        "benchmark": "ensemble",
        "device": f"{dev.platform}: {getattr(dev, 'device_kind', '')}",
        "num_devices": len(jax.devices()),
        "host": platform.processor() or platform.machine(),
        "jax": jax.__version__,
        "lljax": ll.__version__,
        "settings": {
            "members": a.members,
            "steps": a.steps,
            "batch": a.batch,
            "lr": a.lr,
            "widths": widths,
            "num_examples": a.num_examples,
            "repeats": a.repeats,
        },
        "results": res,
        "ratios": ratios,
        "scaling": scale,
    }

    def emit():
        if a.partial:
            print(json.dumps({"partial": True, **out}), flush=True)

    res["lljax"] = bench_lljax(data, widths, a.members, a.steps, a.batch, a.lr, a.repeats)
    emit()
    res["raw_vmap"], res["jax_loop"] = bench_raw(
        data, widths, a.members, a.steps, a.batch, a.lr, a.repeats
    )
    ratios["lljax_over_raw_vmap"] = res["lljax"]["seconds"] / res["raw_vmap"]["seconds"]
    ratios["jax_loop_over_lljax"] = res["jax_loop"]["seconds"] / res["lljax"]["seconds"]
    emit()
    res.update(
        bench_torch(data, widths, a.members, a.steps, a.batch, a.lr, a.repeats, loop_members) or {}
    )
    for k in ("torch_loop", "torch_func"):
        if k in res:
            ratios[f"{k}_over_lljax"] = res[k]["seconds"] / res["lljax"]["seconds"]
    emit()

    if not a.no_scaling:
        if a.quick:
            members_list, width_list, sm, wm = [1, 4, 16], [64, 256], 20, 4
        elif on_cpu:
            members_list, width_list, sm, wm = [1, 4, 16, 64], [64, 128, 256, 512], 50, 16
        else:
            members_list = [1, 16, 64, 256, 1024]
            width_list, sm, wm = [128, 512, 2048], 100, 64
        scaling(data, widths, members_list, width_list, wm, sm, a.batch, a.lr, scale, emit)

    print(
        f"# ensemble training: {a.members} x MLP {widths}, batch {a.batch}, {a.steps} SGD "
        f"steps on {out['device']} (jax {jax.__version__})"
    )
    print(f"{'variant':<12} {'seconds':>10} {'x lljax':>9}  notes")
    for k, v in res.items():
        note = ""
        if "first_call_seconds" in v:
            note = f"first call (compile) {v['first_call_seconds']:.2f}s"
        if k == "torch_loop":
            note = f"{v['measured_members']} members run, scaled to {a.members}"
        print(
            f"{k:<12} {v['seconds']:>10.3f} {v['seconds'] / res['lljax']['seconds']:>9.2f}  {note}"
        )
    if scale:
        print(f"\n# lljax time per step vs members (width 256, {scale['steps']} steps)")
        print(f"{'members':>8} {'ms/step':>10} {'member-steps/s':>15}")
        for r in scale["vs_members"]:
            print(f"{r['members']:>8} {r['ms_per_step']:>10.3f} {r['member_steps_per_s']:>15.0f}")
        print(f"\n# lljax time per step vs width ({scale['vs_width'][0]['members']} members)")
        print(f"{'width':>8} {'ms/step':>10}")
        for r in scale["vs_width"]:
            print(f"{r['width']:>8} {r['ms_per_step']:>10.3f}")
    print(json.dumps(out))
    if a.out:
        with open(a.out, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
