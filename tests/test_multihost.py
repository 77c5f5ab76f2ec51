"""Multi-host for real: two local processes x 2 CPU devices over gloo collectives equal one 4-device process."""

import pathlib
import socket
import subprocess
import sys

import numpy as np
import pytest

from golden import assert_close
from subprocess_env import subprocess_env

WORKER = pathlib.Path(__file__).with_name('multihost_worker.py')


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _launch(pid, nproc, ndev, port, out):
    # The device count comes from jax_num_cpu_devices in the worker.
    return subprocess.Popen([sys.executable, str(WORKER), str(pid), str(nproc), str(ndev), str(port), str(out)],
                            env=subprocess_env(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _wait(procs, timeout=1800):
    """(exit codes, outputs); every process is killed once one fails or the timeout (a safety net for a hung
    collective, not a performance bound) passes, so a failed start cannot leave its peer waiting."""
    outs, codes = [], []
    for p in procs:
        try:
            out, _ = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            out = ''
            p.kill()
        outs.append(out)
        codes.append(p.returncode)
        if p.returncode != 0:
            for q in procs:
                q.kill()
    return codes, outs


def _run_job(nproc, ndev, outs, attempts=3):
    """Runs the worker as `nproc` processes; a coordinator port taken between choosing it and binding it (another
    program on this host) is retried on a fresh port."""
    for _ in range(attempts):
        port = _free_port()
        codes, logs = _wait([_launch(i, nproc, ndev, port, outs[i]) for i in range(nproc)])
        if all(c == 0 for c in codes):
            return logs
        if not any('ddress already in use' in log or 'Failed to bind' in log for log in logs):
            break
    raise AssertionError('\n'.join(log[-4000:] for log in logs))


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    single = tmp_path / 'single.npz'
    _run_job(1, 4, [single])
    outs = [tmp_path / f'proc{i}.npz' for i in range(2)]
    logs = _run_job(2, 2, outs)
    assert 'process 1/2 holding 2/4 devices' in logs[1]
    ref = dict(np.load(single))
    p0, p1 = dict(np.load(outs[0])), dict(np.load(outs[1]))
    assert sorted(ref) == sorted(p0) == sorted(p1)
    for k in ref:
        np.testing.assert_array_equal(p0[k], p1[k], err_msg=f'processes disagree on {k}')   # one replicated state
        # The same 4-device partitioning either way: identical up to collective reduction order.
        assert_close(p0[k], ref[k], rtol=1e-4, atol_rel=1e-4, atol=1e-6, name=k)
