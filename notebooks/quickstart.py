# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Quickstart: the MNIST-1D baselines
#
# MNIST-1D (Greydanus & Kobak 2020) is a procedurally generated 1-D digit dataset (4000
# training and 1000 test signals of length 40, 10 classes) that separates model classes as
# sharply as MNIST does images, at a size a laptop trains in seconds. The paper's Table 1:
#
# | model | published test accuracy |
# |---|---|
# | logistic regression | 32% |
# | MLP (100 hidden units) | 68% |
# | CNN (3 conv layers, 25 channels) | 94% |
# | GRU (6 units per direction) | 91% |
#
# This notebook runs the `quickstart` experiment, the same function `lljax run quickstart`
# calls: every baseline is trained with the paper's settings (Adam, learning rate 1e-2, batch
# 100, PyTorch's default initialisation: kernels uniform in ±1/√fan_in, and every GRU weight
# and bias uniform in ±1/√hidden as `torch.nn.GRU` draws them), each seed a member of one
# vmapped population, and the final test accuracy is compared
# with the published number. The verdict checks the published ordering and agreement within a
# tolerance in percentage points.

# %%
import os

import numpy as np

import lljax as ll

PRESET = os.environ.get("LLJAX_PRESET", "quick")
OUT = os.environ.get("LLJAX_OUT", f"runs/quickstart-{PRESET}")
print(ll.experiments.get("quickstart").preset_notes.get(PRESET, ""))

# %%
result = ll.experiments.run("quickstart", preset=PRESET, out_dir=OUT)
print(ll.report.format_table(result.summary))

# %% [markdown]
# ## Verdict
# The rule: the measured accuracies must order as published and each must lie within the
# preset's tolerance of the published value. The quick preset trains for a third of the
# paper's steps, so the CNN in particular may still be a few points short.

# %%
v = result.verdict
print(v.label, "-", v.claim)
print(v.evidence)

# %% [markdown]
# ## Where it was written
# `results.json` holds the settings, seeds, library versions, device and every measurement with
# its standard error; `report.html` is a self-contained summary with the figures embedded.

# %%
print(sorted(p.name for p in result.out_dir.iterdir()))

# %% [markdown]
# ## Learning curves
# Test accuracy at each evaluation step, mean over seeds, for every baseline.

# %%
for name, curve in result.data["curves"].items():
    steps = np.asarray(curve["eval_step"])
    acc = 100 * np.asarray(curve["test_accuracy_mean"])
    marks = np.linspace(0, len(steps) - 1, 5).astype(int)
    print(f"{name:<9}", "  ".join(f"step {steps[i]}: {acc[i]:.1f}%" for i in marks))
