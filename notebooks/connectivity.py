# ---
# jupyter:
#   jupytext:
#     formats: py:percent
#     text_representation:
#       extension: .py
#       format_name: percent
# ---

# %% [markdown]
# # Mode connectivity: barriers, curves and the instability to SGD noise
#
# **Claim.** Independently trained networks are separated by a loss barrier on the straight
# line between them, yet a simple trained curve joins them at low loss (Garipov et al. 2018,
# arXiv:1802.10026; Draxler et al. 2018, arXiv:1803.00885). And two copies of one network,
# spawned at step $k$ of training and continued with different minibatch orders, end up
# *linearly* connected once $k$ is large enough (Frankle et al. 2020, arXiv:1912.05671): the
# solutions found from $\theta_k$ then lie in one linearly connected basin, so SGD noise no
# longer decides which basin is reached.
#
# **What is measured** (all on MNIST-1D with a ReLU MLP trained by plain SGD):
#
# 1. *Linear barrier* between disjoint pairs of independently trained networks,
#    $B = \max_t \big[L(\theta_t) - ((1-t) L(\theta_a) + t L(\theta_b))\big]$ with
#    $\theta_t = (1-t)\theta_a + t\theta_b$, on the training loss.
# 2. *Curve barrier*: the same height along a quadratic Bezier curve
#    $\varphi(t) = (1-t)^2\theta_a + 2t(1-t)\theta_1 + t^2\theta_b$ whose bend $\theta_1$ is
#    trained to minimise $\mathbb{E}_{t\sim U(0,1)} L(\varphi(t))$
#    (`ll.landscape.connect`). Same pairs, so the reduction is a paired difference.
# 3. *Instability vs spawn step*: a parent is trained for $k$ steps and copied; both copies
#    train for the remaining steps with different data orders; the instability is Frankle's
#    test-error barrier $\max_t E(t) - \tfrac12(E(0) + E(1))$ between them
#    (`ll.landscape.instability`). Every spawn step and pair is one member of a single
#    vmapped population; a per-member step budget zeroes the learning rate when a member's
#    budget is spent, so a parent stopped at $k$ is exactly step $k$ of its trajectory.
#
# **How to read the verdict.** It is computed from the numbers by a stated rule: (a) the
# linear barrier's 95% Student-t interval over pairs lies above zero; (b) the interval of
# the paired difference linear − curve lies above zero and the curve barrier is at most a
# quarter of the linear one; (c) Kendall's τ between spawn step and instability is
# negative with a bootstrap 95% interval below zero. All three: SUPPORTED; any one failing
# decisively: NOT SUPPORTED; otherwise UNDECIDED.

# %%
import os

import numpy as np

import lljax as ll

PRESET = os.environ.get("LLJAX_PRESET", "quick")
OUT = os.environ.get("LLJAX_OUT", f"runs/connectivity-{PRESET}")
print(ll.experiments.get("connectivity").preset_notes.get(PRESET, ""))

# %%
result = ll.experiments.run("connectivity", preset=PRESET, out_dir=OUT)
print(ll.report.format_table(result.summary))

# %% [markdown]
# ## Verdict

# %%
v = result.verdict
print(v.label, "-", v.claim)
print(v.evidence)

# %% [markdown]
# ## The loss along the two paths
# Training loss at each point of the straight line and of the trained Bezier curve,
# averaged over the independent pairs. The line rises far above its endpoints in the
# middle; the curve stays near their level.

# %%
t = np.asarray(result.data["t"])
line = np.asarray(result.data["linear_losses"]).mean(0)
curve = np.asarray(result.data["curve_losses"]).mean(0)
for i in np.linspace(0, len(t) - 1, 5).astype(int):
    print(f"t = {t[i]:.2f}   line {line[i]:.3f}   curve {curve[i]:.3f}")

# %% [markdown]
# ## Instability vs spawn step
# One row per spawn step: the test-error barrier of each pair of copies (in %). Frankle's
# definition is never negative and keeps a small floor from the two endpoints' different
# errors, so "stable" means close to that floor rather than exactly zero.

# %%
spawn, inst = result.data["spawn_steps"], np.asarray(result.data["instability"])
for k, row in zip(spawn, inst, strict=True):
    print(f"k = {int(k):5d}   " + "  ".join(f"{100 * x:5.1f}" for x in row))
tau = result.measurements["kendall_tau_spawn_instability"]
if tau is not None:
    print(f"Kendall tau = {tau['value']:.2f}, 95% CI [{tau['low']:.2f}, {tau['high']:.2f}]")

# %% [markdown]
# ## Where it was written
# `results.json` holds the settings, seeds, versions, device, every measurement with its
# standard error and the arrays above; `report.html` embeds the three figures (paths,
# instability vs spawn step, error along the spawned pairs' lines).

# %%
print(sorted(p.name for p in result.out_dir.iterdir()))
