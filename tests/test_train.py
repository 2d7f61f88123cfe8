"""Tests for lljax.train: the scan core against a hand loop, chunking, resume, non-finite."""

import dataclasses
import json
import os

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import lljax as ll
from lljax import train

MODEL = ll.models.mlp([4, 8, 3])
LOSS = ll.losses.cross_entropy(MODEL)
DATA = ll.data.gaussian_mixture(key=jr.key(0), num_train=40, num_test=24, num_classes=3, dim=4)
OPT = optax.sgd(0.1, momentum=0.9)
PARAMS = MODEL.init(jr.key(1))


def _assert_trees_equal(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        if jnp.issubdtype(x.dtype, jax.dtypes.prng_key):
            x, y = jr.key_data(x), jr.key_data(y)
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def _assert_trees_close(a, b, rtol=1e-5, atol=1e-6):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=rtol, atol=atol)


@pytest.mark.parametrize("sampling", ["epoch", "uniform", "replacement"])
def test_run_matches_hand_written_loop(sampling):
    key = jr.key(2)
    state = train.init_state(PARAMS, OPT, key=key)
    state, out = train.run(LOSS, OPT, DATA, state, num_steps=6, batch_size=8, sampling=sampling)
    # Reference: an eager Python loop with the same batches.
    p, s = PARAMS, OPT.init(PARAMS)
    losses = []
    for t in range(6):
        idx = train.batch_indices(key, jnp.int32(t), DATA.num_train, 8, sampling)
        batch = (DATA.x_train[idx], DATA.y_train[idx])
        loss, g = jax.value_and_grad(LOSS)(p, batch)
        u, s = OPT.update(g, s, p)
        p = optax.apply_updates(p, u)
        losses.append(loss)
    _assert_trees_close(state.params, p)
    np.testing.assert_allclose(out["loss"], np.array(losses), rtol=1e-5)
    assert int(state.step) == 6 and int(out["nonfinite_step"]) == -1
    assert bool(out["params_finite"])


def test_epoch_sampling_visits_each_example_once_per_epoch():
    key = jr.key(3)
    n, bs = 23, 5  # 4 batches per epoch, 3 examples dropped each epoch
    for epoch in range(2):
        idx = np.concatenate(
            [
                np.asarray(train.batch_indices(key, jnp.int32(epoch * 4 + i), n, bs))
                for i in range(4)
            ]
        )
        assert len(np.unique(idx)) == 20 and idx.min() >= 0 and idx.max() < n
    e0 = np.asarray(train.batch_indices(key, jnp.int32(0), n, bs))
    e1 = np.asarray(train.batch_indices(key, jnp.int32(4), n, bs))
    assert not np.array_equal(e0, e1)  # a fresh shuffle each epoch
    np.testing.assert_array_equal(train.batch_indices(key, jnp.int32(7), n, n), np.arange(n))
    with pytest.raises(ValueError, match="sampling"):  # checked for a full batch too
        train.batch_indices(key, jnp.int32(7), n, n, "bogus")


def test_fit_learns_and_history_shapes():
    r = train.fit(
        LOSS,
        PARAMS,
        optax.adam(0.05),
        DATA,
        steps=60,
        batch_size=10,
        key=jr.key(4),
        eval_every=20,
        progress=False,
    )
    h = r.history
    assert h["loss"].shape == (60,) and h["step"].tolist() == list(range(60))
    assert h["eval_step"].tolist() == [0, 20, 40, 60]
    for k in ("train_loss", "test_loss", "train_accuracy", "test_accuracy"):
        assert h[k].shape == (4,)
    assert h["test_loss"][-1] < 0.7 * h["test_loss"][0]
    # The recorded test loss is the loss of the returned params on the whole test split.
    np.testing.assert_allclose(h["test_loss"][-1], LOSS(r.params, DATA.test), rtol=1e-5)
    acc = ll.losses.accuracy(MODEL)(r.params, DATA.train)
    np.testing.assert_allclose(h["train_accuracy"][-1], acc, rtol=1e-6)
    assert int(r.state.step) == 60


