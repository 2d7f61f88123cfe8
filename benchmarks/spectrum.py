"""Spectra benchmark: lljax vs a naive JAX Lanczos, PyHessian and curvlinops (if installed).

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
    "tiny": {"widths": [64, 32, 32, 10], "batch": 128},  # gpu.py --smoke: a dry run of every path
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


def print_table(title, rows):
    """``rows`` of ``(measure, value, note)`` under a ``# title`` line."""
    print(f"# {title}")
    width = max(len(r[0]) for r in rows)
    for name, val, note in rows:
        print(f"{name:<{width}}  {val:>12}  {note}")


def peak_memory():
    try:
        stats = jax.local_devices()[0].memory_stats()
    except Exception:  # noqa: BLE001
        return None
    return None if not stats else stats.get("peak_bytes_in_use")


def compiled_bytes(fn, *args):
    """Arguments + temporaries + outputs of the compiled ``fn`` (XLA's buffer assignment).

    ``fn`` is a jitted function, lowered and compiled for ``args``, or an already compiled
    one (``jax.jit(f).lower(...).compile()``), which saves compiling a large program twice.
    """
    try:
        compiled = fn if hasattr(fn, "memory_analysis") else fn.lower(*args).compile()
        m = compiled.memory_analysis()
    except Exception:  # noqa: BLE001 - not every backend reports it
        return None
    if m is None:
        return None
    return int(
        m.argument_size_in_bytes
        + m.temp_size_in_bytes
        + m.output_size_in_bytes
        - m.alias_size_in_bytes
    )


def mib(nbytes):
    return f"{nbytes / 2**20:.0f} MiB" if nbytes else "n/a"


def compiled_flops(fn, *args):
    """XLA's FLOP count for the compiled ``fn`` (None where the backend gives none)."""
    try:
        cost = fn.lower(*args).compile().cost_analysis()
    except Exception:  # noqa: BLE001
        return None
    cost = cost[0] if isinstance(cost, list) else cost
    return None if not cost or "flops" not in cost else float(cost["flops"])


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


def _torch_problem(params, batch):
    """The same MLP (tanh), weights and batch as a torch ``Sequential`` on GPU if present."""
    import torch

    layers, dense = [], [params[f"Dense_{i}"] for i in range(len(params))]
    for i, p in enumerate(dense):
        lin = torch.nn.Linear(*np.asarray(p["kernel"]).shape)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(np.asarray(p["kernel"]).T.copy()))
            lin.bias.copy_(torch.from_numpy(np.asarray(p["bias"]).copy()))
        layers.append(lin)
        if i < len(dense) - 1:
            layers.append(torch.nn.Tanh())
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    _torch_fp32(torch)
    net = torch.nn.Sequential(*layers).to(dev)
    x = torch.from_numpy(np.array(batch[0])).to(dev)
    y = torch.from_numpy(np.asarray(batch[1]).astype(np.int64)).to(dev)
    return torch, net, x, y, dev


def _torch_fp32(torch):
    """Full float32 matmuls and convolutions in torch (no TF32 on a GPU), as lljax's
    ``precision="highest"``: cuDNN convolutions otherwise default to TF32."""
    torch.set_float32_matmul_precision("highest")
    torch.backends.cudnn.allow_tf32 = False


def _torch_timer(torch, dev):
    def timed(fn):
        if dev == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        out = fn()
        if dev == "cuda":
            torch.cuda.synchronize()
        return out, time.perf_counter() - t0

    return timed


def _max_rel_err(values, reference):
    values = np.sort(np.asarray(values, np.float64))[::-1][: len(reference)]
    return float(np.max(np.abs(values - reference) / np.abs(reference)))


