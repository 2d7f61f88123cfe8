"""Spectra benchmark: lljax vs a naive JAX Lanczos (and PyHessian when installed).

Times, on one model, batch and set of weights (random data, seeded):

* gradient and Hessian-vector product (HVP) time, their ratio, and the HVP's achieved
  FLOP/s against a float32 (``precision="highest"``) matmul measured in the same run;
* one Lanczos step (full reorthogonalisation) against one HVP, lljax and naive;
* top-5 eigenvalues: lljax ``eigsh`` (tolerance mode), the naive Lanczos and power
  iteration (top-1), with relative errors against a tight-tolerance reference;
* trace (Hutchinson and Hutch++ at equal matvecs) and an SLQ density;
* spectra of a population of seeds in one vmapped call against separate calls;
* peak device memory (where the backend reports it) against the Lanczos basis size.

Usage::

    python benchmarks/spectrum.py --size small            # MLP 784-512-512-10, batch 1024
    python benchmarks/spectrum.py --size large            # 3072-2048-2048-2048-10, batch 4096 (GPU)

Prints a table and, last, one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.flatten_util import ravel_pytree

import lljax as ll
from lljax import spectrum

SIZES = {
    "small": {"widths": [784, 512, 512, 10], "batch": 1024},
    "medium": {"widths": [784, 1024, 1024, 1024, 10], "batch": 2048},
    "large": {"widths": [3072, 2048, 2048, 2048, 10], "batch": 4096},
}
HIGHEST = lax.Precision.HIGHEST


def timeit(fn, *args, reps=5):
    """Median wall time of ``fn(*args)`` after one compile-and-warm-up call."""
    jax.block_until_ready(fn(*args))
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        jax.block_until_ready(fn(*args))
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def peak_memory():
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001
        return None
    return None if not stats else stats.get("peak_bytes_in_use")


def make_problem(size, seed=0):
    cfg = SIZES[size]
    model = ll.models.mlp(cfg["widths"], activation="tanh", init="lecun")
    key = jax.random.key(seed)
    params = model.init(key)
    x = jax.random.normal(jax.random.fold_in(key, 1), (cfg["batch"], cfg["widths"][0]))
    y = jax.random.randint(jax.random.fold_in(key, 2), (cfg["batch"],), 0, cfg["widths"][-1])
    return model, params, (x, y)


def hvp_operator(loss_fn, params, batch):
    """Forward-over-reverse HVP on raveled params (the library's, when it exists)."""
    if hasattr(ll, "curvature") and hasattr(ll.curvature, "hessian"):
        try:
            return ll.curvature.hessian(loss_fn, params, batch)
        except TypeError:
            pass
    flat, unravel = ravel_pytree(params)
    grad = jax.grad(lambda f: loss_fn(unravel(f), batch))
    return ll.curvature.Operator(
        lambda v: jax.jvp(grad, (flat,), (v,))[1], flat.size, flat.dtype, unravel, "hessian"
    )


# ----------------------------------------------------------------------------- naive baseline


def naive_lanczos(matvec, size, num_steps, key):
    """Textbook Lanczos: full basis, one Gram–Schmidt pass over all rows, float32 scalars."""
    v = jax.random.normal(key, (size,))
    v = v / jnp.linalg.norm(v)
    basis = jnp.zeros((num_steps, size)).at[0].set(v)

    def step(j, carry):
        basis, alpha, beta = carry
        q = basis[j]
        w = matvec(q)
        alpha = alpha.at[j].set(jnp.dot(q, w, precision=HIGHEST))
        w = w - jnp.dot(basis.T, jnp.dot(basis, w, precision=HIGHEST), precision=HIGHEST)
        b = jnp.linalg.norm(w)
        beta = beta.at[j].set(b)
        # The last step's vector is never used; writing it over row m-1 avoids a branch.
        basis = lax.dynamic_update_index_in_dim(basis, w / b, jnp.minimum(j + 1, num_steps - 1), 0)
        return basis, alpha, beta

    init = (basis, jnp.zeros(num_steps), jnp.zeros(num_steps))
    _, alpha, beta = lax.fori_loop(0, num_steps, step, init)
    t = jnp.diag(alpha) + jnp.diag(beta[:-1], 1) + jnp.diag(beta[:-1], -1)
    return jnp.linalg.eigvalsh(t)


# ----------------------------------------------------------------------------- PyHessian


def pyhessian_section(model, params, batch, reference_top, exact_trace):
    """PyHessian on the same weights and data, if torch and pyhessian import."""
    try:
        import torch
        from pyhessian import hessian as pyh
    except Exception as e:  # noqa: BLE001
        return {"available": False, "reason": f"{type(e).__name__}: {e}"}
    layers, widths = [], [params[f"Dense_{i}"] for i in range(len(params))]
    for i, p in enumerate(widths):
        lin = torch.nn.Linear(*np.asarray(p["kernel"]).shape)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.asarray(p["kernel"]).T.copy()))
            lin.bias.copy_(torch.from_numpy(np.asarray(p["bias"]).copy()))
        layers.append(lin)
        if i < len(widths) - 1:
            layers.append(torch.nn.Tanh())
    net = torch.nn.Sequential(*layers)
    cuda = torch.cuda.is_available()
    if cuda:
        net = net.cuda()
    x = torch.from_numpy(np.asarray(batch[0]))
    y = torch.from_numpy(np.asarray(batch[1]).astype(np.int64))
    comp = pyh(net, torch.nn.CrossEntropyLoss(), data=(x, y), cuda=cuda)
    out = {"available": True}
    t0 = time.perf_counter()
    top1, _ = comp.eigenvalues(top_n=1)
    out["top1_s"] = time.perf_counter() - t0
    out["top1_rel_err"] = abs(top1[0] - reference_top[0]) / abs(reference_top[0])
    t0 = time.perf_counter()
    top5, _ = comp.eigenvalues(top_n=5)
    out["top5_s"] = time.perf_counter() - t0
    out["top5_max_rel_err"] = float(
        np.max(np.abs(np.sort(top5)[::-1] - reference_top) / np.abs(reference_top))
    )
    t0 = time.perf_counter()
    tr = comp.trace()
    out["trace_s"] = time.perf_counter() - t0
    out["trace_rel_err"] = abs(float(np.mean(tr)) - exact_trace) / abs(exact_trace)
    t0 = time.perf_counter()
    comp.density()
    out["density_s"] = time.perf_counter() - t0
    return out


