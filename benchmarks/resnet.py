"""Hessian-vector products on ResNet-18: time, memory and accuracy against PyTorch peers.

The problem curvlinops benchmarks: torchvision's ResNet-18 layout
(``lljax.models.resnet(stem="imagenet")``: 7x7 stride-2 stem and max pool, BatchNorm with
batch statistics, 11,181,642 parameters at 10 classes) on a CIFAR-shaped batch of 512
random images, cross-entropy, float32 at ``precision="highest"``; the same weights and data
in every tool. Measures:

* gradient and Hessian-vector product (HVP) time, their ratio, XLA's FLOP count of each
  and the HVP's achieved FLOP/s;
* memory of the compiled gradient and HVP (XLA's buffer assignment: arguments, temporaries
  and outputs), exact for an XLA executable on any backend;
* one Lanczos step (full reorthogonalisation) against one HVP;
* the same network in PyTorch, if installed: gradient, torch's forward-over-reverse HVP
  (``torch.func.jvp`` of ``grad``) and curvlinops' ``HessianLinearOperator``; times, and
  peak memory on a CUDA device;
* accuracy, float64, batch of 4: each tool's ``Hv`` against a central difference of
  gradients (step 1e-9, small enough that no ReLU or max-pool switches).

Usage::

    python benchmarks/resnet.py                       # batch 512
    python benchmarks/resnet.py --batch 64 --reps 1   # a quicker CPU run

Prints a table and, last, one JSON line with every number.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree

import lljax as ll
from lljax import spectrum

if __package__ != "benchmarks":  # run as a script: benchmarks/ is on sys.path, not the root
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from benchmarks.spectrum import (  # noqa: E402
    _torch_fp32,
    _torch_timer,
    compiled_bytes,
    compiled_flops,
    mib,
    print_table,
    timeit,
)


def make_problem(batch, stem="imagenet", seed=0, dtype=jnp.float32):
    model = ll.models.resnet(stem=stem, dtype=dtype)
    key = jax.random.key(seed)
    params = model.init(key)
    x = jax.random.normal(jax.random.fold_in(key, 1), (batch, 32, 32, 3), dtype)
    y = jax.random.randint(jax.random.fold_in(key, 2), (batch,), 0, 10)
    return model, params, (x, y)


# ----------------------------------------------------------------------------- PyTorch


def torch_resnet(params):
    """The lljax ResNet (layout of ``lljax.models.resnet``) and its weights as a torch module.

    BatchNorm keeps no running statistics, so it always normalises by the batch's, as the
    lljax model does without ``stats``. Params in another pytree of the same structure (a
    direction ``v``) give that pytree in torch's parameter layout.
    """
    import torch
    from torch import nn

    def load(t, a):
        with torch.no_grad():
            t.copy_(torch.from_numpy(np.array(a, copy=True, order="C")))

    def conv(p, stride):
        k = np.asarray(p["kernel"])  # (kh, kw, in, out) -> (out, in, kh, kw)
        c = nn.Conv2d(k.shape[2], k.shape[3], k.shape[0], stride, k.shape[0] // 2, bias=False)
        load(c.weight, k.transpose(3, 2, 0, 1))
        return c

    def norm(p):
        b = nn.BatchNorm2d(np.asarray(p["scale"]).shape[0], track_running_stats=False)
        load(b.weight, np.asarray(p["scale"]))
        load(b.bias, np.asarray(p["bias"]))
        return b

    class Block(nn.Module):
        def __init__(self, p, stride):
            super().__init__()
            self.branch = nn.Sequential(
                conv(p["conv_0"], stride), norm(p["norm_0"]), nn.ReLU(),
                conv(p["conv_1"], 1), norm(p["norm_1"]),
            )  # fmt: skip
            self.shortcut = nn.Identity()
            if "shortcut_conv" in p:
                self.shortcut = nn.Sequential(
                    conv(p["shortcut_conv"], stride), norm(p["shortcut_norm"])
                )

        def forward(self, h):
            return torch.relu(self.shortcut(h) + self.branch(h))

    imagenet = np.asarray(params["stem_conv"]["kernel"]).shape[0] == 7
    layers = [conv(params["stem_conv"], 2 if imagenet else 1), norm(params["stem_norm"]), nn.ReLU()]
    if imagenet:
        layers.append(nn.MaxPool2d(3, 2, 1))
    stages = sorted({k.split("_")[0] for k in params if k.startswith("stage")})
    for i, stage in enumerate(stages):
        blocks = sorted(k for k in params if k.startswith(stage + "_"))
        for j, name in enumerate(blocks):
            layers.append(Block(params[name], 2 if (i > 0 and j == 0) else 1))
    head = nn.Linear(*np.asarray(params["head"]["kernel"]).shape)
    load(head.weight, np.asarray(params["head"]["kernel"]).T)
    load(head.bias, np.asarray(params["head"]["bias"]))
    return nn.Sequential(*layers, nn.AdaptiveAvgPool2d(1), nn.Flatten(), head)


def _torch_flat(torch, net):
    return torch.cat([p.detach().reshape(-1) for p in net.parameters()])


def torch_section(params, batch, reps):
    """Gradient, torch.func HVP and curvlinops HVP on the same network, weights and batch."""
    try:
        import torch
        from torch.func import functional_call, grad, jvp
    except Exception as e:  # noqa: BLE001
        return {"available": False, "reason": f"{type(e).__name__}: {e}"}
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    _torch_fp32(torch)  # cuDNN convolutions default to TF32; lljax runs at "highest"
    net = torch_resnet(params).to(dev)
    v_tree = jax.tree.map(lambda a: jax.random.normal(jax.random.key(3), a.shape, a.dtype), params)
    v = _torch_flat(torch, torch_resnet(v_tree)).to(dev)
    x = torch.from_numpy(np.asarray(batch[0]).transpose(0, 3, 1, 2).copy()).to(dev)
    y = torch.from_numpy(np.asarray(batch[1]).astype(np.int64)).to(dev)
    loss = torch.nn.CrossEntropyLoss()
    names = [n for n, _ in net.named_parameters()]
    shapes = [p.shape for p in net.parameters()]
    sizes = [p.numel() for p in net.parameters()]
    timed = _torch_timer(torch, dev)
    out = {"available": True, "torch": torch.__version__, "device": dev}

    def measure(name, fn):
        fn()  # warm-up
        if dev == "cuda":
            torch.cuda.reset_peak_memory_stats()
        out[f"{name}_s"] = min(timed(fn)[1] for _ in range(reps))
        if dev == "cuda":
            out[f"{name}_peak_bytes"] = int(torch.cuda.max_memory_allocated())

    def gradient():
        net.zero_grad(set_to_none=True)
        loss(net(x), y).backward()

    def f(*ps):
        return loss(functional_call(net, dict(zip(names, ps, strict=True)), (x,)), y)

    ps = tuple(p.detach() for p in net.parameters())
    tangents = tuple(t.reshape(s) for t, s in zip(torch.split(v, sizes), shapes, strict=True))
    argnums = tuple(range(len(ps)))

    def func_hvp():
        return jvp(grad(f, argnums=argnums), ps, tangents)[1]

    measure("grad", gradient)
    measure("torch_func_hvp", func_hvp)
    out["torch_func_hvp_over_grad"] = out["torch_func_hvp_s"] / out["grad_s"]
    try:
        from curvlinops import HessianLinearOperator

        op = HessianLinearOperator(
            net, loss, list(net.parameters()), [(x, y)], check_deterministic=False
        )
        measure("curvlinops_hvp", lambda: op @ v)
        out["curvlinops_hvp_over_grad"] = out["curvlinops_hvp_s"] / out["grad_s"]
    except Exception as e:  # noqa: BLE001
        out["curvlinops"] = f"{type(e).__name__}: {e}"
    return out


def accuracy_section(params, batch_size=4, eps=1e-9):
    """float64: each tool's Hv against a central difference of lljax gradients."""
    out = {}
    with jax.enable_x64(True):
        p64 = jax.tree.map(lambda a: jnp.asarray(a, jnp.float64), params)
        model, _, (x, y) = make_problem(batch_size, dtype=jnp.float64)
        loss_fn = ll.losses.cross_entropy(model)
        flat, unravel = ravel_pytree(p64)
        v_tree = jax.tree.map(lambda a: jax.random.normal(jax.random.key(3), a.shape, a.dtype), p64)
        v = ravel_pytree(v_tree)[0]
        g = jax.jit(jax.grad(lambda f: loss_fn(unravel(f), (x, y))))
        fd = np.asarray((g(flat + eps * v) - g(flat - eps * v)) / (2 * eps))
        hv = jax.jit(lambda f: ll.curvature.hessian(loss_fn, unravel(f), (x, y)).matvec(v))(flat)
        out["fd_vHv"] = float(np.asarray(v) @ fd)
        out["lljax_rel_err"] = float(np.linalg.norm(np.asarray(hv) - fd) / np.linalg.norm(fd))
        out["lljax_vHv"] = float(np.asarray(v) @ np.asarray(hv))
        try:
            import torch
            from torch.func import functional_call, grad, jvp
        except Exception:  # noqa: BLE001
            return out
        net = torch_resnet(p64).double()
        vt = _torch_flat(torch, torch_resnet(v_tree).double())
        fdt = _torch_flat(torch, torch_resnet(unravel(jnp.asarray(fd))).double()).numpy()
        xt = torch.from_numpy(np.asarray(x).transpose(0, 3, 1, 2).copy())
        yt = torch.from_numpy(np.asarray(y).astype(np.int64))
        loss = torch.nn.CrossEntropyLoss()
        names = [n for n, _ in net.named_parameters()]
        ps = tuple(p.detach() for p in net.parameters())
        tangents = tuple(
            t.reshape(p.shape)
            for t, p in zip(torch.split(vt, [p.numel() for p in ps]), ps, strict=True)
        )

        def f(*qs):
            return loss(functional_call(net, dict(zip(names, qs, strict=True)), (xt,)), yt)

        hvt = torch.cat(
            [h.reshape(-1) for h in jvp(grad(f, argnums=tuple(range(len(ps)))), ps, tangents)[1]]
        )
        results = {"torch_func": hvt.numpy()}
        try:
            from curvlinops import HessianLinearOperator

            op = HessianLinearOperator(
                net, loss, list(net.parameters()), [(xt, yt)], check_deterministic=False
            )
            results["curvlinops"] = (op @ vt).numpy()
        except Exception as e:  # noqa: BLE001
            out["curvlinops"] = f"{type(e).__name__}: {e}"
        for name, h in results.items():
            out[f"{name}_rel_err"] = float(np.linalg.norm(h - fdt) / np.linalg.norm(fdt))
            out[f"{name}_vHv"] = float(vt.numpy() @ h)
    return out


