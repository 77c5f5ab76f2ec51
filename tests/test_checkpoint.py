"""Orbax checkpoints of the whole training state, and the small sampling export."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sg3jax.networks import generator
from sg3jax.training import checkpoint as ckpt
from sg3jax.training import steps as S
from tiny_training import tiny_spec


def _equal_trees(a, b):
    la, lb = jax.tree.leaves(a), jax.tree.leaves(b)
    assert len(la) == len(lb) and jax.tree.structure(a) == jax.tree.structure(b)
    for x, y in zip(la, lb):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_train_state_round_trip_keep_n_and_latest(tmp_path):
    spec = tiny_spec(batch_size=8)
    state = S.init_state(jax.random.key(0), spec)
    abstract = jax.eval_shape(lambda: state)
    mngr = ckpt.make_manager(tmp_path, max_to_keep=2)
    assert ckpt.restore_latest(mngr, abstract) is None
    for step in (1, 2, 3):
        s = {**state, 'step': jnp.asarray(step, jnp.int32), 'G': jax.tree.map(lambda x: x + step, state['G'])}
        assert ckpt.save(mngr, step, s, {'data_position': step * 10, 'config': {'batch_size': 8}})
    mngr.wait_until_finished()
    assert mngr.all_steps() == [2, 3]                       # keep-N
    restored, meta, step = ckpt.restore_latest(ckpt.make_manager(tmp_path, max_to_keep=2), abstract)
    assert step == 3 and meta == {'data_position': 30, 'config': {'batch_size': 8}}
    _equal_trees(restored, {**state, 'step': jnp.asarray(3, jnp.int32),
                            'G': jax.tree.map(lambda x: x + 3, state['G'])})
    mngr.close()


def test_export_and_restore_generator(tmp_path):
    spec = tiny_spec(batch_size=8)
    cfg = spec.G_cfg
    params, buffers = generator.init(jax.random.key(3), cfg)
    ckpt.export_generator(tmp_path / 'export', params, buffers, cfg, extra={'kimg': 1.5})
    ckpt.export_generator(tmp_path / 'export', params, buffers, cfg, extra={'kimg': 2.0})   # replaces it
    assert sorted(p.name for p in tmp_path.iterdir()) == ['export']                       # no temporaries left
    p2, b2, cfg2 = ckpt.restore_generator(tmp_path / 'export')
    assert cfg2 == cfg
    assert json.loads((tmp_path / 'export' / 'generator.json').read_text())['extra'] == {'kimg': 2.0}
    _equal_trees((p2, b2), (params, buffers))
    z = jax.random.normal(jax.random.key(4), (2, cfg['z_dim']))
    # One jitted program for both (op by op, every small op is compiled on its own: most of the test's time).
    G = jax.jit(lambda p, b: generator.apply(p, b, z, None, cfg))
    np.testing.assert_array_equal(G(p2, b2), G(params, buffers))


def test_restore_generator_errors_name_the_problem(tmp_path):
    with pytest.raises(FileNotFoundError, match='generator.json is missing'):
        ckpt.restore_generator(tmp_path)
    (tmp_path / 'generator.json').write_text('{"format": "something-else"}')
    with pytest.raises(ValueError, match="format 'something-else'"):
        ckpt.restore_generator(tmp_path)
    spec = tiny_spec(batch_size=8)
    params, buffers = generator.init(jax.random.key(3), spec.G_cfg)
    ckpt.export_generator(tmp_path / 'e', params, buffers, spec.G_cfg)
    meta = json.loads((tmp_path / 'e' / 'generator.json').read_text())
    meta['G_cfg']['channel_max'] = 64                       # arrays no longer match the config
    (tmp_path / 'e' / 'generator.json').write_text(json.dumps(meta))
    with pytest.raises(ValueError, match='do not match its generator.json config'):
        ckpt.restore_generator(tmp_path / 'e')
