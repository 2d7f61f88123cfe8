import math

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import lljax as ll
from lljax.experiments import unit_variance as uv

X = jax.random.normal(jax.random.key(1), (6, 5))


SPECS = {
    "tanh": uv.StackSpec(3, 8, 5, 3, "tanh", None, None, 1.5, 0.1),
    "layernorm": uv.StackSpec(3, 8, 5, 3, "relu", "layer", None, 2.0, 0.1),
    "batchnorm": uv.StackSpec(3, 8, 5, 3, "relu", "batch", None, 2.0, 0.1),
    "residual": uv.StackSpec(3, 8, 5, 3, "relu", None, "1/sqrt(depth)", 2.0, 0.1),
}


def test_stack_equals_library_model():
    for spec in SPECS.values():
        params = uv.stack_init(spec, jax.random.key(0))
        lib = uv.library_model(spec)
        lib_params = uv.to_library_params(spec, params)
        shapes = jax.eval_shape(lib.init, jax.random.key(0))
        assert jax.tree.map(jnp.shape, lib_params) == jax.tree.map(jnp.shape, shapes)
        np.testing.assert_allclose(
            jax.jit(uv.stack_model(spec).apply)(params, X),
            jax.jit(lib.apply)(lib_params, X),
            rtol=1e-5,
            atol=1e-6,
        )


def test_stack_propagation_equals_library_propagation():
    spec = SPECS["batchnorm"]  # BatchNorm couples the examples' gradients
    params = uv.stack_init(spec, jax.random.key(0))
    lib_params = uv.to_library_params(spec, params)
    ours = uv.stack_propagation(spec, params, X, key=jax.random.key(3))
    ref = ll.signal.propagation(uv.library_model(spec), lib_params, X, key=jax.random.key(3))
    keep = [ref.names.index(n) for n in ours.names]  # the library also records norm outputs
    assert len(keep) == len(ours.names) == spec.depth + (2 if spec.branch_scale is None else 3)
    for field in ("second_moment", "grad_second_moment", "cosine", "effective_rank"):
        np.testing.assert_allclose(
            getattr(ours, field), np.asarray(getattr(ref, field))[keep], rtol=1e-4, atol=1e-6
        )


