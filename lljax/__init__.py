"""lljax: the science of deep-learning loss landscapes in JAX."""

__version__ = "0.1.0"

from lljax import (  # noqa: E402
    critical,
    curvature,
    data,
    ensemble,
    experiments,
    init,
    landscape,
    losses,
    models,
    optim,
    plot,
    report,
    signal,
    spectrum,
    train,
)

__all__ = [
    "critical",
    "curvature",
    "data",
    "ensemble",
    "experiments",
    "init",
    "landscape",
    "losses",
    "models",
    "optim",
    "plot",
    "report",
    "signal",
    "spectrum",
    "train",
]