# ----------------------------------------------------------------------------- main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument(
        "--num-steps", type=int, default=90, help="Lanczos steps (step timing, naive top-5)"
    )
    parser.add_argument("--num-probes", type=int, default=8, help="SLQ probes")
    parser.add_argument(
        "--population",
        type=int,
        default=None,
        help="seeds in the vmapped population (default 64 on GPU, 8 on CPU)",
    )
    parser.add_argument("--population-steps", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--skip", default="", help="comma list of sections to skip: density,population,pyhessian"
    )
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    backend = jax.default_backend()
    device = jax.devices()[0].device_kind
    population = args.population or (64 if backend == "gpu" else 8)
    rec = {"size": args.size, "backend": backend, "device": device, "jax": jax.__version__}

    model, params, batch = make_problem(args.size)
    loss_fn = ll.losses.cross_entropy(model)
    flat, unravel = ravel_pytree(params)
    n = int(flat.size)
    rec["num_params"] = n
    key = jax.random.key(0)

    # Everything takes params and batch as arguments so nothing is baked into the program.
    grad_fn = jax.jit(lambda f, b: jax.grad(lambda f: loss_fn(unravel(f), b))(f))
    hvp_fn = jax.jit(lambda f, b, v: hvp_operator(loss_fn, unravel(f), b).matvec(v))
    v = jax.random.normal(key, (n,))
    rec["grad_s"] = timeit(grad_fn, flat, batch, reps=args.reps)
    rec["hvp_s"] = timeit(hvp_fn, flat, batch, v, reps=args.reps)
    rec["hvp_over_grad"] = rec["hvp_s"] / rec["grad_s"]
    try:
        flops = hvp_fn.lower(flat, batch, v).compile().cost_analysis()
        flops = (flops[0] if isinstance(flops, list) else flops).get("flops")
    except Exception:  # noqa: BLE001
        flops = None
    mm = 4096 if backend == "gpu" else 1024
    a = jax.random.normal(key, (mm, mm))
    matmul = jax.jit(lambda a: jnp.dot(a, a, precision=HIGHEST))
    rec["matmul_flops_per_s"] = 2 * mm**3 / timeit(matmul, a, reps=args.reps)
    if flops:
        rec["hvp_flops"] = float(flops)
        rec["hvp_flops_per_s"] = float(flops) / rec["hvp_s"]
        rec["hvp_fraction_of_matmul_rate"] = rec["hvp_flops_per_s"] / rec["matmul_flops_per_s"]

    # One Lanczos step vs one HVP.
    m = min(args.num_steps, n)

    def ll_lanczos(f, b):
        op = hvp_operator(loss_fn, unravel(f), b)
        return spectrum.lanczos(op, num_steps=m, key=key).alpha

    def naive(f, b):
        op = hvp_operator(loss_fn, unravel(f), b)
        return naive_lanczos(op.matvec, n, m, key)

    rec["lanczos_steps"] = m
    rec["lanczos_step_s"] = timeit(jax.jit(ll_lanczos), flat, batch, reps=1) / m
    rec["lanczos_step_over_hvp"] = rec["lanczos_step_s"] / rec["hvp_s"]
    rec["basis_bytes"] = (m + 1) * n * 4
    rec["peak_bytes_after_lanczos"] = peak_memory()
    rec["naive_step_s"] = timeit(jax.jit(naive), flat, batch, reps=1) / m
    rec["naive_step_over_hvp"] = rec["naive_step_s"] / rec["hvp_s"]

    # Top-5: reference with a tight tolerance, then timed runs.
    def top5(f, b, tol):
        op = hvp_operator(loss_fn, unravel(f), b)
        return spectrum.eigsh(op, 5, key=key, tol=tol, num_steps=40, return_eigenvectors=False)

    ref = jax.jit(lambda f, b: top5(f, b, 1e-7))(flat, batch)
    reference = np.asarray(ref.eigenvalues, np.float64)
    rec["reference_top5"] = reference.tolist()
    top5_fn = jax.jit(lambda f, b: top5(f, b, 1e-5))
    rec["top5_s"] = timeit(top5_fn, flat, batch, reps=args.reps)
    out = top5_fn(flat, batch)
    rec["top5_matvecs"] = int(out.num_matvecs)
    rec["top5_max_rel_err"] = float(
        np.max(np.abs(np.asarray(out.eigenvalues) - reference) / np.abs(reference))
    )
    naive_fn = jax.jit(naive)
    rec["naive_top5_s"] = timeit(naive_fn, flat, batch, reps=1)
    naive_vals = np.sort(np.asarray(naive_fn(flat, batch)))[::-1][:5]
    rec["naive_top5_max_rel_err"] = float(
        np.max(np.abs(naive_vals - reference) / np.abs(reference))
    )

    def power(f, b):
        op = hvp_operator(loss_fn, unravel(f), b)
        return spectrum.power_iteration(op, key=key, num_iters=100, tol=1e-3)

    power_fn = jax.jit(power)
    rec["power_top1_s"] = timeit(power_fn, flat, batch, reps=args.reps)
    pw = power_fn(flat, batch)
    rec["power_top1_iters"] = int(pw.num_iters)
    rec["power_top1_rel_err"] = float(abs(float(pw.eigenvalue) - reference[0]) / abs(reference[0]))

    # Trace at equal matvecs.
    for method in ("hutchinson", "hutch++"):
        fn = jax.jit(
            lambda f, b, method=method: spectrum.trace(
                hvp_operator(loss_fn, unravel(f), b),
                key=key,
                num_probes=99,
                method=method,
                batch_size=33,
            )
        )
        rec[f"trace_{method}_s"] = timeit(fn, flat, batch, reps=1)
        est = fn(flat, batch)
        rec[f"trace_{method}"] = [float(est.value), float(est.stderr)]

    if "density" not in skip:
        dens_fn = jax.jit(
            lambda f, b: spectrum.density(
                hvp_operator(loss_fn, unravel(f), b),
                key=key,
                num_probes=args.num_probes,
                num_steps=m,
            )
        )
        rec["density_s"] = timeit(dens_fn, flat, batch, reps=1)
        rec["density_probes_steps"] = [args.num_probes, m]

    if "population" not in skip:
        keys = jax.random.split(jax.random.key(1), population)
        pop = jax.vmap(model.init)(keys)
        ps = args.population_steps

        def spectra(p, b):
            op = hvp_operator(loss_fn, p, b)
            r = spectrum.lanczos(op, num_steps=ps, key=key)
            return spectrum.ritz(r).values

        one = jax.jit(spectra)
        many = jax.jit(jax.vmap(spectra, in_axes=(0, None)))
        members = [jax.tree.map(lambda a, i=i: a[i], pop) for i in range(population)]
        jax.block_until_ready(one(members[0], batch))

        def loop(_, b):
            return [one(p, b) for p in members]

        rec["population"] = population
        rec["population_steps"] = ps
        rec["population_loop_s"] = timeit(loop, None, batch, reps=1)
        rec["population_vmap_s"] = timeit(many, pop, batch, reps=1)
        rec["population_speedup"] = rec["population_loop_s"] / rec["population_vmap_s"]

    if "pyhessian" not in skip:
        exact_trace = rec["trace_hutch++"][0]
        rec["pyhessian"] = pyhessian_section(model, params, batch, reference, exact_trace)

    rows = [
        (
            "HVP / gradient time",
            f"{rec['hvp_over_grad']:.2f}x",
            f"grad {rec['grad_s'] * 1e3:.1f} ms, HVP {rec['hvp_s'] * 1e3:.1f} ms",
        ),
        (
            "HVP FLOP/s / matmul FLOP/s",
            f"{rec.get('hvp_fraction_of_matmul_rate', float('nan')):.2f}",
            f"matmul {rec['matmul_flops_per_s'] / 1e9:.1f} GFLOP/s",
        ),
        (
            "Lanczos step / HVP (lljax)",
            f"{rec['lanczos_step_over_hvp']:.2f}x",
            f"{m} steps, basis {rec['basis_bytes'] / 2**20:.0f} MiB",
        ),
        ("Lanczos step / HVP (naive)", f"{rec['naive_step_over_hvp']:.2f}x", ""),
        (
            "top-5 lljax eigsh",
            f"{rec['top5_s']:.2f} s",
            f"max rel err {rec['top5_max_rel_err']:.1e}, {rec['top5_matvecs']} matvecs",
        ),
        (
            "top-5 naive Lanczos",
            f"{rec['naive_top5_s']:.2f} s",
            f"max rel err {rec['naive_top5_max_rel_err']:.1e}, {m} matvecs",
        ),
        (
            "top-1 power iteration",
            f"{rec['power_top1_s']:.2f} s",
            f"rel err {rec['power_top1_rel_err']:.1e}, {rec['power_top1_iters']} iters",
        ),
        (
            "trace Hutchinson (99 mv)",
            f"{rec['trace_hutchinson_s']:.2f} s",
            "value {:.4g} ± {:.2g}".format(*rec["trace_hutchinson"]),
        ),
        (
            "trace Hutch++ (99 mv)",
            f"{rec['trace_hutch++_s']:.2f} s",
            "value {:.4g} ± {:.2g}".format(*rec["trace_hutch++"]),
        ),
    ]
    if "density_s" in rec:
        rows.append(
            ("SLQ density", f"{rec['density_s']:.2f} s", f"{args.num_probes} probes × {m} steps")
        )
    if "population_speedup" in rec:
        rows.append(
            (
                "population vmap vs loop",
                f"{rec['population_speedup']:.2f}x",
                f"{population} seeds × {rec['population_steps']} steps: {rec['population_vmap_s']:.2f} s vs {rec['population_loop_s']:.2f} s",
            )
        )
    if rec.get("pyhessian", {}).get("available"):
        p = rec["pyhessian"]
        rows.append(
            ("PyHessian top-5", f"{p['top5_s']:.2f} s", f"max rel err {p['top5_max_rel_err']:.1e}")
        )
        rows.append(
            ("PyHessian trace / density", f"{p['trace_s']:.2f} / {p['density_s']:.2f} s", "")
        )
    print(f"# lljax spectrum benchmark: {args.size}, {n} params, {device} ({backend})")
    width = max(len(r[0]) for r in rows)
    for name, val, note in rows:
        print(f"{name:<{width}}  {val:>12}  {note}")
    print(json.dumps(rec))
    return rec


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
