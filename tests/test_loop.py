"""The real training loop: outputs, ADA, exact resume after SIGKILL (between saves and during one), a damaged
newest checkpoint, clean exit with a checkpoint on SIGTERM, and the stop on a non-finite loss."""

import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import threading

import jax
import numpy as np
import pytest

import train_worker
from faults import file_size_limit
from sg3jax.training import checkpoint as ckpt
from sg3jax.training import config as config_lib
from sg3jax.training import loop
from sg3jax.sampling.export import restore_generator
from subprocess_env import subprocess_env

WORKER = pathlib.Path(__file__).with_name('train_worker.py')
KIMG = '0.064'          # 8 steps of the tiny config's batch 8; ticks of 2 steps, snapshots every 2 ticks
TIMEOUT = 1800          # a safety net for a hung worker, not a performance bound (these hosts run at load 8)
# 8 vs 4 devices sum the batch in another order. What a step computes from the batch (the gradient, so Adam's
# moments, and the buffers) then differs by rounding relative to each tensor's largest value: measured 1.3e-6 (8 vs
# 4 devices, D's last bias; 1.4e-5 with the official 14 synthesis layers, the mapping's first bias), and 8.4e-5
# between one 4-device step compiled at XLA's level 0 and at the default (14 layers; an affine layer's gradient;
# both are sums that nearly cancel). A wrong restart differs at O(0.1-1): the next batch instead of this one 0.12,
# another step key 3.5 (14 layers).
RESTART_TOL = 1e-3