def test_chunking_and_log_every_do_not_change_the_run():
    kw = dict(steps=30, batch_size=8, key=jr.key(5), progress=False)
    a = train.fit(LOSS, PARAMS, OPT, DATA, chunk_size=30, **kw)
    b = train.fit(LOSS, PARAMS, OPT, DATA, chunk_size=10, log_every=5, **kw)
    _assert_trees_close(a.params, b.params, rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(
        b.history["loss"], a.history["loss"].reshape(6, 5).mean(1), rtol=1e-5
    )
    assert b.history["step"].tolist() == [0, 5, 10, 15, 20, 25]


def test_default_chunks_never_split_a_log_window():
    # The default chunk (1000 steps) is rounded up to a multiple of log_every.
    kw = dict(steps=1005, batch_size=8, key=jr.key(5), progress=False, log_every=3)
    r = train.fit(LOSS, PARAMS, OPT, DATA, **kw)
    np.testing.assert_array_equal(r.history["step"], np.arange(0, 1005, 3))


def test_resume_is_bit_identical(tmp_path):
    kw = dict(batch_size=8, key=jr.key(6), chunk_size=10, eval_every=10, progress=False)
    straight = train.fit(LOSS, PARAMS, OPT, DATA, steps=40, **kw)
    d = str(tmp_path / "run")
    first = train.fit(LOSS, PARAMS, OPT, DATA, steps=20, checkpoint_dir=d, **kw)
    assert int(first.state.step) == 20
    resumed = train.fit(LOSS, PARAMS, OPT, DATA, steps=40, checkpoint_dir=d, **kw)
    _assert_trees_equal(straight.params, resumed.params)
    _assert_trees_equal(straight.opt_state, resumed.opt_state)
    _assert_trees_equal(straight.state.key, resumed.state.key)
    for k in ("loss", "step", "eval_step", "test_loss", "test_accuracy"):
        np.testing.assert_array_equal(straight.history[k], resumed.history[k])
    manifest = json.load(open(os.path.join(d, "checkpoint.json")))
    assert manifest["step"] == 40
    assert len([f for f in os.listdir(d) if f.endswith(".npz")]) <= 2


def test_resume_after_a_crash(tmp_path, monkeypatch):
    kw = dict(steps=30, batch_size=8, key=jr.key(7), chunk_size=10, progress=False)
    straight = train.fit(LOSS, PARAMS, OPT, DATA, **kw)
    real, calls = train._run_jit, []

    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("simulated crash")
        return real(*args, **kwargs)

    monkeypatch.setattr(train, "_run_jit", crashing)
    d = str(tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train.fit(LOSS, PARAMS, OPT, DATA, checkpoint_dir=d, **kw)
    monkeypatch.setattr(train, "_run_jit", real)
    assert json.load(open(os.path.join(d, "checkpoint.json")))["step"] == 20
    resumed = train.fit(LOSS, PARAMS, OPT, DATA, checkpoint_dir=d, **kw)
    _assert_trees_equal(straight.params, resumed.params)
    np.testing.assert_array_equal(straight.history["loss"], resumed.history["loss"])


@pytest.mark.parametrize("kind", ["closure", "inject", "sgld", "psgld"])
def test_resume_uses_the_given_optimizers_hyperparameters(tmp_path, kind):
    # optax.sgd keeps its rate in a closure; inject_hyperparams and lljax's samplers keep it
    # in their state, which the checkpoint must not override.
    make = {
        "closure": lambda lr: optax.sgd(lr),
        "inject": lambda lr: optax.inject_hyperparams(optax.sgd)(learning_rate=lr),
        "sgld": lambda lr: ll.optim.sgld(lr, 1e-4, key=jr.key(5)),
        "psgld": lambda lr: ll.optim.psgld(lr, 1e-4, key=jr.key(5)),
    }[kind]
    kw = dict(batch_size=8, key=jr.key(3), chunk_size=5, progress=False)
    d = str(tmp_path / kind)
    five = train.fit(LOSS, PARAMS, make(0.1), DATA, steps=5, checkpoint_dir=d, **kw)
    frozen = train.fit(LOSS, PARAMS, make(1e-30), DATA, steps=10, checkpoint_dir=d, **kw)
    _assert_trees_close(five.params, frozen.params, rtol=0, atol=1e-12)  # noise √(2εT) ≈ 0
    # The same optimizer resumes the uninterrupted run, noise keys included.
    d2 = str(tmp_path / f"{kind}-same")
    train.fit(LOSS, PARAMS, make(0.1), DATA, steps=5, checkpoint_dir=d2, **kw)
    resumed = train.fit(LOSS, PARAMS, make(0.1), DATA, steps=10, checkpoint_dir=d2, **kw)
    straight = train.fit(LOSS, PARAMS, make(0.1), DATA, steps=10, **kw)
    _assert_trees_equal(straight.params, resumed.params)
    _assert_trees_equal(straight.opt_state, resumed.opt_state)


def test_checkpoint_of_another_run_is_refused(tmp_path):
    d = str(tmp_path / "run")
    kw = dict(steps=10, batch_size=8, progress=False, checkpoint_dir=d)
    train.fit(LOSS, PARAMS, OPT, DATA, key=jr.key(8), **kw)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        train.fit(LOSS, PARAMS, OPT, DATA, key=jr.key(9), **kw)
    with pytest.raises(ValueError, match="checkpoint_dir"):
        train.fit(LOSS, PARAMS, OPT, DATA, key=jr.key(8), **{**kw, "batch_size": 4})
    other = dataclasses.replace(DATA, y_train=DATA.y_train[::-1])
    with pytest.raises(ValueError, match="data="):
        train.fit(LOSS, PARAMS, OPT, other, key=jr.key(8), **kw)
    with pytest.raises(ValueError, match="eval_splits="):
        train.fit(LOSS, PARAMS, OPT, DATA, key=jr.key(8), eval_splits=("test",), **kw)
    # Another eval_fn would misalign the history's columns with eval_step.
    with pytest.raises(ValueError, match="eval_fn: this run evaluates"):
        train.fit(
            LOSS,
            PARAMS,
            OPT,
            DATA,
            key=jr.key(8),
            eval_fn=lambda p, xy: {"loss": LOSS(p, xy), "zero": 0.0},
            **{**kw, "steps": 20},
        )


def test_checkpoint_round_trip_with_keys_in_optimizer_state(tmp_path):
    opt = optax.chain(optax.add_noise(0.1, 0.55, 0), optax.sgd(0.1))
    state = train.init_state(PARAMS, opt, key=jr.key(10))
    state, _ = train.run(LOSS, opt, DATA, state, num_steps=3, batch_size=8)
    train.save_checkpoint(str(tmp_path), state, {"loss": np.arange(3.0)}, meta={"a": 1})
    template = train.init_state(PARAMS, opt, key=jr.key(0))
    loaded, hist, meta = train.load_checkpoint(str(tmp_path), template)
    _assert_trees_equal(state, loaded)
    assert meta == {"a": 1} and hist["loss"].tolist() == [0, 1, 2]
    with pytest.raises(ValueError, match="structure"):
        train.load_checkpoint(str(tmp_path), train.init_state(PARAMS, OPT, key=jr.key(0)))
    assert train.load_checkpoint(str(tmp_path / "empty"), template) is None


def test_checkpoint_structure_is_compared_by_leaf_paths(tmp_path):
    # str(treedef) is JAX's wording and may change between versions; resuming must not.
    d = str(tmp_path)
    state = train.init_state(PARAMS, OPT, key=jr.key(12))
    train.save_checkpoint(d, state, {})
    path = os.path.join(d, train.MANIFEST)
    manifest = json.load(open(path))
    assert "params/Dense_0/bias" in manifest["paths"] and len(manifest["paths"]) == len(
        manifest["leaves"]
    )
    json.dump({**manifest, "treedef": "PyTreeDef(written by another JAX)"}, open(path, "w"))
    _assert_trees_equal(state, train.load_checkpoint(d, state)[0])
    # A different optimizer: the error names the first leaf that differs.
    other = train.init_state(PARAMS, optax.adam(1e-3), key=jr.key(12))
    with pytest.raises(ValueError, match=r"leaves saved.*only here: \['opt_state/0/count'"):
        train.load_checkpoint(d, other)
    # Manifests written before leaf paths were recorded still load by their treedef.
    legacy = {k: v for k, v in manifest.items() if k != "paths"}
    json.dump(legacy, open(path, "w"))
    _assert_trees_equal(state, train.load_checkpoint(d, state)[0])
    with pytest.raises(ValueError, match="structure"):
        train.load_checkpoint(d, other)
    # Fingerprints ignore the wording too: they hash leaf paths and values.
    assert train.fingerprint({"a": 1.0}) != train.fingerprint({"b": 1.0})


def test_nonfinite_loss_names_the_first_bad_step():
    opt = optax.sgd(1e4)
    state = train.init_state(PARAMS, opt, key=jr.key(11))
    _, out = train.run(LOSS, opt, DATA, state, num_steps=40, batch_size=8)
    first = int(np.argmax(~np.isfinite(np.asarray(out["loss"]))))
    assert int(out["nonfinite_step"]) == first > 0
    with pytest.raises(train.NonFiniteLossError, match=f"step {first}") as e:
        train.fit(
            LOSS,
            PARAMS,
            opt,
            DATA,
            steps=40,
            batch_size=8,
            key=jr.key(11),
            chunk_size=7,
            progress=False,
        )
    assert e.value.step == first


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(steps=0), "steps"),
        (dict(batch_size=41), "batch_size"),
        (dict(batch_size=0), "batch_size"),
        (dict(data=(1, 2)), "data"),
        (dict(params={"w": jnp.array([1.0, jnp.nan])}), "params"),
        (dict(params=LOSS), "params: expected a pytree of arrays, got a leaf of type function"),
        (dict(sampling="bogus"), "sampling"),
        (dict(log_every=3, eval_every=10), "eval_every"),
        (dict(key=3), "key"),
        (dict(optimizer=lambda lr: optax.sgd(lr)), "optimizer"),
    ],
)
def test_fit_validates_arguments(kwargs, match):
    args = dict(
        loss_fn=LOSS,
        params=PARAMS,
        optimizer=OPT,
        data=DATA,
        steps=5,
        batch_size=8,
        key=jr.key(0),
        progress=False,
    )
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        train.fit(**args)


