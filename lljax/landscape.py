"""Loss-landscape measurements around a solution.

Sections: the local learning coefficient (LLC) by localised Langevin sampling, with its
closed-form references (implemented in :mod:`lljax.llc`); flatness, basin volume, slices,
interpolation and mode connectivity (implemented in :mod:`lljax.geometry`). Both are
re-exported here so that one namespace holds every measurement around a solution.

Examples:
  >>> import lljax as ll
  >>> ll.landscape.rrr_learning_coefficient(3, 2, 3, 2)
  4.0
"""

from __future__ import annotations

# ----------------------------------------------------------------------------------------
# Flatness, volume, slices and paths (lljax.geometry).
from lljax.geometry import (  # noqa: F401
    BasinVolume,
    Curve,
    EpsilonSharpness,
    Instability,
    Interpolation,
    LogDeterminant,
    PacBayesFlatness,
    Sharpness,
    Slice1D,
    Slice2D,
    basin_volume,
    connect,
    curve_point,
    curve_weights,
    epsilon_sharpness,
    expected_sharpness,
    hessian_directions,
    hessian_trace,
    instability,
    interpolate,
    log_determinant,
    normalize_direction,
    pac_bayes_flatness,
    quadratic_log_volume,
    random_direction,
    sharpness,
    slice_1d,
    slice_2d,
    top_eigenvalue,
)

# ----------------------------------------------------------------------------------------
# Local learning coefficient (lljax.llc).
from lljax.llc import (  # noqa: F401
    LLCResult,
    LLCState,
    deep_linear_learning_coefficient,
    deep_linear_teacher,
    effective_sample_size,
    llc,
    llc_init,
    llc_run,
    llc_samples,
    llc_summary,
    rrr_learning_coefficient,
    split_rhat,
)
