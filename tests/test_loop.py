"""The real training loop: outputs, exact resume after SIGKILL, clean exit with a checkpoint on SIGTERM."""

import json
import os
import pathlib
import signal
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from sg3jax.training import checkpoint as ckpt

WORKER = pathlib.Path(__file__).with_name('train_worker.py')
KIMG = '0.064'          # 8 steps of the tiny config's batch 8; ticks of 2 steps, snapshots every 2 ticks


def _start(workdir):
    env = dict(os.environ, JAX_PLATFORMS='cpu')
    env.pop('XLA_FLAGS', None)
    return subprocess.Popen([sys.executable, str(WORKER), str(workdir), KIMG], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)


def _finish(p, timeout=600):
    out, _ = p.communicate(timeout=timeout)
    assert p.returncode == 0, out[-4000:]
    return out


def _wait_for_checkpoint(p, workdir, step, timeout=600):
    target = pathlib.Path(workdir) / 'checkpoints' / str(step)   # committed = renamed from its tmp name
    t0 = time.time()
    while not target.is_dir():
        assert p.poll() is None, p.stdout.read()[-4000:]
        assert time.time() - t0 < timeout
        time.sleep(0.2)


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
    out = _finish(_start(workdir))
    return workdir, out


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
    params, buffers, cfg = ckpt.restore_generator(workdir / 'network-snapshot-000000')
    np.testing.assert_array_equal(jax.tree.leaves(params)[0], jax.tree.leaves(state['G_ema'])[0])


def test_sigkill_then_resume_is_exact(uninterrupted, tmp_path):
    ref_dir, _ = uninterrupted
    p = _start(tmp_path)
    _wait_for_checkpoint(p, tmp_path, 5)
    p.send_signal(signal.SIGKILL)
    p.wait()
    out = _finish(_start(tmp_path))
    assert 'resuming from' in out and 'step 5' in out
    step, meta, state = _final_state(tmp_path)
    ref_step, _, ref = _final_state(ref_dir)
    assert step == ref_step == 8
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(ref), jax.tree.leaves(state)):
        np.testing.assert_array_equal(b, a, err_msg=jax.tree_util.keystr(path))


@pytest.mark.slow
def test_sigterm_writes_a_checkpoint_and_exits_cleanly(tmp_path):
    p = _start(tmp_path)
    _wait_for_checkpoint(p, tmp_path, 1)
    p.send_signal(signal.SIGTERM)
    out = _finish(p)
    assert 'preempted (SIGTERM)' in out
    step = ckpt.make_manager(tmp_path).latest_step()
    assert 1 < step < 8
    out = _finish(_start(tmp_path))                  # and the run then completes from there
    assert 'resuming from' in out and _final_state(tmp_path)[0] == 8


@pytest.mark.slow
def test_metrics_at_snapshots(tmp_path, monkeypatch):
    """config.metrics runs at each snapshot on G_ema and appends the official JSON line to metric-<name>.jsonl
    (eqt50k_int needs no dataset or feature network; its sample count is cut down for the test)."""
    import functools
    import sg3jax.metrics as metrics_lib
    from train_worker import load_config, make_data, small_grid
    from sg3jax.training import loop
    monkeypatch.setattr(metrics_lib, 'calc_metric',
                        functools.partial(metrics_lib.calc_metric, num_gen=8, batch_size=8))
    monkeypatch.setattr(loop, 'grid_shape', small_grid)
    config = load_config('stylegan3_t', 'tiny')
    config.update(dict(kimg=0.064, batch_size=32, batch_gpu=4, metrics='eqt50k_int'))   # 2 steps on 8 devices
    lines = []
    loop.train(config, tmp_path, make_data=make_data, c_dim=0, img_channels=3, log=lines.append)
    records = [json.loads(l) for l in (tmp_path / 'metric-eqt50k_int.jsonl').read_text().splitlines()]
    assert [r['snapshot_pkl'] for r in records] == ['network-snapshot-000000', 'network-snapshot-000000']
    assert all(r['metric'] == 'eqt50k_int' and np.isfinite(r['results']['eqt50k_int']) for r in records)
    assert any(l.startswith('eqt50k_int: eqt50k_int ') for l in lines)
