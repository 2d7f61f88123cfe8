import jax.numpy as jnp
import numpy as np

from lljax import report
from lljax.experiments import Measurement


def test_format_cell_numpy_and_jax_floats_like_python_floats():
    for value in (np.float32(0.912345), jnp.float32(0.912345), np.float64(0.912345)):
        assert report.format_cell(value) == "0.9123"
    assert report.format_cell(np.float32("nan")) == "-"
    assert report.format_cell(jnp.array(np.inf, jnp.float32)) == "-"
    assert report.format_cell(np.int64(3)) == "3" and report.format_cell(np.bool_(True)) == "yes"
    rows = [{"acc": np.float32(0.912345)}, {"acc": 0.5}]
    assert report.format_table(rows) == report.format_table([{"acc": 0.912345}, {"acc": 0.5}])


def test_format_measurement_keeps_numpy_stderr():
    # A NumPy/JAX stderr used to be dropped silently: "29.35" with no uncertainty.
    for stderr in (np.float32(0.25), jnp.float32(0.25), 0.25):
        assert report.format_measurement(29.3512, stderr) == "29.35 ± 0.25"
    assert report.format_measurement(np.float32(48.0), 1, "%") == "48.0 ± 1.0%"
    assert report.format_cell(Measurement(1.23456, np.float32(0.0123))) == "1.235 ± 0.012"


def test_format_measurement_tiny_values_keep_their_digits():
    # Fixed point capped at 8 decimals printed "0.00000000 ± 0.00000000".
    assert report.format_measurement(3.2e-9, 1.5e-10) == "(3.20 ± 0.15)e-09"
    assert report.format_measurement(-3.2e-9, 1.5e-10, "s") == "(-3.20 ± 0.15)e-09s"
    assert report.format_measurement(0.0, 1e-12) == "(0.0 ± 1.0)e-12"
    assert report.format_measurement(1.0, 1e-12) == "1 ± 1.0e-12"
    assert report.format_measurement(0.123, 0.0012) == "0.1230 ± 0.0012"