def pyhessian_section(params, batch, reference_top, tight=True):
    """PyHessian (its defaults: power iteration with deflation, tol 1e-3, 100 iterations)."""
    try:
        from pyhessian import hessian as pyh

        torch, net, x, y, dev = _torch_problem(params, batch)
    except Exception as e:  # noqa: BLE001
        return {"available": False, "reason": f"{type(e).__name__}: {e}"}
    timed = _torch_timer(torch, dev)
    comp = pyh(net, torch.nn.CrossEntropyLoss(), data=(x, y), cuda=dev == "cuda")
    out = {"available": True, "torch": torch.__version__, "device": dev}
    (top1, _), out["top1_s"] = timed(lambda: comp.eigenvalues(top_n=1))
    out["top1_rel_err"] = _max_rel_err(top1, reference_top[:1])
    (top5, _), out["top5_s"] = timed(lambda: comp.eigenvalues(top_n=5))
    out["top5_max_rel_err"] = _max_rel_err(top5, reference_top)
    # Its defaults stop at a 1e-3 relative change per iteration, percent-level errors;
    # tightened, power iteration with deflation is what reaching 1e-4 costs.
    if tight:
        (top5, _), out["top5_tight_s"] = timed(
            lambda: comp.eigenvalues(top_n=5, maxIter=1000, tol=1e-6)
        )
        out["top5_tight_max_rel_err"] = _max_rel_err(top5, reference_top)
    tr, out["trace_s"] = timed(comp.trace)
    out["trace"] = [float(np.mean(tr)), float(np.std(tr, ddof=1) / np.sqrt(len(tr)))]
    out["trace_matvecs"] = len(tr)
    if _torch_eig_removed(torch):
        # PyHessian 0.1 calls torch.eig (removed in torch 2): give it the symmetric solver
        # for its tridiagonal, returning eig's old (real, imaginary) layout.
        def eig(a, eigenvectors=False):
            w, v = torch.linalg.eigh(a)
            return torch.stack([w, torch.zeros_like(w)], 1), v

        torch.eig = eig
    _, out["density_s"] = timed(comp.density)
    return out


def _torch_eig_removed(torch):
    try:
        torch.eig(torch.eye(2), eigenvectors=True)
    except (AttributeError, RuntimeError):
        return True
    return False


