"""Orbax checkpoints of the whole training state, and the small sampling export."""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from faults import file_size_limit
from sg3jax.networks import generator
from sg3jax.training import checkpoint as ckpt
from sg3jax.training import config as config_lib
from sg3jax.training import steps as steps_lib
from sg3jax.sampling.export import export_generator, restore_generator
from tiny_training import tiny_run


def _equal_trees(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) and jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_train_state_round_trip_keep_n_and_latest(tmp_path):
    state = steps_lib.init_state(jax.random.key(0), tiny_run(batch_size=8))
    abstract = jax.eval_shape(lambda: state)
    mngr = ckpt.make_manager(tmp_path, max_to_keep=2)
    assert ckpt.restore_newest(mngr, abstract) is None
    for step in (1, 2, 3):
        s = {**state, 'step': jnp.asarray(step, jnp.int32), 'G': jax.tree.map(lambda x: x + step, state['G'])}
        assert ckpt.save(mngr, step, s, {'nimg': step * 8, 'data_position': step * 10,
                                         'config': {'batch_size': 8}})
    mngr.wait_until_finished()
    assert mngr.all_steps() == [2, 3]                       # keep-N
    restored, meta, step = ckpt.restore_newest(ckpt.make_manager(tmp_path, max_to_keep=2), abstract)
    assert step == 3 and meta == {'nimg': 24, 'data_position': 30, 'config': {'batch_size': 8}}
    _equal_trees(restored, {**state, 'step': jnp.asarray(3, jnp.int32),
                            'G': jax.tree.map(lambda x: x + 3, state['G'])})
    mngr.close()


#----------------------------------------------------------------------------
# Damaged checkpoints: the restart falls back to the newest step that restores.

def _small_state(step):
    return {'w': jnp.arange(3000, dtype=jnp.float32) * step, 'b': {'c': jnp.full((40, 40), step, jnp.float32)},
            'step': jnp.asarray(step, jnp.int32)}


def _two_steps(workdir):
    mngr = ckpt.make_manager(workdir)
    for step in (4, 8):
        ckpt.save(mngr, step, _small_state(step), {'nimg': step * 8, 'data_position': step}, force=True)
    mngr.close()
    return workdir / 'checkpoints' / '8'


def _largest_file(path):
    return max((p for p in path.rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)


def _truncate(step_dir):
    f = _largest_file(step_dir / 'state')
    os.truncate(f, f.stat().st_size // 2)


def _zero_fill(step_dir):
    f = _largest_file(step_dir / 'state')
    f.write_bytes(bytes(f.stat().st_size))


def _no_commit_marker(step_dir):
    (step_dir / ckpt.COMMIT_MARKER).unlink()


def _half_json(step_dir):
    (step_dir / 'meta' / 'metadata').write_text('{"nimg": 64, "data_pos')


@pytest.mark.parametrize('damage, reason', [
    (_truncate, 'OUT_OF_RANGE'), (_zero_fill, 'ZSTD_decompressStream() failed'),
    (_no_commit_marker, 'commit_success.txt is missing'), (_half_json, 'JSONDecodeError')])
def test_a_damaged_newest_checkpoint_falls_back_to_the_previous_one(tmp_path, damage, reason):
    """The damaged step is reported (path and reason), the previous step is restored exactly, and the damaged one
    is moved aside, not deleted, so the run can save that step again."""
    step_dir = _two_steps(tmp_path)
    damage(step_dir)
    kept = sorted((p.relative_to(step_dir), p.read_bytes()) for p in step_dir.rglob('*') if p.is_file())
    lines = []
    mngr = ckpt.make_manager(tmp_path)
    state, meta, step = ckpt.restore_newest(mngr, jax.eval_shape(lambda: _small_state(0)), log=lines.append)
    assert step == 4 and meta == {'nimg': 32, 'data_position': 4}
    _equal_trees(state, _small_state(4))
    assert lines[0].startswith(f'checkpoint {step_dir} cannot be restored (') and reason in lines[0], lines
    moved = tmp_path / ckpt.DAMAGED_DIR / '8'
    assert lines[1] == f'moved {step_dir} to {moved}'
    assert sorted((p.relative_to(moved), p.read_bytes()) for p in moved.rglob('*') if p.is_file()) == kept
    assert mngr.all_steps() == [4]
    ckpt.save(mngr, 8, _small_state(8), {'nimg': 64, 'data_position': 8}, force=True)   # the step again
    mngr.wait_until_finished()
    assert mngr.all_steps() == [4, 8]
    mngr.close()


def test_no_usable_checkpoint_is_one_error_and_changes_nothing(tmp_path):
    step_dir = _two_steps(tmp_path)
    _truncate(step_dir)
    _no_commit_marker(step_dir.with_name('4'))
    with pytest.raises(ckpt.NoUsableCheckpoint) as e:
        ckpt.restore_newest(ckpt.make_manager(tmp_path), jax.eval_shape(lambda: _small_state(0)),
                            log=lambda s: None)
    message = str(e.value)
    assert message.startswith(f'{tmp_path}/checkpoints: no checkpoint can be restored (8: ValueError: OUT_OF_RANGE')
    assert '; 4: FileNotFoundError: commit_success.txt is missing' in message
    assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == ['4', '8']
    assert not (tmp_path / ckpt.DAMAGED_DIR).exists()


def test_check_meta_errors_are_not_damage(tmp_path):
    """A config refused by check_meta is the caller's error, raised as it is; no step is tried or moved."""
    _two_steps(tmp_path)

    def refuse(step, meta):
        raise ValueError(f'step {step} refused')
    with pytest.raises(ValueError, match='step 8 refused'):
        ckpt.restore_newest(ckpt.make_manager(tmp_path), jax.eval_shape(lambda: _small_state(0)), check_meta=refuse)
    assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == ['4', '8']


def test_export_and_restore_generator(tmp_path):
    cfg, _ = config_lib.network_kwargs(tiny_run(batch_size=8))
    params, buffers = generator.init(jax.random.key(3), cfg)
    export_generator(tmp_path / 'export', params, buffers, cfg, extra={'kimg': 1.5})
    export_generator(tmp_path / 'export', params, buffers, cfg, extra={'kimg': 2.0})   # replaces it
    assert sorted(p.name for p in tmp_path.iterdir()) == ['export']                       # no temporaries left
    p2, b2, cfg2 = restore_generator(tmp_path / 'export')
    assert cfg2 == cfg
    assert json.loads((tmp_path / 'export' / 'generator.json').read_text())['extra'] == {'kimg': 2.0}
    _equal_trees((p2, b2), (params, buffers))
    z = jax.random.normal(jax.random.key(4), (2, cfg['z_dim']))
    # One jitted program for both (op by op, every small op is compiled on its own: most of the test's time).
    G = jax.jit(lambda p, b: generator.apply(p, b, z, None, cfg))
    np.testing.assert_array_equal(G(p2, b2), G(params, buffers))


def test_restore_generator_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match='generator.json is missing'):
        restore_generator(tmp_path)
    (tmp_path / 'generator.json').write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="format 'something-else'"):
        restore_generator(tmp_path)
    G_cfg, _ = config_lib.network_kwargs(tiny_run(batch_size=8))
    params, buffers = generator.init(jax.random.key(3), G_cfg)
    export_generator(tmp_path / 'e', params, buffers, G_cfg)
    meta = json.loads((tmp_path / 'e' / 'generator.json').read_text())
    meta['G_cfg']['channel_max'] = 64                       # arrays no longer match the config
    (tmp_path / 'e' / 'generator.json').write_text(json.dumps(meta))
    with pytest.raises(ValueError, match='do not match its generator.json config'):
        restore_generator(tmp_path / 'e')


