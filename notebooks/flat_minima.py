# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Flat minima and generalisation
#
# **Claim.** Flatter minima generalise better (Hochreiter & Schmidhuber 1997): across networks
# trained with different batch sizes, learning rates and widths, sharpness and the local
# learning coefficient (LLC) rank-correlate *positively*, and basin volume *negatively*,
# with the generalisation gap; and large-batch training finds sharper minima than small-batch
# training (Keskar et al. 2017, arXiv:1609.04836).
#
# **Protocol.** A population of MLPs on MNIST-1D is trained on a grid of
# width × batch size × learning rate × seed. Each (width, batch size) group is one vmapped
# population (`lljax.ensemble.train`; the learning rate is a per-member hyperparameter, so
# one compiled program trains the whole group). SGD with momentum runs until the full
# training cross-entropy reaches a target (Jiang et al. 2019's stopping criterion,
# arXiv:1912.02178), so every network is compared at the same training loss. Every minimum
# is then measured, vmapped over the members of a width:
#
# * sharpness: the top Hessian eigenvalue (Lanczos), the Hessian trace (Hutch++), Keskar's
#   ε-sharpness and the PAC-Bayes flatness 1/σ′² (`lljax.landscape`);
# * basin volume: Monte-Carlo volume of the sublevel set {L − L* ≤ ε} from random rays,
#   reported as a per-dimension log radius so that different widths compare;
# * the LLC λ̂ by localised SGLD (singular learning theory: the generalisation error of a
#   Bayesian predictor grows like λ/n, so a *smaller* λ̂ — a more degenerate, "flatter"
#   minimum — should generalise better).
#
# Each measure is rank-correlated with the generalisation gap (train − test accuracy) by
# Kendall's τ with a 95% confidence interval over seeds (networks sharing a seed share their
# initialisation and data order, so the seeds are the independent units): a
# leave-one-seed-out jackknife, τ ± t_{G−1} × s.e. over the G seeds. The seed-cluster
# percentile bootstrap is reported too but not used: with 5–8 seeds it misses more often
# than its nominal 5%. Jiang et al.'s granulated τ (Ψ: the mean τ over members that differ
# in one hyperparameter only) is given alongside.
#
# **Reading the verdict.** A headline measure *supports* the claim when its τ interval
# excludes 0 on the predicted side, and *contradicts* it when it excludes 0 on the other
# side. Keskar's part is the paired mean log-ratio of λ_max at the largest vs the smallest
# batch size (same init, width and learning rate), judged by its 95% t interval. SUPPORTED
# needs all four; any contradiction gives NOT SUPPORTED; otherwise UNDECIDED. The quick
# preset (96 networks, 8 seeds) uses a MNIST-1D subset and one hidden layer; the full preset
# (320 networks, 5 seeds, two hidden layers) is the run of record.
#
# Caveat (Dinh et al. 2017, arXiv:1703.04933): sharpness is not invariant to
# reparametrisations that leave the function unchanged, so a correlation, when found, is an
# empirical regularity of standard training, not a theorem.

# %%
import os

import numpy as np

import lljax as ll
import lljax.report

PRESET = os.environ.get("LLJAX_PRESET", "quick")
OUT = os.environ.get("LLJAX_OUT", f"runs/flat_minima-{PRESET}")
result = ll.experiments.run("flat_minima", preset=PRESET, out_dir=OUT)

# %% [markdown]
# ## Rank correlations with the generalisation gap
#
# One row per measure: the estimate is Kendall τ (± its jackknife standard error over
# seeds), with the 95% interval the verdict uses, Spearman ρ, τ with the cross-entropy gap
# instead of the accuracy gap, and the granulated Ψ. The last row is Keskar's paired
# comparison: its estimate is the mean log-ratio of λ_max (large / small batch) ± its
# standard error, with its 95% t interval.

# %%
print(lljax.report.format_table(result.summary))
print()
print(result.verdict.label)
print(result.verdict.evidence)

# %% [markdown]
# ## The population
#
# Per-network numbers: the hyperparameters, whether the network reached the training-loss
# target (only those are correlated), its generalisation gap and the three headline
# measures.

# %%
m = result.data["members"]
rows = [
    {
        "width": int(m["width"][i]),
        "batch": int(m["batch_size"][i]),
        "lr": float(m["learning_rate"][i]),
        "seed": int(m["seed"][i]),
        "steps": int(m["steps"][i]),
        "converged": bool(m["converged"][i]),
        "test acc %": float(m["test_accuracy"][i]),
        "gap (pp)": float(m["gap"][i]),
        "λ_max": float(m["top_eigenvalue"][i]),
        "log basin radius": float(m["log_basin_radius"][i]),
        "LLC": float(m["llc"][i]),
    }
    for i in range(len(m["gap"]))
]
print(lljax.report.format_table(rows))

# %% [markdown]
# ## Small vs large batch
#
# Mean top Hessian eigenvalue per (width, batch size) group; Keskar et al. predict that the
# large-batch column is the larger one.

# %%
for group, value in result.measurements["top_eigenvalue_by_group"].items():
    print(f"{group:>24}: λ_max = {value}")
print("paired log ratio (large / small batch):", result.measurements["keskar_log_ratio"])
by_batch = {
    int(b): float(np.mean(m["top_eigenvalue"][(m["batch_size"] == b) & m["included"]]))
    for b in np.unique(m["batch_size"])
}
print("mean λ_max by batch size (included networks):", by_batch)

# %% [markdown]
# The figures (`measures_vs_gap.png`, `kendall_tau.png`, `keskar_batch_sharpness.png`) and
# a self-contained `report.html` are in the output folder.

# %%
print("written to", result.out_dir, sorted(p.name for p in result.out_dir.iterdir()))
