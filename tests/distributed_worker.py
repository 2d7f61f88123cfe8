"""One process of the two-process run in ``test_distributed.py`` (also run there in-process).

Usage: ``python tests/distributed_worker.py OUT.json CKPT_DIR [PROCESS_ID NUM_PROCESSES
PORT]``. With the last three arguments it joins a ``jax.distributed`` job on localhost first;
each process then sees the devices of every process, and the population and the data are
sharded over all of them.
"""

import functools
import json
import sys

import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import lljax as ll
from lljax.train import _to_host


def main(out: str, ckpt: str, *distributed: str) -> None:
    if distributed:
        pid, n, port = (int(a) for a in distributed)
        jax.distributed.initialize(f"localhost:{port}", num_processes=n, process_id=pid)
    data = ll.data.gaussian_mixture(key=jr.key(0), num_train=64, num_test=32)
    model = ll.models.mlp([2, 8, 2])
    loss_fn = ll.losses.cross_entropy(model)
    kw = dict(key=jr.key(1), num_members=6, batch_size=16, shard=True, progress=False)
    train = functools.partial(ll.ensemble.train, model, loss_fn, optax.sgd(0.1), data, **kw)
    train(steps=10, checkpoint_dir=ckpt)
    pop = train(steps=20, checkpoint_dir=ckpt)  # resumes at step 10
    sq_norm = ll.ensemble.map(lambda p: sum(jnp.sum(x**2) for x in jax.tree.leaves(p)), pop.params)

    p0 = pop.member(0)
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("data",))
    batch = jax.device_put(data.train, jax.local_devices()[0])  # committed to one device
    top = ll.spectrum.eigsh(ll.curvature.hessian(loss_fn, p0, batch, mesh=mesh), k=2, key=jr.key(2))
    record = {
        "process_count": jax.process_count(),
        "devices": len(jax.devices()),
        "member_devices": len(pop.params["Dense_0"]["kernel"].sharding.device_set),
        "test_loss": pop.history["test_loss"].tolist(),
        "summary_test_loss": ll.ensemble.summary(pop, loss_fn, data)["test_loss"].tolist(),
        "sq_norm": _to_host(sq_norm).tolist(),
        "top_eigenvalues": _to_host(top.eigenvalues).tolist(),
    }
    if distributed:
        # A checkpoint folder of each process's own: resuming must fail on every process.
        own = f"{ckpt}.{jax.process_index()}"
        train(steps=2, checkpoint_dir=own)
        try:
            train(steps=4, checkpoint_dir=own)
            record["unshared_folder"] = "resumed"
        except ValueError as e:
            record["unshared_folder"] = str(e)
    with open(out, "w") as f:
        json.dump(record, f)


if __name__ == "__main__":
    main(*sys.argv[1:])