def test_inject_hyperparams_state_takes_per_run_values():
    opt = optax.inject_hyperparams(optax.sgd)(learning_rate=0.1)
    state = train.init_state(PARAMS, opt, key=jr.key(12), hyperparams={"learning_rate": 0.02})
    assert float(state.opt_state.hyperparams["learning_rate"]) == pytest.approx(0.02)
    s1, _ = train.run(LOSS, opt, DATA, state, num_steps=5, batch_size=8)
    ref = train.init_state(PARAMS, optax.sgd(0.02), key=jr.key(12))
    s2, _ = train.run(LOSS, optax.sgd(0.02), DATA, ref, num_steps=5, batch_size=8)
    _assert_trees_close(s1.params, s2.params)
    with pytest.raises(ValueError, match="hyperparams"):
        train.init_state(PARAMS, optax.sgd(0.1), key=jr.key(0), hyperparams={"lr": 0.1})
    # An int default (learning_rate=1) must not truncate the per-run value to 0.
    int_default = optax.inject_hyperparams(optax.sgd)(learning_rate=1)
    state = train.init_state(
        PARAMS, int_default, key=jr.key(12), hyperparams={"learning_rate": 0.02}
    )
    assert float(state.opt_state.hyperparams["learning_rate"]) == pytest.approx(0.02)
    # inject_hyperparams inside a chain is out of reach: the error says so.
    chained = optax.chain(optax.clip(1.0), optax.inject_hyperparams(optax.sgd)(learning_rate=0.1))
    with pytest.raises(ValueError, match="not of one inside optax.chain"):
        train.init_state(PARAMS, chained, key=jr.key(0), hyperparams={"learning_rate": 0.1})


