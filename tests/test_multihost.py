"""Multi-host for real, two local processes over gloo collectives: the update steps (two processes x 2 CPU devices
equal one 4-device process), and the real training loop end to end (outputs written once, a checkpoint written by
both, SIGTERM to one host stopping both at one step, restarts on two processes or one continuing the run)."""

import pathlib
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest

from golden import assert_close
from subprocess_env import subprocess_env
from sg3jax.training import checkpoint as ckpt

WORKER = pathlib.Path(__file__).with_name('multihost_worker.py')
LOOP_WORKER = pathlib.Path(__file__).with_name('train_worker.py')
TIMEOUT = 1800          # a safety net for a hung collective, not a performance bound


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


#----------------------------------------------------------------------------
# The training loop on two processes (train_worker.py: the tiny StyleGAN3-T run of test_loop, 8 steps of batch 8,
# here as 2 processes x 1 device, each loading half of every batch).

class LoopJob:
    """One train_worker.py per process of a jax.distributed job; output read line by line; every process is
    killed once TIMEOUT passes (a hung collective)."""

    def __init__(self, workdir, nproc, *args, kimg='0.064'):
        for _ in range(3):     # a coordinator port taken between choosing and binding it: retried on a fresh one
            port = _free_port()
            common = [str(workdir), kimg, *args]
            if nproc > 1:
                common += ['--num-processes', str(nproc), '--port', str(port)]
            self.procs = [subprocess.Popen([sys.executable, str(LOOP_WORKER), *common, '--process-id', str(i)],
                                           env=subprocess_env(), stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                           stderr=subprocess.STDOUT, text=True) for i in range(nproc)]
            self.lines = [[] for _ in range(nproc)]
            self._watchdog = threading.Timer(TIMEOUT, self.kill)
            self._watchdog.daemon = True
            self._watchdog.start()
            try:
                self.wait_for('process ')      # each has joined the job and seen its devices
                return
            except AssertionError:
                self.kill()
                if not any('ddress already in use' in out or 'Failed to bind' in out for out in self.outputs()):
                    raise

    def kill(self):
        for p in self.procs:
            p.kill()

    def outputs(self):
        return [''.join(lines) for lines in self.lines]

    def wait_for(self, prefix):
        """Reads every process's output until it prints a line starting with `prefix`."""
        for i, p in enumerate(self.procs):
            for line in p.stdout:
                self.lines[i].append(line)
                if line.startswith(prefix):
                    break
            else:
                self.kill()
                raise AssertionError(f'process {i} exited ({p.wait()}) before printing {prefix!r}:\n'
                                     + '\n'.join(out[-3000:] for out in self.outputs()))

    def resume(self):
        for p in self.procs:
            p.stdin.write('\n')
            p.stdin.flush()

    def finish(self):
        for i, p in enumerate(self.procs):
            self.lines[i].extend(p.stdout)
            if p.wait() != 0:
                self.kill()
                raise AssertionError(f'process {i} exit code {p.returncode}:\n'
                                     + '\n'.join(out[-3000:] for out in self.outputs()))
        self._watchdog.cancel()
        return self.outputs()


def _final_state(workdir):
    """The newest checkpoint's step and state (written by other devices, read onto this process's first one)."""
    state, _, step = ckpt.read_training_state(workdir)
    return step, jax.device_get(state)


def _leaves(state):
    return [(jax.tree_util.keystr(path), np.asarray(x)) for path, x in jax.tree_util.tree_leaves_with_path(state)]


@pytest.fixture(scope='module')
def two_process_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('two_process_run')
    return workdir, LoopJob(workdir, 2).finish()


@pytest.mark.slow
def test_two_process_training_run(two_process_run):
    """Both processes train to the end; process 0 alone writes the grids (one per snapshot, as one process
    does) and the export; both write their part of the checkpoint."""
    workdir, (out0, out1) = two_process_run
    assert out0.rstrip().endswith('done') and out1.rstrip().endswith('done')
    assert 'process 1 holding 1/2 devices' in out1
    grids = [l for l in out0.splitlines() if l.startswith('GRID ')]
    assert grids == ['GRID fakes_init.png process 0'] + ['GRID fakes000000.png process 0'] * 3
    assert 'GRID ' not in out1 and 'tick ' not in out1          # status lines from process 0 only
    assert not [p.name for p in workdir.iterdir() if p.name.startswith('.')]      # no temporaries left
    ckpt.restore_generator(workdir / 'network-snapshot-000000')
    step_dir = workdir / 'checkpoints' / '8'
    assert {'ocdbt.process_0', 'ocdbt.process_1'} <= {p.name for p in (step_dir / 'state').iterdir()}


@pytest.mark.slow
def test_sigterm_to_one_process_stops_both_and_restarts_continue(two_process_run, tmp_path):
    """SIGTERM to process 1 while both wait after their step-1 checkpoint: JAX's preemption sync point stops both
    at one step with a checkpoint. Restarted as two processes, the run ends bitwise where the uninterrupted
    two-process run ends, and so it does restarted from the same checkpoint as one process of 2 devices (the
    same global batch; gloo across processes or XLA within one, a sum of two partial gradients is the same in
    either order)."""
    ref_dir, _ = two_process_run
    ref_step, ref = _final_state(ref_dir)
    workdir = tmp_path / 'run'
    job = LoopJob(workdir, 2, '--pause-after-checkpoint', '1')
    job.wait_for('PAUSED 1')
    job.procs[1].send_signal(signal.SIGTERM)
    job.resume()
    outs = job.finish()
    stops = [[l for l in out.splitlines() if l.startswith('preempted (SIGTERM)')] for out in outs]
    assert stops[0] == stops[1] and len(stops[0]) == 1, outs
    step = int(re.fullmatch(r'preempted \(SIGTERM\): checkpoint at step (\d+) written; exiting', stops[0][0])[1])
    assert 1 < step < 8 and ckpt.make_manager(workdir).latest_step() == step
    one_process = tmp_path / 'one_process'
    shutil.copytree(workdir, one_process)

    outs = LoopJob(workdir, 2).finish()
    assert all(f'resuming from {workdir}/checkpoints step {step} ' in out for out in outs)
    final_step, state = _final_state(workdir)
    assert final_step == ref_step == 8
    for (name, a), (_, b) in zip(_leaves(ref), _leaves(state)):
        np.testing.assert_array_equal(b, a, err_msg=name)

    (out,) = LoopJob(one_process, 1, '--devices', '2').finish()
    assert 'holding 2/2 devices' in out and f'resuming from {one_process}/checkpoints step {step} ' in out
    final_step, state = _final_state(one_process)
    assert final_step == 8
    for (name, a), (_, b) in zip(_leaves(ref), _leaves(state)):
        np.testing.assert_array_equal(b, a, err_msg=name)