def test_init_population_scales_one_draw_per_member():
    spec = uv.StackSpec(4, 6, 5, 2, "relu", None, "1/sqrt(depth)", 2.0, 0.0)
    keys = jax.random.split(jax.random.key(0), 2)
    pop = uv.init_population(spec, keys, jnp.array([1.0, 4.0]), jnp.array([0.0, 0.5]), 0.3)
    one = jax.vmap(lambda k, sw, sb: uv.stack_init(spec, k, sw, sb, 0.3))(
        keys, jnp.array([1.0, 4.0]), jnp.array([0.0, 0.5])
    )
    for a, b in zip(jax.tree.leaves(one), jax.tree.leaves(pop), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    same = uv.init_population(spec, jnp.stack([keys[0], keys[0]]), jnp.array([1.0, 4.0]), 0.0)
    k = same["branch"]["in"]["kernel"]
    np.testing.assert_allclose(k[1], 2.0 * k[0], rtol=1e-6)  # √4 × the same unit draws
    assert float(same["alpha"][0]) == pytest.approx(0.5)  # spec default 1/√4
    assert uv.num_draws(spec) == sum(np.size(v) for v in jax.tree.leaves(same)) // 2 - 1


def test_theory_curves_relu_closed_forms():
    depth = 6
    lecun = uv.theory_curves(uv.StackSpec(depth, 4, 3, 2, "relu", sigma_w2=1.0), q_x=1.0)
    l = np.arange(depth)
    np.testing.assert_allclose(lecun["log10_q"], l * math.log10(0.5), atol=1e-5)
    # Gradients halve going back: g_l / g_{L-1} = 2^{-(L-1-l)}.
    np.testing.assert_allclose(lecun["log10_grad"], (depth - 1 - l) * math.log10(0.5), atol=1e-5)
    he = uv.theory_curves(uv.StackSpec(depth, 4, 3, 2, "relu", sigma_w2=2.0), q_x=0.7)
    np.testing.assert_allclose(he["log10_q"], 0.0, atol=1e-6)
    res = uv.StackSpec(depth, 4, 3, 2, "relu", None, 0.5, 2.0, 0.0)
    out = uv.theory_curves(res, q_x=1.0)
    # Block: q -> q + α² σ_w² (σ_w² q) / 2 = q (1 + 2α²).
    np.testing.assert_allclose(out["log10_q"], np.arange(depth + 1) * math.log10(1.5), atol=1e-5)
    assert out["log10_grad"] is None
    assert uv.theory_curves(uv.StackSpec(3, 4, 3, 2, norm="layer"), 1.0)["log10_q"] is None


def test_tanh_lecun_gradients_vanish_toward_the_input_like_l_over_L():
    # q_l ≈ q₀/(1 + 2q₀l) gives χ ≈ 1 − 1/l: the gradient second moment of layer l is
    # ∏_{k≥l} χ_k ≈ l/L of the last layer's (0.0155, 0.0912, 0.4926, 1 at l = 1, 9, 49, 99),
    # not ∝ 1/l as SCHEMES said.
    depth = 100
    spec = uv.StackSpec(depth, 4, 3, 2, "tanh", sigma_w2=1.0, sigma_b2=0.0)
    g = 10 ** uv.theory_curves(spec, q_x=1.0)["log10_grad"]
    np.testing.assert_allclose(g[[1, 9, 49, 99]], [0.0155, 0.0912, 0.4926, 1.0], atol=5e-4)
    for l in (9, 49):
        assert g[l] == pytest.approx(l / (depth - 1), rel=0.02)
    why = uv.SCHEMES["tanh_lecun"].why
    assert "l/L" in why and "1/l" not in why.replace("1 − 1/l", "")


def test_relu_he_fluctuation_note_states_the_finite_width_variance():
    note = uv.relu_he_fluctuation_note(100, 256, 30.0)
    # 5L/n = 1.95: an s.d. of √1.95 / ln 10 = 0.61 decades of q_L.
    assert "5L/n = 1.95" in note and "0.61 decades" in note and "1.477" in note
    assert "Hanin & Nica" in note
    assert "5L/n = 1.95" in uv.relu_he_fluctuation_note(200, 512, 30.0)


def test_optimizer_variants_equal_optax():
    params = {"w": jnp.array([0.5, -1.0, 2.0]), "alpha": jnp.array(0.3)}
    grads = {"w": jnp.array([3.0, -4.0, 0.0]), "alpha": jnp.array(0.0)}
    cases = [
        ((0.1, math.inf, 0.0, 0.0), optax.sgd(0.1)),
        ((0.1, 1.0, 0.0, 0.0), optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(0.1))),
        ((0.1, math.inf, 0.01, 0.0), optax.chain(optax.add_decayed_weights(0.01), optax.sgd(0.1))),
        ((1e-3, math.inf, 0.0, 1.0), optax.adam(1e-3)),
    ]
    for args, ref in cases:
        opt = uv.optimizer(*args)
        state, ref_state = opt.init(params), ref.init(params["w"])
        for _ in range(3):
            u, state = opt.update(grads, state, params)
            r, ref_state = ref.update(grads["w"], ref_state, params["w"])
            np.testing.assert_allclose(u["w"], r, rtol=1e-6, atol=1e-9)
            assert float(u["alpha"]) == 0.0  # frozen residual scale


def test_rules_on_synthetic_numbers():
    assert uv.drift(np.log10([[1.0, 10.0, 0.01]]), 0).tolist() == pytest.approx([2.0])
    assert uv.drift(np.array([[0.0, np.inf]]), 0)[0] == pytest.approx(uv._LOG10_MAX)
    drifts = {"a": [1.0, 1.02], "b": [1.7, 1.72], "c": [1.0, 1.9]}
    n, bad, unsure = uv.preservation_agreement(drifts, dict.fromkeys(drifts, True), 30.0)
    assert (n, bad, unsure) == (1, ["b"], ["c"])  # log10 30 = 1.477; t₁ margins 0.13, 0.13, 5.7
    assert uv.trainable_threshold(50.0, 10.0, 0.5) == 30.0
    trained = np.array([[True, True, True], [False, True, False], [False, True, False]])
    depths, xi = [4, 16, 64], [1.0, np.inf, 3.0]
    np.testing.assert_array_equal(uv.max_trainable_depth(trained, depths), [4, 64, 4])
    assert uv.boundary_agreement(trained, depths, xi, 4.0) == 1.0
    assert uv.boundary_agreement(trained, depths, xi, 64.0) == pytest.approx(5 / 9)
    assert uv.best_constant_depth_agreement(trained, depths) == pytest.approx(7 / 9)
    assert uv.depth_scale_correlation([4, 64, 4], xi) == pytest.approx(0.866025, abs=1e-5)
    assert uv.depth_scale_correlation([64, 4, 4], xi) < 0
    assert math.isnan(uv.depth_scale_correlation([8, 8, 8], xi))


def _stats(drift_fwd, drift_grad, rank):
    return {
        "forward_drift": np.array([drift_fwd, drift_fwd]),
        "gradient_drift": np.array([drift_grad, drift_grad]),
        "rank_ratio": np.array([rank, rank]),
    }