#----------------------------------------------------------------------------
# Write failures (a full disk): nothing half-written, the path named, nothing committed lost.

def test_a_failed_export_names_it_and_leaves_the_previous_one(tmp_path):
    G_cfg, _ = config_lib.network_kwargs(tiny_run(batch_size=8))
    params, buffers = generator.init(jax.random.key(3), G_cfg)
    path = tmp_path / 'network-snapshot-000004'
    export_generator(path, params, buffers, G_cfg, extra={'kimg': 4})
    before = sorted((p.relative_to(path), p.read_bytes()) for p in path.rglob('*') if p.is_file())
    assert oct(path.stat().st_mode & 0o777) == oct(0o777 & ~_umask())     # not mkdtemp's private 0700
    moved = jax.tree.map(lambda x: x + 1, params)
    with file_size_limit(4096), pytest.raises(OSError) as e:
        export_generator(path, moved, buffers, G_cfg, extra={'kimg': 8})
    assert str(e.value).startswith(f'{path}: the export could not be written (') and 'File too large' in str(e.value)
    assert sorted(p.name for p in tmp_path.iterdir()) == [path.name]              # no temporary left
    assert sorted((p.relative_to(path), p.read_bytes()) for p in path.rglob('*') if p.is_file()) == before


def _umask():
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_a_failed_checkpoint_save_raises_and_loses_nothing_committed(tmp_path):
    """The asynchronous save of step 8 fails on a full disk: waiting for it raises (the run stops), step 4 stays
    the newest committed step, and a restart restores it and removes the uncommitted remains."""
    mngr = ckpt.make_manager(tmp_path)
    ckpt.save(mngr, 4, _small_state(4), {'nimg': 32, 'data_position': 4}, force=True)
    mngr.wait_until_finished()
    with file_size_limit(4096), pytest.raises(ValueError, match='File too large'):
        ckpt.save(mngr, 8, _small_state(8), {'nimg': 64, 'data_position': 8}, force=True)
        mngr.wait_until_finished()
    assert mngr.all_steps() == [4]
    mngr.close()
    state, meta, step = ckpt.restore_newest(ckpt.make_manager(tmp_path), jax.eval_shape(lambda: _small_state(0)))
    assert step == 4
    _equal_trees(state, _small_state(4))
    assert sorted(p.name for p in (tmp_path / 'checkpoints').iterdir()) == ['4']
