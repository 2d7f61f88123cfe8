"""GPU check: correctness on the accelerator, then the benchmarks, in one timed script.

Runs, in order (each benchmark in its own process, so a crash or timeout leaves the rest):

1. ``correctness``: on the default device, top-5/bottom-5 eigenvalues of small Hessians (MLP
   with tanh and ReLU, a BatchNorm ResNet; float32 and float64) against ``jnp.linalg.eigh``
   of the dense matrix, five copies of a 17-fold eigenvalue with ``block_size=5``, Hutch++
   trace within 3 standard errors of the exact trace, ``vmap`` over a population equal to a
   loop, and population training equal member by member to separate runs;
2. ``benchmarks/spectrum.py --size small`` (``tiny`` with ``--smoke``; 64-seed population;
   PyHessian and curvlinops if installed);
3. ``benchmarks/ensemble.py`` (64 members, 500 steps, torch peers if installed, scaling; the
   PyTorch eager loop runs 2 members and is scaled to 64);
4. ``benchmarks/llc.py`` (8 chains × 2000 draws; devinterp, if installed, runs 2 of the chains
   one after another and its time is scaled to 8);
5. ``benchmarks/spectrum.py --size large`` (14.7M parameters; no population section);
6. ``benchmarks/resnet.py`` (ResNet-18, batch 512: HVP time, memory and accuracy);

``benchmarks/llc_theory.py`` needs no accelerator and is not part of this run.

Every section's output goes to ``--out`` (one log per section and ``gpu.json``, rewritten
after each section). The sections share ``--budget`` seconds (each also has its own cap), so
the whole run fits one device call; every benchmark prints its record after each part
(``--partial``), so a section cut short still keeps what it measured. The correctness
process allocates GPU memory on demand and skips autotuning (its programs are tiny and their
compile time dominates); the benchmarks run with XLA's defaults. ``--smoke`` shrinks everything for a CPU dry run.

Usage::

    PYTHONPATH=. python benchmarks/gpu.py --out gpu-results [--smoke]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def correctness(smoke: bool) -> dict:
    """Exact references on the default device; returns the measured errors and pass flags."""
    import jax
    import jax.numpy as jnp
    import jax.random as jr
    import numpy as np
    import optax

    import lljax as ll

    out = {"device": jax.devices()[0].device_kind, "backend": jax.default_backend()}
    seconds, t0 = {}, time.perf_counter()
    widths = [12, 16, 16, 4]
    key = jr.key(0)
    for dtype_name in ("float64", "float32"):
        for act in ("resnet", "tanh", "relu"):
            with jax.enable_x64(dtype_name == "float64"):
                dtype = jnp.dtype(dtype_name)
                if act == "resnet":  # convolutions, residual blocks, BatchNorm (batch stats)
                    model = ll.models.resnet(
                        (4, 4, 1), widths[-1], stage_sizes=(1, 1), widths=(2, 3), dtype=dtype
                    )
                    x = jr.normal(jr.key(2), (64, 4, 4, 1), dtype)
                else:
                    model = ll.models.mlp(widths, activation=act, init="lecun", dtype=dtype)
                    x = jr.normal(jr.key(2), (64, widths[0]), dtype)
                params = model.init(jr.key(1))
                y = jr.randint(jr.key(3), (64,), 0, widths[-1])
                loss_fn = ll.losses.cross_entropy(model)
                op = ll.curvature.hessian(loss_fn, params, (x, y))
                exact = np.linalg.eigvalsh(np.asarray(op.dense(), np.float64))
                row = {}
                tol = 1e-8 if dtype_name == "float64" else 1e-4
                for which, ref in (("LA", exact[::-1][:5]), ("SA", exact[:5])):
                    r = jax.jit(
                        lambda p, which=which, tol=tol: ll.spectrum.eigsh(
                            ll.curvature.hessian(loss_fn, p, (x, y)),
                            5,
                            which=which,
                            key=key,
                            tol=tol / 100,
                        )
                    )(params)
                    vals = np.asarray(r.eigenvalues, np.float64)
                    scale = np.abs(exact).max()
                    row[which] = {
                        "max_rel_err": float(np.max(np.abs(vals - ref)) / scale),
                        "max_residual": float(np.max(np.asarray(r.residuals))),
                    }
                row["pass"] = all(row[w]["max_rel_err"] <= tol for w in ("LA", "SA"))
                out[f"eigsh_{act}_{dtype_name}"] = row
                seconds[f"eigsh_{act}_{dtype_name}"] = time.perf_counter() - t0
                t0 = time.perf_counter()
    # A 17-fold zero eigenvalue: block Lanczos (block_size=5) returns five orthonormal copies.
    lam = np.concatenate([np.zeros(17), np.linspace(1e-3, 1.0, 153)])
    q, _ = np.linalg.qr(np.random.default_rng(4).normal(size=(170, 170)))
    a = jnp.asarray((q * lam) @ q.T, jnp.float32)
    r = jax.jit(
        lambda a: ll.spectrum.eigsh(ll.curvature.from_matrix(a), 5, "SA", key=key, block_size=5)
    )(a)
    v = np.asarray(r.eigenvectors, np.float64)
    err = float(np.max(np.abs(np.asarray(r.eigenvalues))))
    orth = float(np.max(np.abs(v.T @ v - np.eye(5))))
    out["eigsh_block_repeated_zero"] = {
        "max_abs_err": err,
        "max_orthogonality_err": orth,
        "pass": err < 1e-5 and orth < 1e-4,
    }
    # Hutch++ trace within 3 standard errors; vmap over a population equals a loop.
    model = ll.models.mlp(widths, activation="tanh")
    loss_fn = ll.losses.cross_entropy(model)
    x = jr.normal(jr.key(2), (64, widths[0]))
    y = jr.randint(jr.key(3), (64,), 0, widths[-1])
    params = model.init(jr.key(1))
    op = ll.curvature.hessian(loss_fn, params, (x, y))
    exact_trace = float(jnp.trace(op.dense()))
    t = ll.spectrum.trace(op, key=key, num_probes=60, method="hutch++")
    out["hutchpp_trace"] = {
        "exact": exact_trace,
        "estimate": float(t.value),
        "stderr": float(t.stderr),
        "pass": abs(float(t.value) - exact_trace) <= 3 * float(t.stderr) + 1e-5,
    }
    pop = jax.vmap(model.init)(jr.split(jr.key(4), 8))

    def top(p):
        return ll.spectrum.eigsh(ll.curvature.hessian(loss_fn, p, (x, y)), 3, key=key).eigenvalues

    many = np.asarray(jax.jit(jax.vmap(top))(pop))
    loop = np.stack(
        [np.asarray(jax.jit(top)(jax.tree.map(lambda a, i=i: a[i], pop))) for i in range(8)]
    )
    err = float(np.max(np.abs(many - loop)) / np.abs(loop).max())
    out["vmap_equals_loop"] = {"max_rel_err": err, "pass": err < 1e-4}
    # Population training: members 0-1 of a 4-member run equal a 2-member run.
    data = ll.data.gaussian_mixture(key=jr.key(5), num_train=256, num_classes=4, dim=widths[0])
    kw = dict(steps=50 if smoke else 200, batch_size=32)
    big = ll.ensemble.train(
        model, loss_fn, optax.sgd(0.1), data, key=jr.key(6), num_members=4, **kw
    )
    small = ll.ensemble.train(
        model, loss_fn, optax.sgd(0.1), data, key=jr.key(6), num_members=2, **kw
    )
    diff = max(
        float(jnp.max(jnp.abs(a[:2] - b)))
        for a, b in zip(jax.tree.leaves(big.params), jax.tree.leaves(small.params), strict=True)
    )
    out["members_independent"] = {"max_abs_diff": diff, "pass": diff < 1e-4}
    seconds["trace_vmap_training"] = time.perf_counter() - t0
    out["all_pass"] = all(v["pass"] for v in out.values() if isinstance(v, dict))
    out["seconds"] = seconds
    return out


# Set in this process only, before JAX starts; the benchmark processes get XLA's defaults.
_CORRECTNESS_ENV = {
    "XLA_PYTHON_CLIENT_PREALLOCATE": "false",
    "XLA_FLAGS": "--xla_gpu_autotune_level=0",
}


def _section(name: str, argv: list[str], out_dir: Path, timeout: float) -> dict:
    """Runs one benchmark script in a fresh process; returns its last JSON record."""
    log = out_dir / f"{name}.log"
    t0 = time.perf_counter()
    env = {k: v for k, v in os.environ.items() if _CORRECTNESS_ENV.get(k) != v}
    env["PYTHONUNBUFFERED"] = "1"
    try:
        proc = subprocess.run(
            [sys.executable, *argv], capture_output=True, text=True, timeout=timeout, env=env
        )
        stdout, stderr, rc = proc.stdout, proc.stderr, proc.returncode
    except subprocess.TimeoutExpired as e:  # its output so far comes back as bytes
        stdout, stderr = (
            s.decode(errors="replace") if isinstance(s, bytes) else (s or "")
            for s in (e.stdout, e.stderr)
        )
        rc = "timeout"
    text = stdout + stderr
    log.write_text(text)
    record = None
    for line in reversed(stdout.splitlines()):  # the records are on stdout
        if line.startswith("{"):
            try:
                record = json.loads(line)
                break
            except json.JSONDecodeError:
                continue
    table = "\n".join(line for line in text.splitlines() if not line.startswith("{"))
    print(f"\n===== {name} (rc {rc}, {time.perf_counter() - t0:.0f} s)\n{table[-4000:]}")
    return {"rc": rc, "seconds": time.perf_counter() - t0, "record": record}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", default="gpu-results")
    p.add_argument("--smoke", action="store_true", help="tiny settings (CPU dry run)")
    p.add_argument("--skip", default="", help="comma list of sections to skip")
    p.add_argument(
        "--budget",
        type=float,
        default=None,
        help="seconds for all benchmark sections together (default 420; none with --smoke)",
    )
    a = p.parse_args(argv)
    out_dir = Path(a.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    skip = set(filter(None, a.skip.split(",")))
    budget = a.budget or (float("inf") if a.smoke else 420.0)
    results = {}
    t0 = time.perf_counter()
    for k, v in _CORRECTNESS_ENV.items():
        os.environ.setdefault(k, v)
    if "correctness" not in skip:
        results["correctness"] = correctness(a.smoke)
        print(json.dumps(results["correctness"], indent=1))
    if a.smoke:
        sections = {
            "spectrum_small": (
                [
                    "spectrum.py",
                    "--size",
                    "tiny",
                    "--num-steps",
                    "20",
                    "--skip",
                    "pyhessian_tight",
                    "--population",
                    "4",
                    "--reps",
                    "1",
                    "--partial",
                ],
                600,
            ),
            "ensemble": (
                [
                    "ensemble.py",
                    "--quick",
                    "--no-scaling",
                    "--torch-loop-members",
                    "2",
                    "--partial",
                ],
                600,
            ),
            "llc": (["llc.py", "--quick", "--devinterp-chains", "4", "--partial"], 600),
            "resnet": (
                ["resnet.py", "--batch", "8", "--reps", "1", "--num-steps", "2", "--partial"],
                600,
            ),
        }
    else:  # in order of the goals they measure; (argv, cap in seconds)
        sections = {
            "spectrum_small": (
                [
                    "spectrum.py",
                    "--size",
                    "small",
                    "--population",
                    "64",
                    "--reps",
                    "2",
                    "--partial",
                ],
                150,
            ),
            "ensemble": (
                ["ensemble.py", "--torch-loop-members", "2", "--repeats", "2", "--partial"],
                120,
            ),
            "llc": (["llc.py", "--devinterp-chains", "2", "--partial"], 100),
            "spectrum_large": (
                [
                    "spectrum.py",
                    "--size",
                    "large",
                    "--skip",
                    "population,pyhessian_tight,density,block",
                    "--reps",
                    "2",
                    "--partial",
                ],
                120,
            ),
            "resnet": (["resnet.py", "--reps", "2", "--partial"], 90),
        }
    t_sections = time.perf_counter()
    for name, (argv_, timeout) in sections.items():
        if name in skip:
            continue
        left = budget - (time.perf_counter() - t_sections)
        if left < 20:
            results[name] = {"rc": "skipped: --budget spent"}
            continue
        argv_ = [str(HERE / argv_[0]), *argv_[1:]]
        results[name] = _section(name, argv_, out_dir, min(timeout, left))
        (out_dir / "gpu.json").write_text(json.dumps(results, indent=1, default=str))
    results["total_seconds"] = time.perf_counter() - t0
    (out_dir / "gpu.json").write_text(json.dumps(results, indent=1, default=str))
    print(f"\ntotal {results['total_seconds']:.0f} s; written to {out_dir}/gpu.json")
    # A benchmark that crashed or timed out fails the run too (a section the budget skipped
    # does not): a GPU run must not look green when a section broke on that JAX version.
    failed = [
        name
        for name, r in results.items()
        if isinstance(r, dict) and "rc" in r and r["rc"] not in (0, "skipped: --budget spent")
    ]
    if failed:
        print(f"sections that failed: {', '.join(failed)}")
    return 0 if results.get("correctness", {}).get("all_pass", True) and not failed else 1


if __name__ == "__main__":
    sys.exit(main())
