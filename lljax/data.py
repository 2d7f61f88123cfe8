"""Datasets: a pytree container and built-in generators that need no network.

Every generator is deterministic given its ``key``/``seed``. Minibatches are gathered by
index inside compiled code (:func:`sample_batch`), so a training run is one ``lax.scan``.

Examples:
  >>> import jax, lljax as ll
  >>> data = ll.data.gaussian_mixture(key=jax.random.key(0), num_train=100, num_test=50)
  >>> data.x_train.shape, data.num_classes
  ((100, 2), 2)
  >>> x, y = ll.data.sample_batch(data, key=jax.random.key(1), batch_size=16)
  >>> x.shape, y.shape
  ((16, 2), (16,))
"""

from __future__ import annotations

import functools
import math
import operator
import random

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from flax import struct


def _as_key(key, name: str = "key") -> jax.Array:
    """A PRNG key from a key (typed or raw ``uint32[2]``) or an int seed."""
    if isinstance(key, (int, np.integer)) and not isinstance(key, bool):
        return jr.key(int(key))
    if hasattr(key, "dtype") and (
        jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        or (key.dtype == jnp.uint32 and key.shape == (2,))
    ):
        return key
    raise ValueError(f"{name}: expected a jax.random.key or an int seed, got {key!r}")


def _positive_int(value, name: str) -> int:
    if isinstance(value, bool):  # operator.index(True) is 1
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    try:
        v = operator.index(value)
    except TypeError:
        raise ValueError(f"{name}: expected a positive int, got {value!r}") from None
    if v <= 0:
        raise ValueError(f"{name}: expected a positive int, got {v}")
    return v


def _nonnegative_float(value, name: str, what: str) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        v = math.nan
    if not (math.isfinite(v) and v >= 0):  # NaN would pass a plain ``v < 0`` test
        raise ValueError(f"{name}: expected {what} >= 0 (finite), got {value!r}")
    return v