def test_factory_optimizer_in_run():
    factory = lambda lr: optax.sgd(lr)  # noqa: E731
    state = train.init_state(PARAMS, factory, key=jr.key(13), hyperparams={"lr": 0.05})
    s1, _ = train.run(LOSS, factory, DATA, state, num_steps=5, batch_size=8)
    ref = train.init_state(PARAMS, optax.sgd(0.05), key=jr.key(13))
    s2, _ = train.run(LOSS, optax.sgd(0.05), DATA, ref, num_steps=5, batch_size=8)
    _assert_trees_close(s1.params, s2.params)


def test_evaluate_in_batches_equals_one_pass():
    fn = train.metrics_fn(LOSS)
    full = train.evaluate(fn, PARAMS, DATA, split="test")
    batched = train.evaluate(fn, PARAMS, DATA, split="test", batch_size=7)
    for k in ("loss", "accuracy"):
        np.testing.assert_allclose(batched[k], full[k], rtol=1e-6)


def test_fit_float64(x64):
    model = ll.models.mlp([4, 8, 3], dtype=jnp.float64)
    data = DATA.astype(jnp.float64)
    loss = ll.losses.cross_entropy(model)
    r = train.fit(
        loss,
        model.init(jr.key(0)),
        optax.sgd(0.1),
        data,
        steps=5,
        batch_size=8,
        key=jr.key(1),
        progress=False,
    )
    assert all(x.dtype == jnp.float64 for x in jax.tree.leaves(r.params))
    assert r.history["loss"].dtype == np.float64


