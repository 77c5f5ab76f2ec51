"""Rematerialisation (`config.remat`): the same update with less memory.

`remat` wraps every G layer (StyleGAN3) or block (StyleGAN2) and every D block in `jax.checkpoint`, so the
backward pass recomputes their insides instead of keeping them. It must not change a single update (same
losses, same new weights, up to float reassociation) and must lower the compiled step's temporary memory, which
is all it is for (the plan offers it as `--fit=remat`).
"""

import dataclasses

import jax
import numpy as np
import pytest

from sg3jax.training import steps as S
from test_steps import _batch, tiny_spec


def _phase_results(spec, names):
    """{phase: (new G, new D, metrics)} of each phase run once from the same initial state."""
    steps = S.make_steps(spec)
    state0 = S.init_state(jax.random.key(0), spec)
    batch, key = _batch(spec.batch_size), jax.random.key(1)
    out = {}
    for name in names:
        state = jax.tree.map(np.array, state0)          # the steps donate their state: a fresh copy each
        new, metrics = steps[name](state, batch, key)
        out[name] = jax.tree.map(np.asarray, (new['G'], new['D'], metrics))
    return out


# Between them the two cases go through every rematerialised path: StyleGAN3 layers (Gmain), StyleGAN2 blocks
# under the path-length double backward (Greg), D blocks (Dmain) and under R1's double backward (Dreg).
@pytest.mark.parametrize('cfg,names', [('stylegan3-t', ['Gmain', 'Dreg']), ('stylegan2', ['Greg', 'Dmain'])])
def test_remat_gives_the_same_updates(cfg, names):
    spec = tiny_spec(batch_size=8, cfg=cfg)
    plain = _phase_results(spec, names)
    remat = _phase_results(dataclasses.replace(spec, remat=True), names)
    for name in names:
        for a, b in zip(jax.tree.leaves(plain[name]), jax.tree.leaves(remat[name])):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6, err_msg=f'{cfg} {name}')
    # The updates moved something (so equal results are not two no-ops).
    state0 = S.init_state(jax.random.key(0), spec)
    for name in names:
        net = 0 if name.startswith('G') else 1
        before = jax.tree.leaves(state0['G' if net == 0 else 'D'])
        assert any(np.max(np.abs(a - b)) > 0 for a, b in zip(jax.tree.leaves(plain[name][net]), before)), name


def _temp_bytes(spec, name):
    steps = S.make_steps(spec)
    state = jax.eval_shape(lambda k: S.init_state(k, spec), jax.random.key(0))
    batch = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype), _batch(spec.batch_size))
    compiled = steps[name].lower(state, batch, jax.eval_shape(lambda: jax.random.key(0))).compile()
    return compiled.memory_analysis().temp_size_in_bytes


def test_remat_lowers_the_temporary_memory_of_the_G_step():
    spec = tiny_spec(batch_size=16, cfg='stylegan3-t')
    plain = _temp_bytes(spec, 'Gmain')
    remat = _temp_bytes(dataclasses.replace(spec, remat=True), 'Gmain')
    assert 0 < remat < 0.8 * plain, (remat, plain)


def test_remat_reaches_the_train_spec():
    from sg3jax.training import config as C
    cfg = C.apply_tiny(C.base_config('stylegan2'))
    assert not S.TrainSpec.from_config(C.resolve(cfg, num_devices=1)).remat
    cfg.remat = True
    assert S.TrainSpec.from_config(C.resolve(cfg, num_devices=1)).remat