def _heat(rho, steps):
    return {
        "optimizer": "sgd",
        "trainable_cells": 5,
        "cells": 9,
        "threshold": 30.0,
        "max_depth": np.array([4.0, 64.0, 4.0]),
        "rho": rho,
        "rho_seeds": ll.experiments.measure([rho, rho]),
        "rho_threshold": 0.7,
        "agreement_paper": 0.8,
        "paper_c": 6.0,
        "agreement_best": 0.9,
        "best_c": 2.0,
        "agreement_constant": 0.7,
        "steps": steps,
        "decisive_steps": 1000,
        "undecided": "",
    }


def test_verdict_rule():
    good = {"relu_he": _stats(0.5, 0.4, 0.2), "relu_lecun": _stats(30.0, 30.0, 0.2)}
    schemes = ("relu_he", "relu_lecun")
    assert uv._verdict(good, schemes, 30.0, _heat(0.9, 500)).supported is True
    assert uv._verdict(good, schemes, 30.0, _heat(0.2, 500)).supported is None  # short run
    assert uv._verdict(good, schemes, 30.0, _heat(0.2, 5000)).supported is False
    undecided = {**_heat(0.9, 500), "undecided": "no boundary"}
    assert uv._verdict(good, schemes, 30.0, undecided).supported is None
    bad = {**good, "relu_he": _stats(5.0, 0.4, 0.2)}  # He predicted to keep its variance
    v = uv._verdict(bad, schemes, 30.0, _heat(0.9, 5000))
    assert v.supported is False and "relu_he" in v.evidence
    collapse = {**good, "relu_he": _stats(0.5, 0.4, 0.9)}  # He predicted to collapse
    assert uv._verdict(collapse, schemes, 30.0, _heat(0.9, 5000)).supported is False


def test_verdict_decides_preservation_by_the_interval_over_networks():
    good = {"relu_he": _stats(0.5, 0.4, 0.2), "relu_lecun": _stats(30.0, 30.0, 0.2)}
    schemes = ("relu_he", "relu_lecun")
    # Mean 1.1 < log10 30 = 1.48, but two networks 0.2 and 2.0 apart cannot tell.
    spread = {**good, "relu_he": {**good["relu_he"], "forward_drift": np.array([0.2, 2.0])}}
    v = uv._verdict(spread, schemes, 30.0, _heat(0.9, 5000))
    assert v.supported is None and "straddling the bound: relu_he" in v.evidence
    assert uv._verdict(spread, schemes, 30.0, None).supported is None
    # An undecided scheme does not rescue a refuted one.
    refuted = {**spread, "relu_lecun": _stats(0.3, 30.0, 0.2)}  # LeCun predicted to drift
    assert uv._verdict(refuted, schemes, 30.0, _heat(0.9, 5000)).supported is False
    # One network gives no interval.
    single = {k: {n: v[:1] for n, v in st.items()} for k, st in good.items()}
    assert uv._verdict(single, schemes, 30.0, _heat(0.9, 5000)).supported is None
    assert uv.below([0.5, 0.6, 0.7], 1.5) is True and uv.below([0.5], 1.5) is None


@pytest.mark.slow  # a whole (tiny) run; CI runs the slow experiment tests in their own step
def test_tiny_run_record():
    overrides = dict(
        schemes=("tanh_critical",),  # trained with the map's depth-2 population
        stats_depth=4,
        stats_width=8,
        stats_batch=6,
        stats_seeds=2,
        train_width=8,
        steps=4,
        heat_depths=(2,),
        heat_sigma_w2=(0.5, "critical", 4.0),
        optimizers=("sgd", "adam"),
        scheme_depths=(2,),
        scheme_optimizers=("sgd",),
    )
    r = ll.experiments.run("unit_variance", "quick", overrides=overrides, write=False)
    rec = r.record
    assert rec["verdict"]["label"] in ("SUPPORTED", "NOT SUPPORTED", "UNDECIDED")
    assert set(rec["measurements"]["forward_drift_log10"]) == {"tanh_critical"}
    assert rec["measurements"]["forward_drift_log10"]["tanh_critical"]["n"] == 2
    heat = r.data["heat"]
    assert np.asarray(heat["train_accuracy"]).shape == (2, 1, 3, 2)
    xi = np.asarray(heat["xi_c"])
    assert xi[1] > 1e3 and xi[0] < xi[2] < 10  # ξ_c diverges at the critical point
    assert r.data["curves"]["tanh_critical"]["log10_q_mean"].shape == (4,)
    assert r.data["curves"]["tanh_critical"]["theory_log10_q"].shape == (4,)
    assert len(r.summary) == 1 + 2
    assert rec["measurements"]["scheme_train_accuracy"]["tanh_critical"]["sgd@L2"]["n"] == 2
    assert set(r.figures) == {
        "forward_second_moment",
        "gradient_second_moment",
        "rank_collapse",
        "trainability_heatmap",
        "scheme_trainability",
    }
    from lljax import plot

    fig = r.figures["trainability_heatmap"]()
    assert len(fig.axes) == 3  # two optimizers and a colorbar
    plot.pyplot().close(fig)
