# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Hessian spectra of a seed population on MNIST-1D
#
# **Claim.** After training, the Hessian of a classifier has a *bulk* of eigenvalues near
# zero and a few large *outliers*, about as many as there are classes (Sagun et al. 2017,
# arXiv:1706.04454). Papyan (arXiv:1811.07062, 2008.11865) explains them: the Gauss–Newton
# part of the Hessian carries the class means of the logit gradients, which give ≈ C
# outliers (C = 10 here), with a finer C(C−1) structure below them.
#
# Three related claims are measured on the same runs:
#
# * **BatchNorm** removes or shrinks the outliers (Ghorbani, Krishnan & Xiao,
#   arXiv:1901.10159). The BatchNorm Hessian is taken with the normalisation frozen at the
#   training set's population statistics.
# * **Marchenko–Pastur at initialisation.** Pennington & Bahri (2017) model the Gauss–Newton
#   matrix as a Wishart matrix. For a 1-hidden-layer net with squared loss, the readout block
#   of the GGN is exactly the Gram matrix `(1/n) ΦᵀΦ ⊗ I` of the random hidden features;
#   for i.i.d. features its spectrum is MP with aspect ratio `W/n`.
# * **Evolution.** λ_max and the trace are followed through training (progressive
#   sharpening, arXiv:2002.09572, 2103.00065).
#
# **Protocol.** A population of MLPs (one leading member axis, one compiled training
# program per architecture) is trained with Adam, with and without BatchNorm, from the same
# keys. At each checkpoint every member's Hessian (on a fixed set of training examples) gets
# its top eigenvalues by thick-restart Lanczos and its density by stochastic Lanczos
# quadrature, all members in one `jax.vmap`.
#
# **Counting outliers.** The SLQ density is smoothed with Papyan's kernel width σ. One isolated
# eigenvalue is then a bump of height `1/(P σ √(2π))`; the *bulk edge* is where, going up
# from the mode, the density first falls below `edge_level` times that height. Outliers are
# the Lanczos eigenvalues above the edge. The summary also shows the count with the level
# ten times lower and higher, and an independent count from the SLQ mass above the edge.
#
# **Reading the verdicts.** Every rule compares a mean over seeds with a threshold through
# its 95% Student-t interval, mean ± t₀.₉₇₅(n − 1) × s.e. (`Measurement.margin()`; with 3
# seeds t₂ = 4.30, so "2 standard errors" would be far too optimistic). Outliers: supported
# if the interval of the mean count lies within C ± `tolerance` (a count reaching `top_k` is
# censored: undecided). BatchNorm and sharpening: paired differences over seeds, decided
# when the interval excludes 0 (undecided in between, and for BatchNorm when a count is
# censored). MP: the total-variation distance between the smoothed SLQ density and MP
# (scale fitted) may exceed, by at most `mp_margin`, the distance for an exact Wishart matrix
# with the network's structure, `(1/n) ZᵀZ ⊗ I_C` (the pipeline's floor: its SLQ density
# averages the same C copies of each eigenvector as the network's). Ties with a threshold
# count as within it.

# %%
import os

import numpy as np

import lljax as ll

PRESET = os.environ.get("LLJAX_PRESET", "quick")
OUT = os.environ.get("LLJAX_OUT", f"runs/spectra-{PRESET}")

# %%
result = ll.experiments.run("spectra", preset=PRESET, out_dir=OUT)

# %% [markdown]
# ## Summary
# One row per quantity; mean ± standard error over the seeds.

# %%
print(ll.report.format_table(result.summary))

# %%
v = result.verdict
print(f"Claim: {v.claim}\nVerdict: {v.label} - {v.evidence}\n")
for name, sub in result.measurements["verdicts"].items():
    print(f"{name}: {sub.label} - {sub.evidence}")

# %% [markdown]
# ## A look at the measured arrays
# The top eigenvalues of each member of the plain population, with the bulk edge found from
# its density: the outliers are the unstarred values to the right of the bar (above the
# edge); starred values are in the bulk.

# %%
plain = result.data["none"]
for i, (top, edge) in enumerate(zip(plain["top_eigenvalues"], plain["bulk_edge"], strict=True)):
    marks = " ".join(f"{x:.2f}" + ("" if x > edge else "*") for x in top)
    print(f"seed {result.seeds[i]}: edge {edge:.2f} | {marks}   (* = bulk)")

# %% [markdown]
# λ_max (mean over seeds) at each checkpoint, with and without BatchNorm.

# %%
print("step      ", "  ".join(f"{int(s):>6d}" for s in result.data["marks"]))
for norm in ("none", "batch"):
    lam = np.asarray(result.data[norm]["lambda_max"]).mean(0)
    print(f"{norm:<10}", "  ".join(f"{x:6.2f}" for x in lam))

# %% [markdown]
# Figures (written to the output folder): `spectra.png` (densities, bulk edges and top
# eigenvalues), `top_eigenvalues.png`, `marchenko_pastur.png`, `evolution.png`.

# %%
print(sorted(p.name for p in result.out_dir.glob("*.png")))
