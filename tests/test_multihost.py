"""Multi-host for real, two local processes over gloo collectives: the update steps (two processes x 2 CPU devices
equal one 4-device process), the quality metrics (two processes equal one), and the real training loop end to end
(outputs written once, a checkpoint written by both, metrics at snapshots, SIGTERM to one host stopping both at
one step, restarts on two processes or one continuing the run)."""

import json
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
import PIL.Image
import pytest

from golden import assert_close
from subprocess_env import subprocess_env
from tiny_metrics import tiny_generator
from sg3jax.data import convert_dataset
from sg3jax.metrics.metric_utils import to_uint8
from sg3jax.networks import generator
from sg3jax.training import checkpoint as ckpt
from sg3jax.sampling.export import export_generator, restore_generator

WORKER = pathlib.Path(__file__).with_name('multihost_worker.py')
METRICS_WORKER = pathlib.Path(__file__).with_name('metrics_worker.py')
LOOP_WORKER = pathlib.Path(__file__).with_name('train_worker.py')
TIMEOUT = 1800          # a safety net for a hung collective, not a performance bound


def _free_port():
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def _launch(argv):
    return subprocess.Popen([sys.executable, *map(str, argv)], env=subprocess_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


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


def _run_job(nproc, argv, attempts=3):
    """Runs `nproc` processes of a worker, process i with the command line argv(i, port); a coordinator port taken
    between choosing it and binding it (another program on this host) is retried on a fresh port."""
    for _ in range(attempts):
        port = _free_port()
        codes, logs = _wait([_launch(argv(i, port)) for i in range(nproc)])
        if all(c == 0 for c in codes):
            return logs
        if not any('ddress already in use' in log or 'Failed to bind' in log for log in logs):
            break
    raise AssertionError('\n'.join(log[-4000:] for log in logs))


@pytest.mark.slow
def test_two_processes_match_one_process(tmp_path):
    # The device count per process comes from jax_num_cpu_devices in the worker.
    single = tmp_path / 'single.npz'
    _run_job(1, lambda i, port: [WORKER, i, 1, 4, port, single])
    outs = [tmp_path / f'proc{i}.npz' for i in range(2)]
    logs = _run_job(2, lambda i, port: [WORKER, i, 2, 2, port, outs[i]])
    assert 'process 1/2 holding 2/4 devices' in logs[1]
    ref = dict(np.load(single))
    p0, p1 = dict(np.load(outs[0])), dict(np.load(outs[1]))
    assert sorted(ref) == sorted(p0) == sorted(p1)
    for k in ref:
        np.testing.assert_array_equal(p0[k], p1[k], err_msg=f'processes disagree on {k}')   # one replicated state
        # The same 4-device partitioning either way: identical up to collective reduction order.
        assert_close(p0[k], ref[k], rtol=1e-4, atol_rel=1e-4, atol=1e-6, name=k)


#----------------------------------------------------------------------------
# Metrics on two processes (metrics_worker.py).

@pytest.fixture(scope='module')
def metrics_data(tmp_path_factory):
    """The workers' dataset `ds` and the export `G` of their tiny conditional generator. The dataset: 20 images with
    classes i % 3, 10 made by that generator (other latents than the workers draw) and 10 of uniform noise, so
    that the real and generated distributions overlap in part (precision and recall are neither 0 nor 1)."""
    root = tmp_path_factory.mktemp('metrics_dataset')
    (root / 'src').mkdir()
    params, buffers, g_cfg = tiny_generator('stylegan2', c_dim=3)
    z = jax.random.normal(jax.random.key(123), (10, 16))
    c = jax.nn.one_hot(np.arange(10) % 3, 3)
    generated = np.asarray(to_uint8(generator.apply(params, buffers, z, c, g_cfg)))
    noise = np.random.default_rng(0).integers(0, 256, (10, 16, 16, 3), dtype=np.uint8)
    for i, img in enumerate(np.stack([generated, noise], 1).reshape(20, 16, 16, 3)):
        PIL.Image.fromarray(img).save(root / 'src' / f'{i:02d}.png')
    (root / 'src' / 'dataset.json').write_text(json.dumps({'labels': [[f'{i:02d}.png', i % 3] for i in range(20)]}))
    convert_dataset(root / 'src', root / 'ds', progress=False)
    export_generator(root / 'G', params, buffers, g_cfg)
    return root


def _metrics_job(tmp_path, name, nproc, ndev, data, cache_dir):
    """Runs metrics_worker.py as `nproc` processes of `ndev` devices; (run directory, stdout and results of each
    process)."""
    run_dir = tmp_path / name
    (run_dir / 'cli').mkdir(parents=True)
    outs = [tmp_path / f'{name}-{i}.json' for i in range(nproc)]
    logs = _run_job(nproc, lambda i, port: [METRICS_WORKER, i, nproc, ndev, port, data / 'ds', data / 'G', cache_dir,
                                           run_dir, outs[i]])
    return run_dir, logs, [json.loads(out.read_text()) for out in outs]


@pytest.mark.slow
def test_metrics_on_two_processes_equal_one_process(metrics_data, tmp_path):
    """FID, KID, PR, IS and PPL of a tiny conditional network on two processes of 1 device each equal those of one
    process of 2 devices, exactly (every image is computed on the same device program; the statistics are
    accumulated on the host in the same order), on both processes, and those of one device to float32 rounding;
    only process 0 prints and writes the JSON lines, from the trainer's calls and from calc_metrics; a cache
    directory that is not shared gets its own copy of the dataset statistics, and the repeated FID (which the
    worker computes with those files present) equals the first."""
    _, _, (one,) = _metrics_job(tmp_path, 'one', 1, 2, metrics_data, tmp_path / 'cache-one')
    run_two, logs, two = _metrics_job(tmp_path, 'two', 2, 1, metrics_data, str(tmp_path / 'cache{pid}'))
    _, _, (dev1,) = _metrics_job(tmp_path, 'dev1', 1, 1, metrics_data, tmp_path / 'cache-dev1')
    assert one['num_gpus'] == two[0]['num_gpus'] == 2
    assert two[0] == two[1] == one, (one, two)
    # One device: another per-device batch, so float32 rounding differs (measured: relative 1e-6 for FID and
    # KID; 3e-4 for PPL, whose squared differences are divided by epsilon^2 = 1e-8), and the mesh split is checked.
    for metric, runs in one['results'].items():
        for result, ref in zip(runs, dev1['results'][metric]):
            for k, v in result.items():
                assert v == pytest.approx(ref[k], rel=1e-3 if metric == 'ppl2_wend' else 1e-5), (metric, k)
    fid = one['results']['fid50k_full']
    assert len(fid) == 2 and fid[0] == fid[1] and fid[0]['fid50k_full'] > 0       # the second with the cache
    for metric in ['fid50k_full', 'kid50k_full', 'pr50k3_full', 'is50k', 'ppl2_wend']:
        lines = [json.loads(l) for l in (run_two / f'metric-{metric}.jsonl').read_text().splitlines()]
        assert [l['results'] for l in lines] == one['results'][metric]             # written once, by process 0
        assert all(l['num_gpus'] == 2 and l['snapshot_pkl'] == 'network-snapshot-000000' for l in lines)
    # calc_metrics on the export of that generator: the same FID, printed and written by process 0 alone.
    (line,) = (run_two / 'cli' / 'metric-fid50k_full.jsonl').read_text().splitlines()
    assert json.loads(line)['results'] == fid[0]
    assert '"fid50k_full"' in logs[0] and '"fid50k_full"' not in logs[1]
    # Statistics of FID and KID (Inception) and of PR (VGG-16), in each process's own cache directory.
    cached = [sorted(p.name for p in (tmp_path / f'cache{i}' / 'gan-metrics').iterdir()) for i in range(2)]
    assert cached[0] == cached[1] and [n.split('-')[1] for n in cached[0]] == ['inception', 'inception', 'vgg16']


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
    return workdir, LoopJob(workdir, 2, '--metrics', 'eqt50k_int').finish()


@pytest.mark.slow
def test_two_process_training_run(two_process_run):
    """Both processes train to the end; process 0 alone writes the grids (one per snapshot, as one process
    does), the export and the metric of each snapshot (config.metrics: both compute it); both write their part
    of the checkpoint."""
    workdir, (out0, out1) = two_process_run
    assert out0.rstrip().endswith('done') and out1.rstrip().endswith('done')
    assert 'process 1 holding 1/2 devices' in out1
    grids = [l for l in out0.splitlines() if l.startswith('GRID ')]
    assert grids == ['GRID fakes_init.png process 0'] + ['GRID fakes000000.png process 0'] * 3
    assert 'GRID ' not in out1 and 'tick ' not in out1          # status lines from process 0 only
    records = [json.loads(l) for l in (workdir / 'metric-eqt50k_int.jsonl').read_text().splitlines()]
    assert len(records) == 3 and all(r['num_gpus'] == 2 and r['results']['eqt50k_int'] > 0 for r in records)
    assert len([l for l in out0.splitlines() if l.startswith('eqt50k_int: ')]) == 3
    assert 'eqt50k_int' not in out1
    assert not [p.name for p in workdir.iterdir() if p.name.startswith('.')]      # no temporaries left
    restore_generator(workdir / 'network-snapshot-000000')
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