@struct.dataclass
class Dataset:
    """Train and test arrays plus static metadata; a pytree (arrays are leaves).

    Attributes:
      x_train, y_train, x_test, y_test: arrays with a leading example axis. Labels are
        integer classes for classification, float targets for regression.
      name: dataset name, recorded in results.
      num_classes: number of classes (0 for regression).
    """

    x_train: jax.Array
    y_train: jax.Array
    x_test: jax.Array
    y_test: jax.Array
    name: str = struct.field(pytree_node=False, default="data")
    num_classes: int = struct.field(pytree_node=False, default=0)

    def __post_init__(self):
        for split in ("train", "test"):
            x, y = getattr(self, f"x_{split}"), getattr(self, f"y_{split}")
            if hasattr(x, "shape") and hasattr(y, "shape") and x.shape[:1] != y.shape[:1]:
                raise ValueError(
                    f"Dataset: x_{split} has {x.shape[0]} examples but y_{split} has "
                    f"{y.shape[0]}; they must match along the first axis"
                )

    @property
    def num_train(self) -> int:
        return int(self.x_train.shape[0])

    @property
    def num_test(self) -> int:
        return int(self.x_test.shape[0])

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Shape of one input example (without the example axis)."""
        return tuple(self.x_train.shape[1:])

    @property
    def train(self) -> tuple[jax.Array, jax.Array]:
        return self.x_train, self.y_train

    @property
    def test(self) -> tuple[jax.Array, jax.Array]:
        return self.x_test, self.y_test

    def astype(self, dtype) -> Dataset:
        """The same data with float inputs (and float targets) cast to ``dtype``."""

        def cast(a):
            return a.astype(dtype) if jnp.issubdtype(a.dtype, jnp.floating) else a

        return self.replace(
            x_train=cast(self.x_train),
            y_train=cast(self.y_train),
            x_test=cast(self.x_test),
            y_test=cast(self.y_test),
        )


def sample_batch(data: Dataset, *, key: jax.Array | int, batch_size: int, split: str = "train"):
    """Draws ``batch_size`` distinct examples uniformly at random; jit/vmap friendly.

    Indices are drawn inside compiled code and gathered, so a training loop can sample every
    step inside one ``lax.scan``. ``batch_size`` (and ``split``) must be static under ``jit``.
    A ``batch_size`` equal to the split size returns the whole split in its stored order.

    Args:
      data: the dataset.
      key: PRNG key (or an int seed); vmap over keys for independent batches.
      batch_size: number of examples, ``1 <= batch_size <= len(split)``.
      split: ``"train"`` or ``"test"``.

    Returns:
      ``(x, y)`` with leading axis ``batch_size``.

    Raises:
      ValueError: on an unknown ``split`` or a ``batch_size`` out of range.

    Examples:
      >>> import jax, lljax as ll
      >>> data = ll.data.gaussian_mixture(key=0, num_train=100, num_test=50)
      >>> keys = jax.random.split(jax.random.key(1), 4)  # one batch per key
      >>> xs, ys = jax.vmap(lambda k: ll.data.sample_batch(data, key=k, batch_size=16))(keys)
      >>> xs.shape, ys.shape
      ((4, 16, 2), (4, 16))
    """
    if split not in ("train", "test"):
        raise ValueError(f"split: expected 'train' or 'test', got {split!r}")
    batch_size = _positive_int(batch_size, "batch_size")
    x, y = (data.x_train, data.y_train) if split == "train" else (data.x_test, data.y_test)
    n = x.shape[0]
    if batch_size > n:
        raise ValueError(f"batch_size: {batch_size} exceeds the {n} {split} examples")
    if batch_size == n:
        return x, y
    idx = jr.choice(_as_key(key), n, (batch_size,), replace=False)
    return x[idx], y[idx]


def epoch_batches(num_examples: int, batch_size: int, *, key: jax.Array | int) -> jax.Array:
    """Indices ``(num_examples // batch_size, batch_size)`` of one shuffled epoch.

    The last ``num_examples % batch_size`` examples of the permutation are dropped.

    Examples:
      >>> import jax, lljax as ll
      >>> idx = ll.data.epoch_batches(10, 3, key=jax.random.key(0))
      >>> idx.shape  # 10 // 3 batches; one example is dropped
      (3, 3)
      >>> len(set(idx.ravel().tolist()))  # no example is drawn twice
      9
    """
    num_examples = _positive_int(num_examples, "num_examples")
    batch_size = _positive_int(batch_size, "batch_size")
    if batch_size > num_examples:
        raise ValueError(f"batch_size: {batch_size} exceeds num_examples={num_examples}")
    perm = jr.permutation(_as_key(key), num_examples)
    nb = num_examples // batch_size
    return perm[: nb * batch_size].reshape(nb, batch_size)


def mnist1d(seed: int = 42, *, num_samples: int = 5000, train_split: float = 0.8) -> Dataset:
    """MNIST-1D (Greydanus & Kobak 2020, arXiv:2011.14439) from the ``mnist1d`` generator.

    Same defaults as the published dataset: 5000 samples, 4000 train / 1000 test, inputs of
    length 40 (float32), 10 classes (int32 labels), seed 42. Generated locally (no download);
    the global NumPy RNG the generator seeds is restored afterwards, and the result is cached
    per argument set (the arrays are immutable), so repeated calls are free.

    Args:
      seed: the generator's seed (42 gives the published dataset).
      num_samples: train + test examples; the generator makes ``num_samples // 10`` per
        class, so it is rounded down to a multiple of 10.
      train_split: fraction of those examples used for training.

    Raises:
      ImportError: if the optional ``mnist1d`` package is missing (``pip install lljax[data]``).
      ValueError: on a non-integer ``seed``, ``num_samples`` < 10, or a ``train_split``
        that leaves the train or the test split empty.

    References:
      Greydanus & Kobak, "Scaling down deep learning with MNIST-1D", arXiv:2011.14439.

    Examples:
      >>> import lljax as ll
      >>> data = ll.data.mnist1d(num_samples=100)  # a small version; the default is 5000
      >>> data.x_train.shape, data.x_test.shape, data.num_classes
      ((80, 40), (20, 40), 10)
      >>> data.x_train.dtype, data.y_train.dtype
      (dtype('float32'), dtype('int32'))
    """
    try:
        seed = operator.index(seed)
    except TypeError:
        raise ValueError(f"seed: expected an int, got {seed!r}") from None
    num_samples = _positive_int(num_samples, "num_samples")
    if num_samples < 10:
        raise ValueError(f"num_samples: expected at least 10 (one per class), got {num_samples}")
    if not 0 < train_split < 1:
        raise ValueError(f"train_split: expected a value in (0, 1), got {train_split}")
    total = 10 * (num_samples // 10)  # the generator's own rules: whole classes, then split
    num_train = int(total * train_split)
    if not 0 < num_train < total:
        raise ValueError(
            f"train_split: {train_split} of {total} examples (num_samples={num_samples}) gives "
            f"{num_train} train and {total - num_train} test examples; both need at least one"
        )
    return _mnist1d_cached(seed, num_samples, float(train_split))


@functools.lru_cache(maxsize=4)
def _mnist1d_cached(seed: int, num_samples: int, train_split: float) -> Dataset:
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError as e:  # pragma: no cover - depends on the environment
        raise ImportError(
            "lljax.data.mnist1d needs the optional 'mnist1d' package: pip install 'lljax[data]'"
        ) from e
    args = get_dataset_args()
    args.seed = seed
    args.num_samples = num_samples
    args.train_split = train_split
    # The generator seeds and draws from NumPy's and Python's global RNGs: save and restore
    # both so that calling mnist1d() has no side effect on user code that seeds them.
    state, py_state = np.random.get_state(), random.getstate()  # noqa: NPY002
    try:
        d = make_dataset(args)
    finally:
        np.random.set_state(state)  # noqa: NPY002
        random.setstate(py_state)
    return Dataset(
        x_train=jnp.asarray(d["x"], jnp.float32),
        y_train=jnp.asarray(d["y"], jnp.int32),
        x_test=jnp.asarray(d["x_test"], jnp.float32),
        y_test=jnp.asarray(d["y_test"], jnp.int32),
        name="mnist1d",
        num_classes=10,
    )


def gaussian_mixture(
    *,
    key: jax.Array,
    num_train: int = 1000,
    num_test: int = 1000,
    num_classes: int = 2,
    dim: int = 2,
    separation: float = 3.0,
) -> Dataset:
    """Isotropic unit-variance Gaussian classes around random class means.

    Class means are drawn once as ``separation / √2 · N(0, I_dim)``, so two means are on
    average ``separation · √dim`` apart in root-mean-square distance; labels are uniform.

    Args:
      key: PRNG key (or an int seed); the same key gives the same dataset.
      num_train, num_test: split sizes.
      num_classes: number of Gaussian components (≥ 2).
      dim: input dimension.
      separation: scale of the class means relative to the unit within-class noise.

    Raises:
      ValueError: on non-positive sizes or fewer than two classes.

    Examples:
      >>> import jax, lljax as ll
      >>> data = ll.data.gaussian_mixture(
      ...     key=jax.random.key(0), num_train=64, num_test=64, num_classes=3, dim=5
      ... )
      >>> data.x_train.shape, data.y_test.shape, data.y_test.dtype, data.num_classes
      ((64, 5), (64,), dtype('int32'), 3)
    """
    key = _as_key(key)
    num_train = _positive_int(num_train, "num_train")
    num_test = _positive_int(num_test, "num_test")
    dim = _positive_int(dim, "dim")
    if _positive_int(num_classes, "num_classes") < 2:
        raise ValueError(f"num_classes: expected at least 2, got {num_classes}")
    separation = _nonnegative_float(separation, "separation", "a scale")
    k_mu, k_tr, k_te = jr.split(key, 3)
    means = separation / np.sqrt(2) * jr.normal(k_mu, (num_classes, dim))

    def draw(k, n):
        ky, kx = jr.split(k)
        y = jr.randint(ky, (n,), 0, num_classes)
        return means[y] + jr.normal(kx, (n, dim)), y.astype(jnp.int32)

    x_tr, y_tr = draw(k_tr, num_train)
    x_te, y_te = draw(k_te, num_test)
    return Dataset(x_tr, y_tr, x_te, y_te, name="gaussian_mixture", num_classes=num_classes)


def linear_regression(
    *,
    key: jax.Array,
    num_train: int = 1000,
    num_test: int = 1000,
    dim: int = 10,
    out_dim: int = 1,
    noise: float = 0.1,
    rank: int | None = None,
) -> Dataset:
    """y = W* x + noise with x ~ N(0, I); ``rank`` makes W* low-rank (reduced-rank regression).

    The true matrix is stored nowhere else: recover it by least squares if needed.

    Args:
      key: PRNG key (or an int seed); the same key gives the same dataset.
      num_train, num_test: split sizes.
      dim, out_dim: input and output dimensions; targets have shape ``(n, out_dim)``.
      noise: standard deviation of the Gaussian target noise.
      rank: rank of W* (``None`` for a dense full-rank matrix).

    Raises:
      ValueError: on non-positive sizes, negative noise or a rank above ``min(dim, out_dim)``.

    Examples:
      >>> import jax, lljax as ll
      >>> data = ll.data.linear_regression(key=jax.random.key(0), dim=6, out_dim=4, rank=2)
      >>> data.x_train.shape, data.y_train.shape, data.y_test.shape
      ((1000, 6), (1000, 4), (1000, 4))
      >>> data.num_classes  # regression
      0
    """
    key = _as_key(key)
    num_train = _positive_int(num_train, "num_train")
    num_test = _positive_int(num_test, "num_test")
    dim = _positive_int(dim, "dim")
    out_dim = _positive_int(out_dim, "out_dim")
    noise = _nonnegative_float(noise, "noise", "a standard deviation")
    if rank is not None and not 1 <= _positive_int(rank, "rank") <= min(dim, out_dim):
        raise ValueError(
            f"rank: expected 1 <= rank <= min(dim, out_dim)={min(dim, out_dim)}, got {rank}"
        )
    kw, ku, kx, kn = jr.split(key, 4)
    if rank is None:
        w = jr.normal(kw, (dim, out_dim)) / np.sqrt(dim)
    else:
        w = jr.normal(kw, (dim, rank)) @ jr.normal(ku, (rank, out_dim)) / np.sqrt(dim * rank)
    n = num_train + num_test
    x = jr.normal(kx, (n, dim))
    y = x @ w + noise * jr.normal(kn, (n, out_dim))
    return Dataset(
        x[:num_train], y[:num_train], x[num_train:], y[num_train:], name="linear_regression"
    )


def teacher_student(
    teacher,
    *,
    key: jax.Array,
    num_train: int = 1000,
    num_test: int = 1000,
    noise: float = 0.0,
    classify: bool = False,
) -> Dataset:
    """Labels from a random teacher :class:`~lljax.models.Model` on x ~ N(0, I).

    Args:
      teacher: the teacher model; its params are drawn from ``key``.
      key: PRNG key (or an int seed) for the teacher's params, the inputs and the noise.
      num_train, num_test: examples in each split.
      noise: std of Gaussian label noise (regression only; ``classify=True`` with
        ``noise > 0`` is an error, since argmax labels carry no Gaussian noise).
      classify: if true, labels are the teacher's argmax (classification).

    Raises:
      ValueError: on non-positive sizes, negative noise, or noise with ``classify``.

    Examples:
      >>> import jax, lljax as ll
      >>> teacher = ll.models.mlp([5, 16, 3])
      >>> data = ll.data.teacher_student(teacher, key=jax.random.key(0), classify=True)
      >>> data.x_train.shape, data.y_train.shape, data.y_train.dtype, data.num_classes
      ((1000, 5), (1000,), dtype('int32'), 3)
    """
    key = _as_key(key)
    num_train = _positive_int(num_train, "num_train")
    num_test = _positive_int(num_test, "num_test")
    noise = _nonnegative_float(noise, "noise", "a standard deviation")
    if classify and noise > 0:
        raise ValueError(f"noise: must be 0 with classify=True (argmax labels), got {noise}")
    kp, kx, kn = jr.split(key, 3)
    params = teacher.init(kp)
    n = num_train + num_test
    x = jr.normal(kx, (n, *teacher.input_shape))
    out = teacher.apply(params, x)
    if classify:
        y = jnp.argmax(out, -1).astype(jnp.int32)
        nc = int(out.shape[-1])
    else:
        y = out + noise * jr.normal(kn, out.shape)
        nc = 0
    return Dataset(
        x[:num_train],
        y[:num_train],
        x[num_train:],
        y[num_train:],
        name="teacher_student",
        num_classes=nc,
    )


def modular_arithmetic(
    p: int = 97,
    operation: str = "add",
    train_fraction: float = 0.3,
    *,
    key: jax.Array | None = None,
    seed: int = 0,
) -> Dataset:
    """All pairs ``(a, b)`` with label ``a ∘ b mod p`` (Power et al. 2022, arXiv:2201.02177).

    Inputs are token sequences ``[a, b, p]`` (token ``p`` is the "=" sign), so the vocabulary
    has ``p + 1`` tokens. Operations: ``add``, ``sub``, ``mul``, ``div`` (b ≠ 0, via the
    modular inverse; needs a prime ``p``), ``x2_plus_xy_plus_y2``. The split is a random
    permutation drawn from ``key`` (or ``seed`` when no key is given).

    Args:
      p: the modulus (≥ 2).
      operation: one of the operations above.
      train_fraction: fraction of all pairs used for training, in (0, 1).
      key: PRNG key for the split (takes precedence over ``seed``).
      seed: int seed used when ``key`` is None.

    Raises:
      ValueError: on an unknown operation, ``p < 2``, ``div`` with a composite ``p``, or a
        ``train_fraction`` leaving a split empty.

    Examples:
      >>> import lljax as ll
      >>> data = ll.data.modular_arithmetic(p=5, operation="add", train_fraction=0.4)
      >>> data.num_train, data.num_test, data.num_classes, data.name
      (10, 15, 5, 'modular_add_5')
      >>> x, y = data.train  # rows are [a, b, p]: tokens a, b and "="
      >>> bool(((x[:, 0] + x[:, 1]) % 5 == y).all()), x[:, 2].tolist() == [5] * 10
      (True, True)
    """
    p = _positive_int(p, "p")
    if p < 2:
        raise ValueError(f"p: expected a modulus >= 2, got {p}")
    if operation == "div" and any(p % d == 0 for d in range(2, int(p**0.5) + 1)):
        raise ValueError(f"p: operation 'div' needs a prime modulus (for inverses), got {p}")
    a, b = np.meshgrid(np.arange(p), np.arange(p), indexing="ij")
    a, b = a.ravel(), b.ravel()
    if operation == "add":
        c = (a + b) % p
    elif operation == "sub":
        c = (a - b) % p
    elif operation == "mul":
        c = (a * b) % p
    elif operation == "div":
        keep = b != 0
        a, b = a[keep], b[keep]
        c = (a * np.array([pow(int(v), p - 2, p) for v in b])) % p
    elif operation == "x2_plus_xy_plus_y2":
        c = (a * a + a * b + b * b) % p
    else:
        raise ValueError(
            f"operation: unknown {operation!r}; expected add, sub, mul, div or x2_plus_xy_plus_y2"
        )
    if not 0 < train_fraction < 1:
        raise ValueError(f"train_fraction: expected a value in (0, 1), got {train_fraction}")
    key = _as_key(seed, "seed") if key is None else _as_key(key)
    perm = np.asarray(jr.permutation(key, len(c)))
    x = np.stack([a, b, np.full_like(a, p)], axis=1)[perm].astype(np.int32)
    y = c[perm].astype(np.int32)
    n_train = int(round(train_fraction * len(y)))
    if not 0 < n_train < len(y):
        raise ValueError(f"train_fraction: {train_fraction} of {len(y)} pairs leaves a split empty")
    return Dataset(
        jnp.asarray(x[:n_train]),
        jnp.asarray(y[:n_train]),
        jnp.asarray(x[n_train:]),
        jnp.asarray(y[n_train:]),
        name=f"modular_{operation}_{p}",
        num_classes=p,
    )