def test_segment_ends_are_absolute():
    assert train.segment_ends(0, 25, 10) == [10, 20, 25]
    assert train.segment_ends(10, 25, 10, 4) == [12, 16, 20, 24, 25]
    assert train.segment_ends(20, 20, 10) == []


def test_progress_line(capsys):
    train.fit(LOSS, PARAMS, OPT, DATA, steps=10, batch_size=8, key=jr.key(0), chunk_size=5)
    err = capsys.readouterr().err
    assert "10/10" in err and "loss" in err


@pytest.mark.parametrize("sampling", ["epoch", "uniform"])
def test_batch_larger_than_the_data_is_refused_without_replacement(sampling):
    # Used to divide by zero batches per epoch (and hang) or fail inside jax.random.choice.
    with pytest.raises(ValueError, match="batch_size"):
        train.batch_indices(jr.key(0), jnp.int32(0), 10, 11, sampling)
    state = train.init_state(PARAMS, optax.sgd(0.1), key=jr.key(0))
    n = DATA.num_train
    with pytest.raises(ValueError, match="batch_size"):
        train.run(
            LOSS, optax.sgd(0.1), DATA, state, num_steps=2, batch_size=n + 1, sampling=sampling
        )
    idx = train.batch_indices(jr.key(0), jnp.int32(3), 10, 25, "replacement")
    assert idx.shape == (25,) and int(idx.min()) >= 0 and int(idx.max()) < 10


def test_evaluate_refuses_a_batch_size_below_one():
    with pytest.raises(ValueError, match="batch_size"):
        train.evaluate(train.metrics_fn(LOSS), PARAMS, DATA, batch_size=0)


def test_bad_hyperparams_name_the_argument():
    factory = lambda lr: optax.sgd(lr)  # noqa: E731
    for hp in ({"lr": "fast"}, {"learning_rate": 0.1}, {}, {"lr": 0.1, "wd": 0.0}):
        with pytest.raises(ValueError, match="hyperparams"):
            train.init_state(PARAMS, factory, key=jr.key(0), hyperparams=hp)
    # A schedule is recomputed by inject_hyperparams every step: a written value would be lost.
    scheduled = optax.inject_hyperparams(optax.sgd)(learning_rate=optax.linear_schedule(1, 0, 9))
    with pytest.raises(ValueError, match="schedule"):
        train.init_state(PARAMS, scheduled, key=jr.key(0), hyperparams={"learning_rate": 0.5})
