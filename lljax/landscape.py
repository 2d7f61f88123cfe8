"""Loss-landscape measurements around a solution.

Sections: the local learning coefficient (LLC) by localised Langevin sampling, with its
closed-form references (implemented in :mod:`lljax.llc`, re-exported here as
``ll.landscape.llc``). Slices, interpolation and sharpness live in their own section.

Examples:
  >>> import lljax as ll
  >>> ll.landscape.rrr_learning_coefficient(3, 2, 3, 2)
  4.0
"""

from __future__ import annotations

# ----------------------------------------------------------------------------------------
# Local learning coefficient (lljax.llc).
from lljax.llc import (  # noqa: F401
    LLCResult,
    LLCState,
    deep_linear_learning_coefficient,
    effective_sample_size,
    llc,
    llc_init,
    llc_run,
    llc_samples,
    llc_summary,
    rrr_learning_coefficient,
    split_rhat,
)
