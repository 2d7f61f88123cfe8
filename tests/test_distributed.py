"""Two ``jax.distributed`` processes on localhost equal one process with the same devices.

Each process has 2 CPU devices; together they hold the 4 devices the one-process run in
this test has (conftest). The run covers a sharded population trained, checkpointed and
resumed, its summary and a ``map`` over members, and a data-sharded Hessian's top
eigenvalues (its psum crosses the processes).
"""

import importlib.util
import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import pytest

WORKER = os.path.join(os.path.dirname(__file__), "distributed_worker.py")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


@pytest.mark.slow  # three processes compile the same program (~45 s); CI's slow step runs it
def test_two_processes_equal_one_process(tmp_path):
    assert len(jax.devices()) == 4
    port, ckpt = _free_port(), str(tmp_path / "ckpt")
    env = dict(
        os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2", JAX_PLATFORMS="cpu"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, WORKER, str(tmp_path / f"{i}.json"), ckpt, str(i), "2", str(port)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    logs = []
    try:
        for p in procs:
            logs.append(p.communicate(timeout=300)[0])
    finally:
        for p in procs:
            p.kill()
    for i, p in enumerate(procs):
        assert p.returncode == 0, f"process {i} failed:\n{logs[i][-3000:]}"
    two = [json.loads((tmp_path / f"{i}.json").read_text()) for i in range(2)]

    spec = importlib.util.spec_from_file_location("distributed_worker", WORKER)
    worker = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(worker)
    worker.main(str(tmp_path / "one.json"), str(tmp_path / "one_ckpt"))
    one = json.loads((tmp_path / "one.json").read_text())

    # A checkpoint folder that only one process sees is refused on every process.
    for r in two:
        message = r.pop("unshared_folder")
        assert "processes see different checkpoints" in message and "[2, -1]" in message, message
    assert two[0] == two[1]  # every process gets the whole, identical result
    assert two[0]["process_count"] == 2 and one["process_count"] == 1
    assert two[0]["devices"] == one["devices"] == two[0]["member_devices"] == 4
    # Members never communicate: each member's numbers are the one-process numbers, bit for bit.
    for name in ("test_loss", "summary_test_loss", "sq_norm"):
        assert two[0][name] == one[name], name
    assert np.shape(one["test_loss"]) == (6, 2)  # two evaluations: one before the resume
    # The sharded HVP sums its partial products across processes: float32 rounding only.
    np.testing.assert_allclose(two[0]["top_eigenvalues"], one["top_eigenvalues"], rtol=1e-5)
