# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Unit variance: signal propagation and trainability with depth
#
# **Claim.** Mean-field theory of random networks (Poole et al. 2016, arXiv:1606.05340;
# Schoenholz et al. 2017, arXiv:1611.01232) predicts what happens to a signal pushed through
# many layers at initialisation:
#
# * the pre-activation second moment follows the *length map*
#   $q^{l+1} = \sigma_w^2\,\mathbb{E}[\phi(\sqrt{q^l}z)^2] + \sigma_b^2$, so ReLU nets keep it
#   only at $\sigma_w^2 = 2$ (He), and it halves (LeCun) or grows geometrically elsewhere;
# * backpropagated gradients are multiplied by $\chi(q^l) = \sigma_w^2\,\mathbb{E}[\phi'^2]$ per
#   layer: they explode in the chaotic phase ($\chi_1 > 1$) even when the forward signal is
#   bounded (tanh with large $\sigma_w^2$), and with BatchNorm (Yang et al. 2019);
# * LayerNorm, BatchNorm and residual branches scaled by $1/\sqrt{L}$ keep the forward signal
#   bounded, while unscaled residual branches ($\alpha = 1$) multiply it by $1 + 2\alpha^2$ per
#   block;
# * correlations between inputs approach a fixed point over a depth scale
#   $\xi_c = -1/\log\chi_c$ that diverges at the edge of chaos $\chi_1 = 1$, and networks
#   train only while depth $\lesssim c\,\xi_c$ (the paper finds $c \approx 6$).
#
# **Protocol.** (1) For ten schemes — naive ones (ReLU LeCun, over-scaled ReLU, LeCun tanh,
# chaotic tanh, residual $\alpha = 1$) and principled ones (He, the tanh edge of chaos, He with
# LayerNorm or BatchNorm, residual $\alpha = 1/\sqrt{L}$) — networks of depth 100 (quick) are
# initialised and one forward/backward pass on MNIST-1D inputs records every layer's
# second moment, the backpropagated second moment, the mean pairwise cosine and the effective
# rank of the batch. (2) tanh networks on a (σ_w², depth) grid, with σ_b² = 0.05, are trained
# on MNIST-1D; every depth is one vmapped population whose members differ in σ_w², seed and
# optimizer (SGD, clipped SGD, SGD with weight decay, Adam). (3) The ten schemes are trained at
# a fixed depth with each optimizer.
#
# **How to read the verdict.** Part (a) compares, scheme by scheme, whether each second
# moment stays within a factor $F$ of its reference layer with the mean-field prediction, and
# checks rank collapse where predicted. Part (b) takes the deepest trained depth at each
# σ_w² on the SGD map and asks whether it rises with $\xi_c(\sigma_w^2)$ (Spearman ρ); the
# fraction of cells agreeing with depth ≤ c·ξ_c is shown for the paper's c and the best c. The
# quick preset trains for only 500 steps, where trainable depths are shorter than after the
# paper's long runs, so a failed part (b) there is UNDECIDED rather than a refutation.

# %%
import os

import numpy as np

import lljax as ll

PRESET = os.environ.get("LLJAX_PRESET", "quick")
OUT = os.environ.get("LLJAX_OUT", f"runs/unit_variance-{PRESET}")
print(ll.experiments.get("unit_variance").preset_notes.get(PRESET, ""))

# %%
result = ll.experiments.run("unit_variance", preset=PRESET, out_dir=OUT)
print(ll.report.format_table(result.summary))

# %% [markdown]
# ## Verdict
# Drifts are $\max_l |\log_{10}(q^l/q^0)|$ per network (mean ± standard error over
# networks); "kept" means below $\log_{10} F$. The mean-field gap is the largest distance,
# in decades, between the measured and the predicted forward curve.

# %%
v = result.verdict
print(v.label, "-", v.claim)
print(v.evidence)

# %% [markdown]
# ## Second moments through depth
# The forward second moment relative to the first hidden layer, mean over networks, beside
# the mean-field length map (dashed in the figure `forward_second_moment.png`). He and the
# normalised nets stay flat (He only on average: at finite width each network's second
# moment wanders log-normally, Var ln q_L ≈ 5L/n, which mean-field theory ignores — see the
# notes); LeCun ReLU loses a factor 2 per layer, LeCun tanh decays like $1/l$ (and its
# gradient second moment like $l/L$, vanishing toward the input), and unscaled residual
# blocks overflow float32 before layer 100.

# %%
curves = result.data["curves"]
for name, c in curves.items():
    y = np.asarray(c["log10_q_mean"])
    marks = np.linspace(0, len(y) - 1, 5).astype(int)
    row = "  ".join(f"l={i}: {y[i]:+7.2f}" for i in marks)
    print(f"{name:<15} {row}")

# %% [markdown]
# Rank collapse: the effective rank of the batch's representations at the first and the last
# hidden layer. Plain deep ReLU nets map all inputs to nearly the same direction; BatchNorm
# and $1/\sqrt{L}$ residual branches keep them apart.

# %%
for name, c in curves.items():
    r = np.asarray(c["effective_rank_mean"])
    cos = np.asarray(c["cosine_mean"])
    print(f"{name:<15} rank {r[0]:5.1f} -> {r[-1]:5.1f}   cosine {cos[0]:.2f} -> {cos[-1]:.2f}")

# %% [markdown]
# ## The trainability map
# Final train accuracy (%) of the SGD-trained tanh nets, depth by σ_w²; the mean-field depth
# scale ξ_c of each column is printed above it (`trainability_heatmap.png` overlays c·ξ_c and
# the critical line).

# %%
heat = result.data["heat"]
acc = np.asarray(heat["train_accuracy"])  # (optimizers, depths, sigmas, seeds)
sigmas = np.asarray(heat["sigma_w2"])
print("σ_w²      " + " ".join(f"{s:6.2f}" for s in sigmas))
print("ξ_c       " + " ".join(f"{x:6.1f}" for x in np.asarray(heat["xi_c"], float)))
for o, opt in enumerate(heat["optimizers"]):
    print(opt)
    for d, depth in enumerate(heat["depths"]):
        print(f"  L={depth:<5} " + " ".join(f"{a:6.1f}" for a in acc[o, d].mean(-1)))