class Worker:
    """A train_worker.py process, its output read line by line, killed if it outlives TIMEOUT."""

    def __init__(self, workdir, *args, kimg=KIMG):
        # StyleGAN3-T: compiled at XLA's default level (see subprocess_env).
        self.p = subprocess.Popen([sys.executable, str(WORKER), str(workdir), kimg, *args],
                                  env=subprocess_env(fast_compile=False), stdin=subprocess.PIPE,
                                  stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
        self.lines = []
        self._watchdog = threading.Timer(TIMEOUT, self.p.kill)
        self._watchdog.daemon = True                 # never keeps pytest alive after the test
        self._watchdog.start()

    def output(self):
        return ''.join(self.lines)

    def wait_for(self, prefix):
        """Reads output until a line starting with `prefix` (the worker's synchronisation points)."""
        for line in self.p.stdout:
            self.lines.append(line)
            if line.startswith(prefix):
                return line
        raise AssertionError(f'worker exited ({self.p.wait()}) before printing {prefix!r}:\n{self.output()[-4000:]}')

    def resume(self):
        """Lets a paused worker go on."""
        self.p.stdin.write('\n')
        self.p.stdin.flush()

    def finish(self, expect_ok=True):
        self.lines.extend(self.p.stdout)
        code = self.p.wait()
        self._watchdog.cancel()
        assert (code == 0) == expect_ok, f'exit code {code}:\n{self.output()[-4000:]}'
        return self.output()


def _final_state(workdir):
    mngr = ckpt.make_manager(workdir)
    step = mngr.latest_step()
    out = mngr.restore(step, args=ckpt.ocp.args.Composite(state=ckpt.ocp.args.StandardRestore(),
                                                          meta=ckpt.ocp.args.JsonRestore()))
    mngr.close()
    return step, out['meta'], jax.device_get(out['state'])


@pytest.fixture(scope='module')
def uninterrupted(tmp_path_factory):
    workdir = tmp_path_factory.mktemp('uninterrupted')
    return workdir, Worker(workdir).finish()


def test_outputs_of_a_run(uninterrupted):
    workdir, out = uninterrupted
    assert 'tick 0 ' in out and 'sec/kimg' in out and out.rstrip().endswith('done')
    names = {p.name for p in workdir.iterdir()}
    assert {'fakes_init.png', 'fakes000000.png', 'stats.jsonl', 'training_options.json', 'checkpoints',
            'network-snapshot-000000'} <= names
    assert any(n.startswith('events.out.tfevents') for n in names)
    stats = [json.loads(l) for l in (workdir / 'stats.jsonl').read_text().splitlines()]
    assert [s['Progress/tick'] for s in stats] == [0, 1, 2, 3, 4]
    assert stats[-1]['Progress/kimg'] == pytest.approx(0.064)
    assert all(np.isfinite(s['Loss/G/loss']) and np.isfinite(s['Loss/D/loss']) for s in stats)
    step, meta, state = _final_state(workdir)
    assert step == 8 and meta['data_position'] == 8 and meta['nimg'] == 64 and int(state['step']) == 8
    params, buffers, cfg = restore_generator(workdir / 'network-snapshot-000000')
    np.testing.assert_array_equal(jax.tree.leaves(params)[0], jax.tree.leaves(state['G_ema'])[0])
    # ADA in the loop: the real logits were positive (mean sign above the worker's target 0) in every tick, so p
    # rose by batch * ada_interval / (ada_kimg * 1000) = 8 * 4 / 100 after steps 4 and 8; the state holds it.
    assert all(s['Loss/signs/real'] > 0 for s in stats)
    assert [s['Progress/augment'] for s in stats] == pytest.approx([0, 0, 0.32, 0.32, 0.64])
    assert float(state['augment']['p']) == pytest.approx(0.64)


def test_sigkill_then_resume_is_exact(uninterrupted, tmp_path):
    ref_dir, _ = uninterrupted
    w = Worker(tmp_path, '--pause-after-checkpoint', '5')
    w.wait_for('PAUSED 5')
    w.p.send_signal(signal.SIGKILL)                  # right after the step-5 checkpoint committed
    w.p.wait()
    out = Worker(tmp_path).finish()
    assert 'resuming from' in out and 'step 5' in out
    step, meta, state = _final_state(tmp_path)
    ref_step, _, ref = _final_state(ref_dir)
    assert step == ref_step == 8
    _assert_equal_states(state, ref)


def _assert_equal_states(state, ref):
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ref), jax.tree.leaves(state)):
        np.testing.assert_array_equal(b, a, err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow
def test_sigkill_during_an_async_save_resumes_from_the_last_committed_step(uninterrupted, tmp_path):
    """SIGKILL while the step-5 save is in flight (its files written to Orbax's temporary directory, not yet
    committed): the restart never sees step 5, resumes from step 1 (Orbax removes the temporary directory), and
    ends bitwise where the uninterrupted run ends."""
    ref_dir, _ = uninterrupted
    w = Worker(tmp_path, '--hang-in-save', '5')
    in_flight = pathlib.Path(w.wait_for('SAVING 5 ').split()[2])
    w.p.send_signal(signal.SIGKILL)
    w.p.wait()
    assert in_flight.is_dir() and in_flight.parent == tmp_path / 'checkpoints'
    assert sorted(p.name for p in in_flight.parent.iterdir()) == sorted(['1', in_flight.name])
    out = Worker(tmp_path).finish()
    assert f'resuming from {tmp_path}/checkpoints step 1 ' in out, out
    assert not in_flight.exists()
    step, _, state = _final_state(tmp_path)
    ref_step, _, ref = _final_state(ref_dir)
    assert step == ref_step == 8
    _assert_equal_states(state, ref)


@pytest.mark.slow
def test_a_truncated_newest_checkpoint_falls_back_and_the_run_ends_where_it_would_have(uninterrupted, tmp_path):
    """The newest checkpoint of a finished run (step 8) loses half of its largest file; restarted, the run
    reports it, moves it to damaged-checkpoints/, resumes from step 5 and trains steps 6-8 again, ending bitwise
    where it ended before. Its stats.jsonl, given a partial last line as a kill during an append leaves, holds
    each step once: the records up to step 5 as they were, then those of the steps trained again."""
    ref_dir, _ = uninterrupted
    workdir = tmp_path / 'run'
    shutil.copytree(ref_dir, workdir)
    step_dir = workdir / 'checkpoints' / '8'
    data = max((p for p in (step_dir / 'state').rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)
    os.truncate(data, data.stat().st_size // 2)
    with open(workdir / 'stats.jsonl', 'a') as f:
        f.write('{"Progress/tick": 5, "Progr')
    out = Worker(workdir).finish()
    ref_lines = (ref_dir / 'stats.jsonl').read_text().splitlines()
    lines = (workdir / 'stats.jsonl').read_text().splitlines()
    kimg = [json.loads(line)['Progress/kimg'] for line in lines]
    ref_kimg = [json.loads(line)['Progress/kimg'] for line in ref_lines]
    kept = sum(k <= 0.040 for k in ref_kimg)        # step 5 = 0.040 kimg at batch 8
    assert 0 < kept < len(lines) and lines[:kept] == ref_lines[:kept]
    # The restarted process has its own first tick after its first step (as the official loop does): 0.048.
    assert kimg[kept:] == pytest.approx([0.048, 0.064]), kimg
    assert f'checkpoint {step_dir} cannot be restored (ValueError: OUT_OF_RANGE: ' in out, out
    assert f'moved {step_dir} to {workdir}/damaged-checkpoints/8' in out
    assert f'resuming from {workdir}/checkpoints step 5 ' in out
    assert (workdir / 'damaged-checkpoints' / '8' / 'state').is_dir()
    step, _, state = _final_state(workdir)
    assert step == 8
    _assert_equal_states(state, _final_state(ref_dir)[2])


FROZEN = ('b16.fromrgb', 'b16.conv0', 'b16.conv1')     # --freezed 3 in the tiny 16 px D


def _fine_tuned(state, source, fresh_p=True):
    """The fine-tuning run's frozen D layers are bitwise the source run's, the rest of D has moved on."""
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(source['D']), jax.tree.leaves(state['D'])):
        name = jax.tree_util.keystr(path)
        if any(name.startswith(f"['{blk}']['{layer}']") for blk, layer in (f.split('.') for f in FROZEN)):
            np.testing.assert_array_equal(b, a, err_msg=name)
        else:
            assert np.abs(b - a).max() > 0, name


@pytest.fixture(scope='module')
def fine_tuned(uninterrupted, tmp_path_factory):
    """--resume=<the uninterrupted run> --freezed=3, run to the end: (its workdir, its output)."""
    workdir = tmp_path_factory.mktemp('fine_tuned')
    return workdir, Worker(workdir, '--resume', str(uninterrupted[0]), '--freezed', '3').finish()


@pytest.mark.slow
def test_fine_tuning_from_a_run_with_freeze_d(uninterrupted, fine_tuned):
    """--resume=<the uninterrupted run> --freezed=3: the run reports what it copied, trains from step 0 with a
    fresh ADA p (the config's, as the official trainer), and ends with its frozen D layers bitwise those of the
    source run's final D and every other D layer moved on."""
    ref_dir, _ = uninterrupted
    workdir, out = fine_tuned
    assert 'resume: G: ' in out and f'tensors from {ref_dir} (run)' in out and 'left at' not in out, out
    stats = [json.loads(l) for l in (workdir / 'stats.jsonl').read_text().splitlines()]
    assert stats[0]['Progress/kimg'] == pytest.approx(0.008) and stats[0]['Progress/augment'] == 0
    step, _, state = _final_state(workdir)
    assert step == 8
    _fine_tuned(state, _final_state(ref_dir)[2])


@pytest.mark.slow
def test_an_interrupted_fine_tuning_run_continues_exactly(uninterrupted, fine_tuned, tmp_path):
    """Killed after its step-5 checkpoint and restarted with the same --resume, the fine-tuning run resumes from
    its own checkpoint (the source is read only at step 0) and ends bitwise where an uninterrupted one ends."""
    ref_dir, _ = uninterrupted
    args = ('--resume', str(ref_dir), '--freezed', '3')
    w = Worker(tmp_path / 'run', *args, '--pause-after-checkpoint', '5')
    w.wait_for('PAUSED 5')
    w.p.send_signal(signal.SIGKILL)
    w.p.wait()
    out = Worker(tmp_path / 'run', *args).finish()
    assert f'resuming from {tmp_path}/run/checkpoints step 5 ' in out and 'resume: ' not in out, out
    _assert_equal_states(_final_state(tmp_path / 'run')[2], _final_state(fine_tuned[0])[2])

def test_restart_with_other_settings_is_refused_before_anything_is_read(uninterrupted, tmp_path, monkeypatch):
    """A restart whose config changes the networks or the optimisation is one error naming each field with both
    values, raised before the state is restored (other channel counts: Orbax would fail on the shapes); the run
    directory is left as it was, training_options.json included. (This process has 8 devices, so the batch must
    grow to 32 to resolve at all: it is listed too, with the values derived from it.)"""
    ref_dir, _ = uninterrupted
    workdir = tmp_path / 'run'
    shutil.copytree(ref_dir, workdir)
    options = (workdir / 'training_options.json').read_text()
    config = train_worker.worker_config()
    config.update(dict(kimg=1.0, batch_size=32, cbase=2048, gamma=2.0))
    monkeypatch.setattr(config_lib, 'resolve', train_worker.tiny_synthesis(config_lib.resolve))
    with pytest.raises(config_lib.ResumeConflict) as e:
        loop.train(config, workdir, make_data=train_worker.make_data, c_dim=0, img_channels=3, log=lambda s: None)
    message = str(e.value)
    assert message.startswith(f'{workdir}/checkpoints step 8 was trained with other settings (batch_size: 8 -> 32; '
                              'cbase: 1024 -> 2048; ema_kimg: 2.5 -> 10.0; gamma: 1.0 -> 2.0; magnitude_ema_beta: ')
    assert message.endswith('Restore those values, or train with the new ones in a new --workdir')
    assert (workdir / 'training_options.json').read_text() == options
    assert ckpt.make_manager(workdir).latest_step() == 8


@pytest.mark.slow
def test_restart_on_fewer_devices_continues_the_run(tmp_path):
    """One step on 8 devices, then a restart on 4: the run continues from the checkpoint's image count and data
    position, and its state after the next step matches an uninterrupted 8-device run's. The global batches are
    the same; 8 and 4 devices sum the batch in another order, so the match is to float32 rounding, not bitwise."""
    ref, run = tmp_path / 'ref', tmp_path / 'run'
    w = Worker(ref, '--devices', '8', '--batch', '32', '--pause-after-checkpoint', '1', kimg='0.064')
    w.wait_for('PAUSED 1')
    shutil.copytree(ref, run)           # the run as it stood at its step-1 checkpoint, then restarted there
    w.resume()
    w.finish()
    out = Worker(run, '--devices', '4', '--batch', '32', kimg='0.064').finish()
    assert 'holding 4/4 devices' in out and f'resuming from {run}/checkpoints step 1 ' in out, out
    (step, meta, state), (ref_step, ref_meta, ref_state) = _final_state(run), _final_state(ref)
    assert step == ref_step == 2 and meta['nimg'] == ref_meta['nimg'] == 64 and meta['data_position'] == 2
    _assert_same_step_to_rounding(state, ref_state, json.loads((ref / 'training_options.json').read_text()))


def _assert_same_step_to_rounding(state, ref, options):
    """`state` and `ref` took the same step from the same state, with the batch summed in another order.

    Exact: the counters and ADA's sign sums. To rounding relative to each tensor's scale (RESTART_TOL): what the
    step computed from the batch, i.e. Adam's moments (mu is the gradient itself, beta1 = 0) and the buffers
    (batch means). The parameters are held to no fixed tolerance: Adam divides each gradient element by its own
    RMS, so an element whose batch sum nearly cancels carries its relative rounding error into its update at
    full size (up to lr). Each weight is held instead to the update that the two runs' own moments imply (both
    started from bitwise the same weights): |w - w_ref| <= lr |r - r_ref| + rounding, with
    r = mu_hat / (sqrt(nu_hat) + eps). G_ema = G + beta (G_ema' - G) is held to |G - G_ref| + rounding."""
    flat = lambda tree: {jax.tree_util.keystr(p): np.asarray(x, np.float64)
                         for p, x in jax.tree_util.tree_leaves_with_path(tree)}
    close = lambda a, b, name: np.testing.assert_array_less(np.abs(a - b), RESTART_TOL * np.abs(b).max() + 1e-30,
                                                            err_msg=name)
    for key in ('step', 'nimg', 'nonfinite', 'augment'):
        ours = flat(state[key])
        for name, a in flat(ref[key]).items():
            np.testing.assert_array_equal(ours[name], a, err_msg=f'{key}{name}')
    buffers = flat(state['buffers'])
    for name, a in flat(ref['buffers']).items():
        close(buffers[name], a, f'buffers{name}')
    ema, ref_ema = flat(state['G_ema']), flat(ref['G_ema'])
    ulps = lambda w: 2 * np.spacing(np.abs(w).astype(np.float32)).astype(np.float64)
    for net in ('G', 'D'):
        adam, ref_adam = state[f'{net}_opt'][0], ref[f'{net}_opt'][0]
        assert adam['count'] == ref_adam['count']
        b1, b2 = options[f'{net}_opt_kwargs']['betas']
        lr, eps, t = options[f'{net}_opt_kwargs']['lr'], options[f'{net}_opt_kwargs']['eps'], float(adam['count'])
        (mu, ref_mu), (nu, ref_nu) = ((flat(adam[m]), flat(ref_adam[m])) for m in ('mu', 'nu'))
        for m, moment, ref_moment in (('mu', mu, ref_mu), ('nu', nu, ref_nu)):
            for name, a in ref_moment.items():
                close(moment[name], a, f'{net}_opt.{m}{name}')
        ratio = lambda mu, nu: mu / (1 - b1 ** t) / (np.sqrt(nu / (1 - b2 ** t)) + eps)
        weights, ref_weights = flat(state[net]), flat(ref[net])
        for name, w_ref in ref_weights.items():
            r, r_ref = ratio(mu[name], nu[name]), ratio(ref_mu[name], ref_nu[name])
            bound = lr * np.abs(r - r_ref) + lr * 1e-6 * (np.abs(r) + np.abs(r_ref)) + ulps(w_ref)
            np.testing.assert_array_less(np.abs(weights[name] - w_ref), bound + 1e-30, err_msg=f'{net}{name}')
            if net == 'G':
                ema_bound = np.abs(weights[name] - w_ref) + ulps(ref_ema[name])
                np.testing.assert_array_less(np.abs(ema[name] - ref_ema[name]), ema_bound + 1e-30,
                                             err_msg=f'G_ema{name}')


def test_nonfinite_loss_stops_the_run_with_its_message(tmp_path):
    """NaN real images at step 2: the D loss of that step is NaN, and the run stops at the next tick (step 3)
    with the step and phase, keeping its last good checkpoint (step 1) and writing none after it."""
    out = Worker(tmp_path, '--nan-at-step', '2').finish(expect_ok=False)
    assert ('NonFiniteLoss: a loss became NaN or Inf at step 2 (kimg 0.016), phase Dmain; set '
            'config.nan_policy=skip to drop such updates instead') in out, out[-3000:]
    assert ckpt.make_manager(tmp_path).all_steps() == [1]


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tmp_path):
    w = Worker(tmp_path, '--pause-after-checkpoint', '1')
    w.wait_for('PAUSED 1')
    w.p.send_signal(signal.SIGTERM)                  # arrives while the run waits after its step-1 checkpoint
    w.resume()
    out = w.finish()
    assert 'preempted (SIGTERM): checkpoint at step 2 written; exiting' in out
    assert ckpt.make_manager(tmp_path).latest_step() == 2     # the very next step, not some later one
    out = Worker(tmp_path).finish()                  # and the run then completes from there
    assert 'resuming from' in out and 'step 2' in out and _final_state(tmp_path)[0] == 8


class _Stopped(Exception):
    """The run of test_metrics_at_snapshots, stopped while it computes a metric."""


@pytest.mark.slow
def test_metrics_at_snapshots(tmp_path, monkeypatch):
    """config.metrics runs at each snapshot on G_ema and appends the official JSON line to metric-<name>.jsonl
    (eqt50k_int needs no dataset or feature network; its sample count is cut down for the test). A run stopped
    after its last checkpoint, during that snapshot's metric, computes the metric when it is restarted (its
    checkpoint state is the snapshot's), once: a second restart adds nothing and drops records and partial lines
    that the checkpoint does not account for."""
    import functools
    import sg3jax.metrics as metrics_lib
    from train_worker import make_data, small_grid, tiny_synthesis, worker_config
    from sg3jax.training import loop
    monkeypatch.setattr(config_lib, 'resolve', tiny_synthesis(config_lib.resolve))
    monkeypatch.setattr(metrics_lib, 'calc_metric',
                        functools.partial(metrics_lib.calc_metric, num_gen=8, batch_size=8))
    monkeypatch.setattr(loop, 'grid_shape', small_grid)
    evaluate, calls = loop._evaluate_metrics, []

    def stop_at_the_second_snapshot(names, *args):
        calls.append(names)
        if len(calls) == 2:
            raise _Stopped
        evaluate(names, *args)
    monkeypatch.setattr(loop, '_evaluate_metrics', stop_at_the_second_snapshot)
    # 2 steps on 8 devices: the training programs of test_restart_on_fewer_devices's 8-device run, found in the
    # session's compilation cache (tests/conftest.py).
    config = worker_config()
    config.update(dict(kimg=0.064, batch_size=32, metrics='eqt50k_int'))
    log_file = tmp_path / 'metric-eqt50k_int.jsonl'
    train = lambda lines: loop.train(config, tmp_path, make_data=make_data, c_dim=0, img_channels=3,
                                     log=lines.append)
    with pytest.raises(_Stopped):
        train([])                                   # snapshots at step 0 and at the end (step 2): stopped in the second
    assert len(log_file.read_text().splitlines()) == 1 and ckpt.make_manager(tmp_path).latest_step() == 2
    lines = []
    train(lines)
    assert 'metrics of network-snapshot-000000 missing from its run (eqt50k_int): computing them' in lines
    assert any(l.startswith('eqt50k_int: eqt50k_int ') for l in lines)
    records = [json.loads(l) for l in log_file.read_text().splitlines()]
    assert [r['snapshot_pkl'] for r in records] == ['network-snapshot-000000', 'network-snapshot-000000']
    assert all(r['metric'] == 'eqt50k_int' and np.isfinite(r['results']['eqt50k_int']) for r in records)
    assert records[0]['results'] != records[1]['results']          # G_ema at step 0, then at step 2
    settled = log_file.read_text()
    with open(log_file, 'a') as f:                   # a record the checkpoint does not know of, and a torn line
        f.write(json.dumps(records[1]) + '\n{"results": {"eqt')
    lines = []
    train(lines)
    assert len(calls) == 3 and not any('missing' in l for l in lines) and log_file.read_text() == settled


def test_a_failed_grid_write_names_it_and_leaves_the_previous_grid(tmp_path):
    images = np.random.RandomState(0).uniform(-1, 1, [8, 32, 32, 3])
    path = tmp_path / 'fakes000004.png'
    loop.save_image_grid(images, path, (4, 2))
    before = path.read_bytes()
    with file_size_limit(1024), pytest.raises(OSError) as e:
        loop.save_image_grid(-images, path, (4, 2))
    assert str(e.value).startswith(f'{path}: the sample grid could not be written (') and 'File too large' in str(e.value)
    assert [p.name for p in tmp_path.iterdir()] == [path.name] and path.read_bytes() == before
