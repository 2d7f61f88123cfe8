"""lljax: the science of deep-learning loss landscapes in JAX."""

from importlib import import_module as _import_module

__version__ = "0.1.0"

_MODULES = (
    "init", "models", "losses", "data", "train", "optim", "ensemble",
    "curvature", "spectrum", "landscape", "signal", "critical", "experiments",
)

for _name in _MODULES:
    try:
        globals()[_name] = _import_module(f"lljax.{_name}")
    except ModuleNotFoundError as _e:  # a module not written yet
        if _e.name != f"lljax.{_name}":
            raise

__all__ = list(_MODULES)
