"""Tests for lljax.models: shapes, dtypes, populations, pure BatchNorm, residual rules."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import lljax as ll

KEY = jax.random.key(0)


def _x(shape, seed=1, dtype=jnp.float32):
    return jax.random.normal(jax.random.key(seed), shape, dtype)


def _builders(dtype):
    """Small instances of every builder, each with an input batch."""
    tokens = jnp.array([[1, 2, 7], [3, 0, 7], [6, 5, 7]])
    return {
        "mlp": (ll.models.mlp([6, 8, 3], norm="layer", dtype=dtype), _x((4, 6), dtype=dtype)),
        "mlp_bn": (ll.models.mlp([6, 8, 3], norm="batch", dtype=dtype), _x((4, 6), dtype=dtype)),
        "resmlp": (
            ll.models.resmlp(8, 2, in_dim=6, out_dim=3, norm="layer", dtype=dtype),
            _x((4, 6), dtype=dtype),
        ),
        "cnn1d": (ll.models.cnn(dtype=dtype), _x((4, 40), dtype=dtype)),
        "cnn2d": (
            ll.models.cnn(
                (6, 6, 2),
                3,
                channels=(4, 4),
                kernel_size=3,
                strides=1,
                pool="avg",
                norm="batch",
                dtype=dtype,
            ),
            _x((4, 6, 6, 2), dtype=dtype),
        ),
        "transformer": (
            ll.models.transformer(
                8, 3, num_classes=7, width=8, num_heads=2, num_layers=2, dtype=dtype
            ),
            tokens,
        ),
        "deep_linear": (ll.models.deep_linear([6, 5, 3], dtype=dtype), _x((4, 6), dtype=dtype)),
        "resnet": (
            ll.models.resnet((6, 6, 2), 3, stage_sizes=(1, 1), widths=(4, 6), dtype=dtype),
            _x((4, 6, 6, 2), dtype=dtype),
        ),
    }


NAMES = list(_builders(jnp.float32))


@pytest.mark.parametrize("name", NAMES)
def test_float32_shapes_and_population(name):
    model, x = _builders(jnp.float32)[name]
    init, apply = jax.jit(model.init), jax.jit(model.apply)
    keys = jax.random.split(KEY, 3)
    params = init(keys[1])
    out = apply(params, x)
    assert out.dtype == jnp.float32
    assert out.shape == (x.shape[0], {"cnn1d": 10, "transformer": 7}.get(name, 3))
    assert all(p.dtype == jnp.float32 for p in jax.tree.leaves(params))
    # A population is a vmapped init: member i is init(keys[i]); members are distinct draws.
    pop = jax.jit(jax.vmap(model.init))(keys)
    member = jax.tree.map(lambda p: p[1], pop)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6), member, params)
    kernels = [leaf for leaf in jax.tree.leaves(pop) if leaf.ndim >= 3]
    assert kernels and all(not np.allclose(k[0], k[1]) for k in kernels)
    batched = jax.jit(jax.vmap(model.apply, in_axes=(0, None)))(pop, x)
    np.testing.assert_allclose(batched[1], out, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", NAMES)
def test_float64(x64, name):
    model, x = _builders(jnp.float64)[name]
    params = jax.jit(model.init)(KEY)
    assert all(p.dtype == jnp.float64 for p in jax.tree.leaves(params))
    out = jax.jit(model.apply)(params, x)
    assert out.dtype == jnp.float64
    assert bool(jnp.all(jnp.isfinite(out)))


def test_output_shapes():
    assert ll.models.cnn().apply(ll.models.cnn().init(KEY), _x((5, 40))).shape == (5, 10)
    tr = ll.models.transformer(8, 3, num_classes=7, width=8, num_heads=2, readout="all")
    assert tr.apply(tr.init(KEY), jnp.zeros((2, 3), jnp.int32)).shape == (2, 3, 7)
    img = ll.models.cnn((8, 8, 1), 4, channels=(3,), kernel_size=3, global_pool=True, hidden=(5,))
    assert img.apply(img.init(KEY), _x((2, 8, 8, 1))).shape == (2, 4)
    gray = ll.models.cnn((8, 8), 4, channels=(3,), kernel_size=3, spatial_dims=2)
    assert gray.init(KEY)["Conv_0"]["kernel"].shape == (3, 3, 1, 3)


def test_mnist1d_cnn_matches_paper_baseline():
    # Greydanus & Kobak's ConvBase: 3 conv layers (25 ch; kernels 5, 3, 3; stride 2;
    # padding 1) then Linear(125, 10): 5210 parameters.
    params = ll.models.cnn().init(KEY)
    assert sum(p.size for p in jax.tree.leaves(params)) == 5210
    assert params["Conv_0"]["kernel"].shape == (5, 1, 25)
    assert params["Dense_0"]["kernel"].shape == (125, 10)


def test_cnn_1d_matches_direct_convolution():
    model = ll.models.cnn(
        (9,), 2, channels=(3,), kernel_size=3, strides=2, padding=1, activation="identity"
    )
    params = model.init(KEY)
    x = np.asarray(_x((2, 9)))
    w = np.asarray(params["Conv_0"]["kernel"])  # (3, 1, 3)
    b = np.asarray(params["Conv_0"]["bias"])
    xp = np.pad(x, ((0, 0), (1, 1)))
    conv = np.stack([xp[:, 2 * t : 2 * t + 3] @ w[:, 0, :] + b for t in range(5)], axis=1)
    dense = params["Dense_0"]
    expected = conv.reshape(2, -1) @ np.asarray(dense["kernel"]) + np.asarray(dense["bias"])
    np.testing.assert_allclose(model.apply(params, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "model, x",
    [
        (ll.models.mlp([5, 7, 3], norm="batch"), _x((16, 5))),
        (
            ll.models.resmlp(6, 2, in_dim=5, out_dim=3, norm="batch", norm_position="post"),
            _x((16, 5)),
        ),
        (ll.models.cnn((10,), 3, channels=(4,), kernel_size=3, norm="batch"), _x((16, 10))),
        (ll.models.resnet((4, 4, 1), 3, stage_sizes=(1, 1), widths=(2, 3)), _x((16, 4, 4, 1))),
    ],
    ids=["mlp", "resmlp", "cnn", "resnet"],
)
def test_batchnorm_batch_and_population_statistics(model, x):
    params = model.init(KEY)
    stats = model.stats(params, x)
    assert jax.tree.leaves(stats)
    # Population statistics computed on the same batch reproduce batch-statistics mode.
    np.testing.assert_allclose(
        model.apply(params, x, stats=stats), model.apply(params, x), rtol=1e-5, atol=1e-5
    )
    np.testing.assert_allclose(
        jax.jit(model.apply)(params, x, stats=stats), model.apply(params, x), rtol=1e-5, atol=1e-5
    )
    # On another batch the two modes differ: with fixed statistics each example is processed
    # on its own, so evaluating examples one at a time matches evaluating the batch.
    x2 = 3.0 + _x((4, *x.shape[1:]), seed=7)
    fixed = model.apply(params, x2, stats=stats)
    one_by_one = jnp.concatenate(
        [model.apply(params, x2[i : i + 1], stats=stats) for i in range(4)]
    )
    np.testing.assert_allclose(fixed, one_by_one, rtol=1e-5, atol=1e-5)
    assert not np.allclose(fixed, model.apply(params, x2), atol=1e-3)


def test_batchnorm_population_stats_are_data_statistics():
    model = ll.models.mlp([5, 7, 3], norm="batch", bias=False)
    params = model.init(KEY)
    x = _x((32, 5))
    stats = model.stats(params, x)
    h = x @ params["Dense_0"]["kernel"]
    np.testing.assert_allclose(stats["BatchNorm_0"]["mean"], h.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stats["BatchNorm_0"]["var"], h.var(0), rtol=1e-5, atol=1e-6)


def test_resmlp_zero_branch_is_identity_plus_skip():
    x = _x((8, 5))
    for norm in (None, "layer"):
        model = ll.models.resmlp(16, 4, in_dim=5, out_dim=3, init="zero_branch", norm=norm)
        params = model.init(KEY)
        for i in range(4):
            assert params[f"block_{i}"]["branch_scale"].shape == ()
            assert float(params[f"block_{i}"]["branch_scale"]) == 0.0
        p = jax.tree.map(np.asarray, params)
        h = np.asarray(x) @ p["embed"]["kernel"] + p["embed"]["bias"]
        if norm == "layer":
            h = (h - h.mean(-1, keepdims=True)) / np.sqrt(h.var(-1, keepdims=True) + 1e-5)
            h = h * p["norm_out"]["scale"] + p["norm_out"]["bias"]
        expected = h @ p["head"]["kernel"] + p["head"]["bias"]
        np.testing.assert_allclose(model.apply(params, x), expected, rtol=1e-5, atol=1e-5)
    # The scalars are parameters the loss can move.
    loss = lambda p: jnp.sum(model.apply(p, x) ** 2)
    assert float(jnp.abs(jax.grad(loss)(params)["block_0"]["branch_scale"])) > 0
    # "learnable" on a plain scheme is the same rule.
    same = ll.models.resmlp(16, 4, in_dim=5, out_dim=3, branch_scale="learnable", norm="layer")
    np.testing.assert_allclose(same.apply(same.init(KEY), x), model.apply(params, x), rtol=1e-6)


@pytest.mark.parametrize("m", [2, 3])
def test_resmlp_fixup(m):
    depth, width = 16, 128
    # A base with σ_b² > 0 (the kernels are He's): the branches' last biases must start at
    # zero too, else each branch adds a constant and no block is the identity at init.
    init = "fixup(gaussian(2.0,0.05))"
    model = ll.models.resmlp(width, depth, in_dim=5, out_dim=3, init=init, branch_layers=m)
    params = model.init(KEY)
    assert not np.any(params["head"]["kernel"]) and not np.any(params["head"]["bias"])
    var = []
    for i in range(depth):
        block = params[f"block_{i}"]
        assert not np.any(block[f"Dense_{m - 1}"]["kernel"])  # last branch layer at zero
        assert np.any(block["Dense_0"]["bias"])  # other biases ~ N(0, σ_b²)
        var += [block[f"Dense_{j}"]["kernel"].var() for j in range(m - 1)]
    # Every branch is exactly zero on data, so every block is the identity.
    outs = ll.models.layer_outputs(model, params, _x((4, 5)))
    branch_out = [outs[f"block_{i}/Dense_{m - 1}"] for i in range(depth)]
    assert not np.any(np.stack(branch_out))
    # Other branch layers: He variance 2/width times L^(-2/(2m-2)); sample variance SE is
    # sqrt(2/n) relative with n = 16 * (m-1) * width^2 entries.
    expected = 2.0 / width * depth ** (-1.0 / (m - 1))
    assert abs(float(np.mean(var)) / expected - 1) < 4 * math.sqrt(2 / (len(var) * width**2))
    assert not np.any(model.apply(params, _x((4, 5))))  # the classifier starts at zero


def _conv(x, p, stride, pad):
    y = jax.lax.conv_general_dilated(
        x, p["kernel"], (stride, stride), [(pad, pad)] * 2,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), precision="highest",
    )  # fmt: skip
    return y + p["bias"].reshape(1, 1, 1, -1) if "bias" in p else y


def test_resnet_matches_direct_computation():
    # Without norms: stem, then per block relu(shortcut(h) + conv1(relu(conv0(h)))), the
    # first block of stage 1 strided with a 1x1 projection shortcut; mean pool; linear head.
    model = ll.models.resnet((8, 8, 2), 3, stage_sizes=(1, 2), widths=(3, 4), norm=None)
    p = model.init(KEY)
    x = _x((2, 8, 8, 2))
    h = jax.nn.relu(_conv(x, p["stem_conv"], 1, 1))
    for name, stride in [("stage0_block0", 1), ("stage1_block0", 2), ("stage1_block1", 1)]:
        b = p[name]
        z = _conv(jax.nn.relu(_conv(h, b["conv_0"], stride, 1)), b["conv_1"], 1, 1)
        short = _conv(h, b["shortcut_conv"], stride, 0) if "shortcut_conv" in b else h
        h = jax.nn.relu(short + z)
    assert h.shape == (2, 4, 4, 4) and "shortcut_conv" not in p["stage1_block1"]
    expected = h.mean((1, 2)) @ p["head"]["kernel"] + p["head"]["bias"][None]
    np.testing.assert_allclose(model.apply(p, x), expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(
    "spatial, kernel, stride, padding",
    [((13,), 5, 2, "SAME"), ((9, 8), 3, 1, ((1, 1), (1, 1))), ((9, 9), 5, 2, ((2, 1), (2, 2)))],
)
def test_conv_derivatives_equal_lax(x64, spatial, kernel, stride, padding):
    # Value, gradient, forward-over-reverse HVP, jvp and vmap of the builders' convolution
    # against lax.conv_general_dilated, in float64.
    x = _x((3, *spatial, 4), dtype=jnp.float64)
    w = _x((kernel,) * len(spatial) + (4, 5), seed=2, dtype=jnp.float64)
    sp = "DHW"[3 - len(spatial) :]
    dn = jax.lax.conv_dimension_numbers(x.shape, w.shape, (f"N{sp}C", f"{sp}IO", f"N{sp}C"))

    def loss(conv):
        return lambda x, w: jnp.sum(jnp.sin(conv(x, w, (stride,) * len(spatial), padding,
                                                 dimension_numbers=dn)))  # fmt: skip

    ref, ours = loss(jax.lax.conv_general_dilated), loss(ll.models.conv_general_dilated)
    checks = {
        "value": lambda f: f(x, w),
        "grad": lambda f: jax.grad(f, (0, 1))(x, w),
        "hvp": lambda f: jax.jvp(jax.grad(f, (0, 1)), (x, w), (0.3 * x, 0.7 * w))[1],
        # x is not differentiated here: its tangent reaches the rule as a symbolic zero.
        "hvp_kernel": lambda f: jax.jvp(lambda w: jax.grad(f, 1)(x, w), (w,), (0.7 * w,))[1],
        "jvp": lambda f: jax.jvp(f, (x, w), (x, w))[1],
        "vmap": lambda f: jax.vmap(jax.grad(f, 1), (None, 0))(x, jnp.stack([w, 2 * w])),
    }
    for name, check in checks.items():
        for a, b in zip(jax.tree.leaves(check(ref)), jax.tree.leaves(check(ours)), strict=True):
            tol = 1e-12 * np.max(np.abs(a))
            np.testing.assert_allclose(b, a, rtol=1e-12, atol=tol, err_msg=name)
    # On the CPU the kernel derivative is matmuls (XLA:CPU runs the transposed convolution
    # as a naive loop inside while loops); a GPU keeps the plain rule; dilated convolutions
    # fall back to lax.
    grad_kernel = jax.jit(jax.grad(ours, 1))
    hlo = grad_kernel.lower(x, w).as_text()
    assert hlo.count("stablehlo.convolution") == 1 and "dot_general" in hlo
    hlo = jax.export.export(grad_kernel, platforms=("cuda",))(x, w).mlir_module()
    assert hlo.count("stablehlo.convolution") == 2 and "dot_general" not in hlo
    ones = (1,) * len(spatial)
    kw = dict(rhs_dilation=(2,) * len(spatial), dimension_numbers=dn)
    np.testing.assert_array_equal(
        ll.models.conv_general_dilated(x, w, ones, "SAME", **kw),
        jax.lax.conv_general_dilated(x, w, ones, "SAME", **kw),
    )


def test_resnet18_sizes():
    # He et al.'s ResNet-18 with 10 classes: 11,173,962 parameters with the CIFAR stem;
    # torchvision's resnet18(num_classes=10) (7x7 stem + max pool) has 11,181,642.
    for stem, count in (("cifar", 11_173_962), ("imagenet", 11_181_642)):
        shapes = jax.eval_shape(ll.models.resnet(stem=stem).init, KEY)
        assert sum(math.prod(s.shape) for s in jax.tree.leaves(shapes)) == count
        assert "bias" not in shapes["stem_conv"]  # convs followed by BatchNorm have none
    out = jax.eval_shape(ll.models.resnet(stem="imagenet").apply, shapes, _x((2, 32, 32, 3)))
    assert out.shape == (2, 10)


def test_resnet_residual_rules():
    x = _x((4, 4, 4, 3))
    kw = dict(stage_sizes=(2, 2), widths=(4, 8))
    # Fixup over a base with σ_b² > 0 (He kernels): each branch's last conv bias starts at 0.
    fixup = ll.models.resnet((4, 4, 3), 5, init="fixup(gaussian(2.0,0.05))", norm=None, **kw)
    p = fixup.init(KEY)
    assert not np.any(p["head"]["kernel"]) and not np.any(fixup.apply(p, x))
    names = [f"stage{i}_block{j}" for i in range(2) for j in range(2)]
    assert all(not np.any(p[n]["conv_1"]["kernel"]) for n in names)
    assert all(np.any(p[n]["conv_0"]["bias"]) for n in names)
    # Every branch is exactly zero on data: a block is relu(shortcut(h)), the identity on
    # h = relu(...) where there is no projection shortcut.
    outs = ll.models.layer_outputs(fixup, p, x)
    assert all(not np.any(outs[f"{n}/conv_1"]) for n in names)
    # The first branch conv is He-scaled times L^(-1/2), L = 4 blocks: variance 2/fan_in/4.
    he = ll.models.resnet((4, 4, 3), 5, norm=None, **kw).init(KEY)
    np.testing.assert_allclose(
        p["stage1_block1"]["conv_0"]["kernel"], he["stage1_block1"]["conv_0"]["kernel"] / 2,
        rtol=1e-6,
    )  # fmt: skip
    zero = ll.models.resnet((4, 4, 3), 5, init="zero_branch", **kw)
    pz = zero.init(KEY)
    assert all(
        float(pz[f"stage{i}_block{j}"]["branch_scale"]) == 0.0 for i in range(2) for j in range(2)
    )
    # With every α = 0 a block is relu(shortcut(h)): the branch convs do not matter.
    moved = jax.tree_util.tree_map_with_path(
        lambda path, a: a + 1.0 if "conv_1" in jax.tree_util.keystr(path) else a, pz
    )
    np.testing.assert_allclose(zero.apply(moved, x), zero.apply(pz, x), rtol=1e-6)


def test_resmlp_depth_scaled_keeps_variance_bounded():
    # h_{l+1} = h_l + α W2 relu(W1 h_l) with He kernels: E[q_{l+1} | h_l] = (1 + 2α²) q_l
    # exactly, so q_L / q_0 = (1 + 2/L)^L < e² with α = 1/√L, but 3^L with α = 1.
    x = _x((64, 32))

    def ratio(model):
        @jax.jit
        def one(key):
            outs = list(ll.models.layer_outputs(model, model.init(key), x).values())
            # head has He kernel: E[head²] = 2 q_L; embed output is q_0.
            return jnp.mean(outs[-1] ** 2) / jnp.mean(outs[0] ** 2) / 2

        r = np.asarray(jax.vmap(one)(jax.random.split(KEY, 8)))
        return r.mean(), r.std(ddof=1) / math.sqrt(len(r))

    for depth in (1, 4, 16):
        model = ll.models.resmlp(256, depth, in_dim=32, out_dim=256, init="depth_scaled")
        mean, se = ratio(model)
        theory = (1 + 2 / depth) ** depth
        assert abs(mean - theory) < 4 * se + 0.02 * theory, (depth, mean, theory)
        assert mean < math.e**2
    mean, _ = ratio(ll.models.resmlp(256, 16, in_dim=32, out_dim=256, init="he"))
    assert mean > 1e6  # 3^16 ≈ 4.3e7: unscaled branches blow up


def test_resmlp_pre_and_post_norm_differ_and_normalise():
    x = _x((8, 5))
    post = ll.models.resmlp(16, 2, in_dim=5, out_dim=16, norm="layer", norm_position="post")
    pre = ll.models.resmlp(16, 2, in_dim=5, out_dim=16, norm="layer", norm_position="pre")
    pp, qp = post.init(KEY), pre.init(KEY)
    assert "norm_out" in qp and "norm_out" not in pp
    assert "LayerNorm_0" in pp["block_0"] and "LayerNorm_0" in qp["block_0"]
    # With post-norm the head reads a LayerNorm output (unit scale, zero shift at init).
    outs = ll.models.layer_outputs(post, pp, x)
    assert list(outs)[0] == "embed" and list(outs)[-1] == "head"
    assert not np.allclose(post.apply(pp, x), pre.apply(qp, x))


def test_transformer_on_modular_arithmetic_and_causality():
    data = ll.data.modular_arithmetic(7, "add", 0.5)
    model = ll.models.transformer(8, 3, num_classes=7, width=16, num_heads=4, mlp_width=32)
    params = model.init(KEY)
    logits = model.apply(params, data.x_train)
    assert logits.shape == (data.x_train.shape[0], 7)
    assert set(params) == {"embed", "pos_embed", "block_0", "norm_out", "head"}
    no_ln = ll.models.transformer(8, 3, num_classes=7, width=16, num_heads=4, layer_norm=False)
    assert not any("LayerNorm" in k or k == "norm_out" for k in no_ln.init(KEY))
    assert not any("LayerNorm" in k for k in no_ln.init(KEY)["block_0"])
    # Causal: changing the last token never changes earlier positions.
    every = ll.models.transformer(
        8, 3, num_classes=7, width=16, num_heads=4, mlp_width=32, readout="all"
    )
    p = every.init(KEY)
    a = every.apply(p, jnp.array([[1, 2, 7]]))
    b = every.apply(p, jnp.array([[1, 2, 3]]))
    np.testing.assert_allclose(a[:, :2], b[:, :2], rtol=1e-6)
    assert not np.allclose(a[:, 2], b[:, 2])
    with pytest.raises(ValueError, match="seq_len"):
        every.apply(p, jnp.array([[1, 2]]))
    # numpy integers are ints: the same model as with Python ints.
    same = ll.models.mlp(np.array([4, 8, 3]))
    assert jax.tree.map(jnp.shape, same.init(KEY)) == jax.tree.map(
        jnp.shape, ll.models.mlp([4, 8, 3]).init(KEY)
    )
    # Readout "last" is position T-1 of readout "all" (same parameters).
    np.testing.assert_allclose(
        model.apply(p, data.x_train[:5]),
        every.apply(p, data.x_train[:5])[:, -1],
        rtol=1e-5,
        atol=1e-6,
    )


@pytest.mark.slow  # double differentiation through attention: 24 s of compilation; CI's slow step
def test_transformer_hessian_vector_products(x64):
    data = ll.data.modular_arithmetic(5, "add", 0.5)
    model = ll.models.transformer(
        6,
        3,
        num_classes=5,
        width=8,
        num_heads=2,
        mlp_width=8,
        num_layers=2,
        activation="gelu",
        dtype=jnp.float64,
    )
    params = model.init(KEY)
    loss_fn = ll.losses.cross_entropy(model)
    batch = (data.x_train, data.y_train)
    flat, unravel = jax.flatten_util.ravel_pytree(params)
    f = lambda v: loss_fn(unravel(v), batch)
    v = jax.random.normal(jax.random.key(3), flat.shape, jnp.float64)
    v = v / jnp.linalg.norm(v)
    grad = jax.jit(jax.grad(f))
    fwd_rev = jax.jit(lambda w: jax.jvp(jax.grad(f), (w,), (v,))[1])(flat)
    rev_rev = jax.jit(jax.grad(lambda w: jnp.vdot(jax.grad(f)(w), v)))(flat)
    eps = 1e-5  # central differences: error O(eps²) + O(1e-16 / eps)
    fd = (grad(flat + eps * v) - grad(flat - eps * v)) / (2 * eps)
    scale = float(jnp.max(jnp.abs(fwd_rev)))
    np.testing.assert_allclose(fwd_rev, rev_rev, rtol=0, atol=1e-10 * scale)
    np.testing.assert_allclose(fwd_rev, fd, rtol=0, atol=1e-6 * scale)
    assert float(jnp.linalg.norm(fwd_rev)) > 0


def test_deep_linear_is_a_product_of_matrices():
    model = ll.models.deep_linear([4, 6, 5, 3])
    params = model.init(KEY)
    assert all(set(layer) == {"kernel"} for layer in params.values())
    x = _x((7, 4))
    w = params["Dense_0"]["kernel"] @ params["Dense_1"]["kernel"] @ params["Dense_2"]["kernel"]
    np.testing.assert_allclose(model.apply(params, x), x @ w, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(ll.models.deep_linear_matrix(params), w, rtol=1e-6)


@pytest.mark.parametrize("name", ["relu", "leaky_relu", "tanh", "erf", "gelu", "swish", "identity"])
def test_activations(name):
    f = ll.models.activation(name)
    z = jnp.array([-2.0, -0.5, 0.0, 0.5, 2.0])
    from scipy.special import erf

    zn = np.asarray(z)
    expected = {
        "relu": np.maximum(zn, 0),
        "leaky_relu": np.where(zn > 0, zn, 0.01 * zn),
        "tanh": np.tanh(zn),
        "erf": erf(zn),
        "gelu": 0.5 * zn * (1 + erf(zn / np.sqrt(2))),
        "swish": zn / (1 + np.exp(-zn)),
        "identity": zn,
    }[name]
    np.testing.assert_allclose(f(z), expected, rtol=1e-6, atol=1e-7)
    model = ll.models.mlp([3, 4, 2], activation=name)
    assert model.apply(model.init(KEY), jnp.ones((2, 3))).shape == (2, 2)


def test_layer_outputs_in_call_order():
    model = ll.models.resmlp(8, 2, in_dim=3, out_dim=2)
    outs = ll.models.layer_outputs(model, model.init(KEY), _x((4, 3)))
    assert list(outs) == [
        "embed",
        "block_0/Dense_0",
        "block_0/Dense_1",
        "block_1/Dense_0",
        "block_1/Dense_1",
        "head",
    ]
    with pytest.raises(ValueError, match="model"):
        ll.models.layer_outputs(ll.models.Model(lambda k: {}, lambda p, x: x), {}, _x((2, 3)))


@pytest.mark.parametrize(
    "build, match",
    [
        (lambda: ll.models.mlp([4, 3], activation="relu6"), "activation"),
        (lambda: ll.models.mlp([4, 3], norm="group"), "norm"),
        (lambda: ll.models.mlp([4]), "widths"),
        (lambda: ll.models.mlp([4, 0, 3]), "widths"),
        (lambda: ll.models.mlp([4, 2.5, 3]), "widths"),
        (lambda: ll.models.mlp([4, 3], init="kaiming"), "init"),
        (lambda: ll.models.mlp([4, 3], dtype=jnp.int32), "dtype"),
        (lambda: ll.models.resmlp(8, 2, in_dim=3, out_dim=2, branch_scale="half"), "branch_scale"),
        (lambda: ll.models.resmlp(8, 2, in_dim=3, out_dim=2, branch_scale=True), "branch_scale"),
        (
            lambda: ll.models.resmlp(
                8, 2, in_dim=3, out_dim=2, init="zero_branch", branch_scale=1.0
            ),
            "branch_scale",
        ),
        (
            lambda: ll.models.resmlp(8, 2, in_dim=3, out_dim=2, norm_position="middle"),
            "norm_position",
        ),
        (lambda: ll.models.resmlp(8, 0, in_dim=3, out_dim=2), "depth"),
        (lambda: ll.models.resmlp(8, 2, in_dim=3, out_dim=2, norm="batchnorm"), "norm"),
        (lambda: ll.models.cnn(channels=(4, 4), kernel_size=(3, 3, 3)), "kernel_size"),
        (lambda: ll.models.cnn(pool="median"), "pool"),
        (lambda: ll.models.cnn(padding="FULL"), "padding"),
        (lambda: ll.models.cnn((4, 4, 4, 1)), "input_shape"),
        (lambda: ll.models.resnet(stem="tiny"), "stem"),
        (lambda: ll.models.resnet(widths=(8, 16)), "widths"),
        (lambda: ll.models.resnet((32, 32)), "input_shape"),
        (lambda: ll.models.resnet(init="zero_branch", branch_scale=1.0), "branch_scale"),
        (lambda: ll.models.transformer(8, 3, num_classes=7, width=10, num_heads=4), "num_heads"),
        (lambda: ll.models.transformer(8, 3, num_classes=7, readout="mean"), "readout"),
        (lambda: ll.models.deep_linear([3]), "widths"),
    ],
)
def test_bad_arguments(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_bad_inputs_at_apply_time_are_named():
    # Malformed BatchNorm statistics would silently switch a layer to batch statistics.
    m = ll.models.mlp([4, 8, 3], norm="batch")
    p = m.init(KEY)
    x = jax.random.normal(KEY, (16, 4))
    st = m.stats(p, x)
    assert float(jnp.max(jnp.abs(m.apply(p, x[:2], stats=st) - m.apply(p, x[:2])))) > 1e-3
    with pytest.raises(ValueError, match=r"stats: no statistics for layers \['BatchNorm_0'\]"):
        m.apply(p, x[:2], stats={"batch_stats": st})
    with pytest.raises(ValueError, match="stats: BatchNorm .* needs both 'mean' and 'var'"):
        m.apply(p, x[:2], stats={"BatchNorm_0": {"mean": jnp.zeros(8)}})
    # Token ids: negative ones embed as NaN like other out-of-vocabulary ids; floats refused.
    t = ll.models.transformer(8, 3, num_classes=7, width=16, num_heads=2)
    pt = t.init(KEY)
    out = t.apply(pt, jnp.array([[1, 2, 7], [1, 2, -1], [1, 2, 8]]))
    assert np.asarray(jnp.isfinite(out).all(-1)).tolist() == [True, False, False]
    with pytest.raises(ValueError, match="tokens: expected integer token ids"):
        t.apply(pt, jnp.array([[1.0, 2.0, 6.9]]))
    # A spatial size that collapses to zero is named at build time, not a ZeroDivisionError.
    with pytest.raises(
        ValueError, match=r"input_shape: \(8,\) shrinks to \(0,\) after conv layer 0"
    ):
        ll.models.cnn((8,), pool="max", pool_size=4)
    with pytest.raises(ValueError, match="branch_scale: expected a finite float"):
        ll.models.resmlp(8, 2, in_dim=4, out_dim=3, branch_scale=float("nan"))
    assert ll.models.resmlp(8, 2, in_dim=4, out_dim=3, branch_scale=np.float32(0.5)).init(KEY)