# ----------------------------------------------------------------------------- main


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument(
        "--num-steps",
        type=int,
        default=None,
        help="Lanczos steps timed (default 90 on GPU, 8 on CPU)",
    )
    parser.add_argument("--skip", default="", help="comma list of: torch,accuracy,lanczos")
    parser.add_argument(
        "--conv",
        choices=("lljax", "lax"),
        default="lljax",
        help="the models' convolution (default), or plain lax.conv_general_dilated and its "
        "autodiff rules, for comparison",
    )
    parser.add_argument(
        "--partial",
        action="store_true",
        help="print the record so far after each part (a timeout keeps what was measured)",
    )
    args = parser.parse_args(argv)
    skip = set(filter(None, args.skip.split(",")))
    if args.conv == "lax":
        ll.models.conv_general_dilated = jax.lax.conv_general_dilated
    backend = jax.default_backend()
    device = jax.devices()[0].device_kind
    rec = {"backend": backend, "device": device, "jax": jax.__version__, "batch": args.batch}
    rec["conv"] = args.conv

    def emit():
        if args.partial:
            print(json.dumps({"partial": True, **rec}), flush=True)

    model, params, batch = make_problem(args.batch)
    loss_fn = ll.losses.cross_entropy(model)
    flat, unravel = ravel_pytree(params)
    n = int(flat.size)
    rec["num_params"] = n
    key = jax.random.key(0)
    v = jax.random.normal(key, (n,))

    # Params and batch are arguments, so nothing is baked into (and constant-folded in) the program.
    # The gradient runs at the HVP's precision ("highest"; XLA's default is TF32 on GPUs).
    def grad(f, b):
        with jax.default_matmul_precision("highest"):
            return jax.grad(lambda f: loss_fn(unravel(f), b))(f)

    grad_fn = jax.jit(grad)
    hvp_fn = jax.jit(lambda f, b, v: ll.curvature.hessian(loss_fn, unravel(f), b).matvec(v))
    rec["grad_s"] = timeit(grad_fn, flat, batch, reps=args.reps)
    rec["hvp_s"] = timeit(hvp_fn, flat, batch, v, reps=args.reps)
    rec["hvp_over_grad"] = rec["hvp_s"] / rec["grad_s"]
    rec["grad_flops"] = compiled_flops(grad_fn, flat, batch)
    rec["hvp_flops"] = compiled_flops(hvp_fn, flat, batch, v)
    if rec["grad_flops"] and rec["hvp_flops"]:
        rec["hvp_over_grad_flops"] = rec["hvp_flops"] / rec["grad_flops"]
        rec["hvp_flops_per_s"] = rec["hvp_flops"] / rec["hvp_s"]
    rec["grad_bytes"] = compiled_bytes(grad_fn, flat, batch)
    rec["hvp_bytes"] = compiled_bytes(hvp_fn, flat, batch, v)
    emit()

    if "lanczos" not in skip:
        m = args.num_steps or (90 if backend == "gpu" else 8)

        def lanczos(f, b):
            op = ll.curvature.hessian(loss_fn, unravel(f), b)
            return spectrum.lanczos(op, num_steps=m, key=key).alpha

        lanczos_fn = jax.jit(lanczos).lower(flat, batch).compile()
        rec["lanczos_steps"] = m
        rec["lanczos_step_s"] = timeit(lanczos_fn, flat, batch, reps=1) / m
        rec["lanczos_step_over_hvp"] = rec["lanczos_step_s"] / rec["hvp_s"]
        rec["lanczos_bytes"] = compiled_bytes(lanczos_fn)
        rec["basis_bytes"] = (m + 1) * n * 4
        emit()

    if "torch" not in skip:
        rec["torch"] = torch_section(params, batch, args.reps)
        emit()
    if "accuracy" not in skip:
        rec["accuracy"] = accuracy_section(params)

    rows = [
        ("gradient", f"{rec['grad_s'] * 1e3:.1f} ms", f"compiled {mib(rec['grad_bytes'])}"),
        ("HVP", f"{rec['hvp_s'] * 1e3:.1f} ms", f"compiled {mib(rec['hvp_bytes'])}"),
        (
            "HVP / gradient",
            f"{rec['hvp_over_grad']:.2f}x",
            f"FLOP ratio {rec.get('hvp_over_grad_flops', float('nan')):.2f}, "
            f"HVP {rec.get('hvp_flops_per_s', float('nan')) / 1e9:.1f} GFLOP/s",
        ),
    ]
    if "lanczos_step_s" in rec:
        rows.append(
            (
                "Lanczos step / HVP",
                f"{rec['lanczos_step_over_hvp']:.2f}x",
                f"{rec['lanczos_steps']} steps, basis {mib(rec['basis_bytes'])}, "
                f"compiled {mib(rec['lanczos_bytes'])}",
            )
        )
    t = rec.get("torch", {})
    if t.get("available"):
        peak = lambda k: f", peak {mib(t[k])}" if k in t else ""
        rows.append(
            (
                "torch gradient",
                f"{t['grad_s'] * 1e3:.1f} ms",
                f"{t['device']}{peak('grad_peak_bytes')}",
            )
        )
        rows.append(
            (
                "torch.func HVP / gradient",
                f"{t['torch_func_hvp_over_grad']:.2f}x",
                f"{t['torch_func_hvp_s'] * 1e3:.1f} ms{peak('torch_func_hvp_peak_bytes')}",
            )
        )
        if "curvlinops_hvp_s" in t:
            rows.append(
                (
                    "curvlinops HVP / gradient",
                    f"{t['curvlinops_hvp_over_grad']:.2f}x",
                    f"{t['curvlinops_hvp_s'] * 1e3:.1f} ms{peak('curvlinops_hvp_peak_bytes')}; "
                    f"lljax / curvlinops HVP time {rec['hvp_s'] / t['curvlinops_hvp_s']:.2f}",
                )
            )
    for name, acc in rec.get("accuracy", {}).items():
        if name.endswith("_rel_err"):
            tool = name[: -len("_rel_err")]
            rows.append(
                (
                    f"{tool} Hv vs finite diff. (f64)",
                    f"{acc:.1e}",
                    f"vHv {rec['accuracy'][tool + '_vHv']:.8g} (diff. {rec['accuracy']['fd_vHv']:.8g})",
                )
            )
    print_table(
        f"lljax ResNet-18 HVP benchmark: batch {args.batch}, {n} params, {args.conv} "
        f"convolutions, {device} ({backend})",
        rows,
    )
    print(json.dumps(rec))
    return rec


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