def curvlinops_section(params, batch, reference_top, num_matvecs=99):
    """curvlinops' HessianLinearOperator with scipy's ARPACK ``eigsh`` and its Hutch++."""
    try:
        import scipy.sparse.linalg as sla
        from curvlinops import HessianLinearOperator, hutchpp_trace

        torch, net, x, y, dev = _torch_problem(params, batch)
    except Exception as e:  # noqa: BLE001
        return {"available": False, "reason": f"{type(e).__name__}: {e}"}
    timed = _torch_timer(torch, dev)
    loss = torch.nn.CrossEntropyLoss()
    plist = [p for p in net.parameters() if p.requires_grad]
    op = HessianLinearOperator(net, loss, plist, [(x, y)], check_deterministic=False)
    out = {"available": True, "torch": torch.__version__, "device": dev}

    def grad():
        net.zero_grad()
        loss(net(x), y).backward()
        return plist[0].grad

    v = torch.randn(op.shape[1], device=dev)
    for _ in range(2):  # warm-up
        grad(), op @ v
    out["grad_s"] = min(timed(grad)[1] for _ in range(3))
    out["hvp_s"] = min(timed(lambda: op @ v)[1] for _ in range(3))
    out["hvp_over_grad"] = out["hvp_s"] / out["grad_s"]
    sp = op.to_scipy(dtype=np.float32)
    count = [0]

    def matvec(u):
        count[0] += 1
        return sp.matvec(u)

    counted = sla.LinearOperator(sp.shape, matvec=matvec, dtype=np.float32)
    vals, out["top5_s"] = timed(lambda: sla.eigsh(counted, k=5, which="LA", tol=1e-4)[0])
    out["top5_max_rel_err"] = _max_rel_err(vals, reference_top)
    out["top5_matvecs"] = count[0]
    tr, out["trace_s"] = timed(lambda: hutchpp_trace(op, num_matvecs))
    out["trace_hutch++"] = float(tr)
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
        "--skip",
        default="",
        help="comma list of sections to skip: "
        "block,density,population,pyhessian,pyhessian_tight,curvlinops",
    )
    parser.add_argument(
        "--partial",
        action="store_true",
        help="print the record so far after each section (a timeout keeps what was measured)",
    )
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    backend = jax.default_backend()
    device = jax.devices()[0].device_kind
    population = args.population or (64 if backend == "gpu" else 8)
    rec = {"size": args.size, "backend": backend, "device": device, "jax": jax.__version__}

    def emit():
        if args.partial:
            print(json.dumps({"partial": True, **rec}), flush=True)

    model, params, batch = make_problem(args.size)
    loss_fn = ll.losses.cross_entropy(model)
    flat, unravel = ravel_pytree(params)
    n = int(flat.size)
    rec["num_params"] = n
    key = jax.random.key(0)

    # Everything takes params and batch as arguments so nothing is baked into the program.
    # The gradient runs at the HVP's precision ("highest"; XLA's default is TF32 on GPUs).
    def grad(f, b):
        with jax.default_matmul_precision("highest"):
            return jax.grad(lambda f: loss_fn(unravel(f), b))(f)

    grad_fn = jax.jit(grad)
    hvp_fn = jax.jit(lambda f, b, v: hvp_operator(loss_fn, unravel(f), b).matvec(v))
    v = jax.random.normal(key, (n,))
    rec["grad_s"] = timeit(grad_fn, flat, batch, reps=args.reps)
    rec["hvp_s"] = timeit(hvp_fn, flat, batch, v, reps=args.reps)
    rec["hvp_over_grad"] = rec["hvp_s"] / rec["grad_s"]
    flops = compiled_flops(hvp_fn, flat, batch, v)
    mm = 4096 if backend == "gpu" else 1024
    a = jax.random.normal(key, (mm, mm))
    matmul = jax.jit(lambda a: jnp.dot(a, a, precision=HIGHEST))
    rec["matmul_flops_per_s"] = 2 * mm**3 / timeit(matmul, a, reps=args.reps)
    if flops:
        rec["hvp_flops"] = float(flops)
        rec["hvp_flops_per_s"] = float(flops) / rec["hvp_s"]
        rec["hvp_fraction_of_matmul_rate"] = rec["hvp_flops_per_s"] / rec["matmul_flops_per_s"]
    emit()

    # One Lanczos step vs one HVP.
    m = min(args.num_steps, n)

    def ll_lanczos(f, b):
        op = hvp_operator(loss_fn, unravel(f), b)
        return spectrum.lanczos(op, num_steps=m, key=key).alpha

    def naive(f, b):
        op = hvp_operator(loss_fn, unravel(f), b)
        return naive_lanczos(op.matvec, n, m, key)

    rec["lanczos_steps"] = m
    lanczos_fn = jax.jit(ll_lanczos).lower(flat, batch).compile()
    rec["lanczos_step_s"] = timeit(lanczos_fn, flat, batch, reps=1) / m
    rec["lanczos_step_over_hvp"] = rec["lanczos_step_s"] / rec["hvp_s"]
    rec["basis_bytes"] = (m + 1) * n * 4
    rec["hvp_bytes"] = compiled_bytes(hvp_fn, flat, batch, v)
    rec["lanczos_bytes"] = compiled_bytes(lanczos_fn)
    rec["peak_bytes_after_lanczos"] = peak_memory()
    naive_fn = jax.jit(naive)  # compiled once: timed per step here, accuracy below
    rec["naive_step_s"] = timeit(naive_fn, flat, batch, reps=1) / m
    rec["naive_step_over_hvp"] = rec["naive_step_s"] / rec["hvp_s"]
    emit()

    # Top-5: reference with a tight tolerance, then timed runs.
    def top5(f, b, tol, block_size=1):
        op = hvp_operator(loss_fn, unravel(f), b)
        return spectrum.eigsh(
            op, 5, key=key, tol=tol, num_steps=40, block_size=block_size, return_eigenvectors=False
        )

    # Reference: a separate, larger basis (120 vectors) converged to the float32 floor.
    ref = jax.jit(
        lambda f, b: spectrum.eigsh(
            hvp_operator(loss_fn, unravel(f), b),
            5,
            key=jax.random.key(7),
            tol=1e-7,
            num_steps=120,
            return_eigenvectors=False,
        )
    )(flat, batch)
    reference = np.asarray(ref.eigenvalues, np.float64)
    rec["reference_top5"] = reference.tolist()
    top5_fn = jax.jit(lambda f, b: top5(f, b, 1e-5))
    rec["top5_s"] = timeit(top5_fn, flat, batch, reps=args.reps)
    out = top5_fn(flat, batch)
    rec["top5_matvecs"] = int(out.num_matvecs)
    rec["top5_max_rel_err"] = float(
        np.max(np.abs(np.asarray(out.eigenvalues) - reference) / np.abs(reference))
    )
    loose_fn = jax.jit(lambda f, b: top5(f, b, 1e-3))
    rec["top5_loose_s"] = timeit(loose_fn, flat, batch, reps=args.reps)
    out = loose_fn(flat, batch)
    rec["top5_loose_matvecs"] = int(out.num_matvecs)
    rec["top5_loose_max_rel_err"] = float(
        np.max(np.abs(np.asarray(out.eigenvalues) - reference) / np.abs(reference))
    )
    if "block" not in skip:  # blocks of 5 (robust to repeated eigenvalues), products vmapped
        block_fn = jax.jit(lambda f, b: top5(f, b, 1e-3, block_size=5))
        rec["top5_block_s"] = timeit(block_fn, flat, batch, reps=args.reps)
        out = block_fn(flat, batch)
        rec["top5_block_matvecs"] = int(out.num_matvecs)
        rec["top5_block_max_rel_err"] = float(
            np.max(np.abs(np.asarray(out.eigenvalues) - reference) / np.abs(reference))
        )
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
    emit()

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
    emit()

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
        emit()

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
        emit()

    for name, section in (("pyhessian", pyhessian_section), ("curvlinops", curvlinops_section)):
        if name not in skip:
            try:
                kw = {"tight": "pyhessian_tight" not in skip} if name == "pyhessian" else {}
                rec[name] = section(params, batch, reference, **kw)
            except Exception as e:  # noqa: BLE001 - a failing peer must not lose the record
                rec[name] = {"available": False, "reason": f"{type(e).__name__}: {e}"}
            emit()

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
            f"{m} steps, basis {mib(rec['basis_bytes'])}; compiled Lanczos "
            f"{mib(rec['lanczos_bytes'])}, HVP {mib(rec['hvp_bytes'])}",
        ),
        ("Lanczos step / HVP (naive)", f"{rec['naive_step_over_hvp']:.2f}x", ""),
        (
            "top-5 lljax eigsh",
            f"{rec['top5_s']:.2f} s",
            f"max rel err {rec['top5_max_rel_err']:.1e}, {rec['top5_matvecs']} matvecs",
        ),
        (
            "top-5 lljax eigsh, tol 1e-3",
            f"{rec['top5_loose_s']:.2f} s",
            f"max rel err {rec['top5_loose_max_rel_err']:.1e}, {rec['top5_loose_matvecs']} matvecs",
        ),
        *(
            [
                (
                    "top-5 eigsh, tol 1e-3, block_size=5",
                    f"{rec['top5_block_s']:.2f} s",
                    f"max rel err {rec['top5_block_max_rel_err']:.1e}, "
                    f"{rec['top5_block_matvecs']} matvecs",
                )
            ]
            if "top5_block_s" in rec
            else []
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
        rows += [
            ("PyHessian top-1", f"{p['top1_s']:.2f} s", f"rel err {p['top1_rel_err']:.1e}"),
            (
                "PyHessian top-5",
                f"{p['top5_s']:.2f} s",
                f"max rel err {p['top5_max_rel_err']:.1e}; lljax eigsh "
                f"{p['top5_s'] / rec['top5_s']:.1f}x faster",
            ),
            (
                "PyHessian trace",
                f"{p['trace_s']:.2f} s",
                "value {:.4g} ± {:.2g}, ".format(*p["trace"]) + f"{p['trace_matvecs']} mv",
            ),
            ("PyHessian density", f"{p['density_s']:.2f} s", "1 probe × 100 steps"),
        ]
    if "top5_tight_s" in rec.get("pyhessian", {}):
        p = rec["pyhessian"]
        rows.append(
            (
                "PyHessian top-5, tol 1e-6",
                f"{p['top5_tight_s']:.2f} s",
                f"max rel err {p['top5_tight_max_rel_err']:.1e}; lljax eigsh "
                f"{p['top5_tight_s'] / rec['top5_loose_s']:.1f}x faster at tol 1e-3",
            )
        )
    if rec.get("curvlinops", {}).get("available"):
        c = rec["curvlinops"]
        rows += [
            (
                "curvlinops HVP / gradient",
                f"{c['hvp_over_grad']:.2f}x",
                f"grad {c['grad_s'] * 1e3:.1f} ms, HVP {c['hvp_s'] * 1e3:.1f} ms",
            ),
            (
                "curvlinops + scipy eigsh top-5",
                f"{c['top5_s']:.2f} s",
                f"max rel err {c['top5_max_rel_err']:.1e}, {c['top5_matvecs']} matvecs",
            ),
            (
                "curvlinops Hutch++ (99 mv)",
                f"{c['trace_s']:.2f} s",
                f"value {c['trace_hutch++']:.4g}",
            ),
        ]
    print_table(f"lljax spectrum benchmark: {args.size}, {n} params, {device} ({backend})", rows)
    print(json.dumps(rec))
    return rec


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
