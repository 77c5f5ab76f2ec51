"""Rematerialisation (`config.remat`): the same update, its layers recomputed in the backward pass.

`remat` wraps every G layer (StyleGAN3) or block (StyleGAN2) and every D block in `jax.checkpoint`, so the
backward pass recomputes their insides instead of keeping them. It must not change a single update (same
losses, same new weights, up to float reassociation). What memory it saves depends on what the layers keep: since
filtered_lrelu's backward keeps only a packed sign mask, StyleGAN3's G keeps little more than its layers' inputs
without it (the plan offers it as `--fit=remat`).
"""

import jax
import numpy as np
import pytest

from sg3jax.training import steps as steps_lib
from tiny_training import batch as _batch, init_state, tiny_run


def _phase_results(run, names):
    """{phase: (new G, new D, metrics, temporary bytes of its compiled program)} of each phase run once from the
    same initial state. The memory is read from the program the call compiled (lowered for the same arguments,
    `compile` returns the jit's cached executable)."""
    steps = steps_lib.make_steps(run)
    state0 = init_state(run)
    batch, key = _batch(run.batch_size), jax.random.key(1)
    out = {}
    for name in names:
        state = jax.tree.map(np.array, state0)          # the steps donate their state: a fresh copy each
        new, metrics = steps[name](state, batch, key)
        temp = steps[name].lower(state, batch, key).compile().memory_analysis().temp_size_in_bytes
        out[name] = jax.tree.map(np.asarray, (new['G'], new['D'], metrics)) + (temp,)
    return out


# Between them the two cases go through every rematerialised path: StyleGAN3 layers (Gmain), D blocks under R1's
# double backward (Dreg: D's forward blocks, and their backward as the first order of it), StyleGAN2 blocks under
# the path-length double backward (Greg). Both are `slow` (CI runs them): remat is an option, and the StyleGAN3
# case needs the official 14 layers for its memory check (136 s on this host, the default suite's longest test).
@pytest.mark.slow
@pytest.mark.parametrize('cfg,names', [('stylegan3-t', ['Gmain', 'Dreg']), ('stylegan2', ['Greg'])])
def test_remat_gives_the_same_updates(cfg, names):
    run = tiny_run(batch_size=8, cfg=cfg, sg3_layers=14)         # the official depth, where remat pays
    plain = _phase_results(run, names)
    remat = _phase_results(tiny_run(batch_size=8, cfg=cfg, sg3_layers=14, remat=True), names)
    for name in names:
        for a, b in zip(jax.tree.leaves(plain[name][:3]), jax.tree.leaves(remat[name][:3])):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6, err_msg=f'{cfg} {name}')
    # The updates moved something (so equal results are not two no-ops).
    state0 = init_state(run)
    for name in names:
        net = 0 if name.startswith('G') else 1
        before = jax.tree.leaves(state0['G' if net == 0 else 'D'])
        assert any(np.max(np.abs(a - b)) > 0 for a, b in zip(jax.tree.leaves(plain[name][net]), before)), name
    if cfg == 'stylegan3-t':
        # ...and what memory it saves: nothing, now that filtered_lrelu's backward keeps only its packed sign mask.
        # The G step's temporaries on this CPU: 94 MiB without remat, 98 with it; with autodiff's backward of
        # filtered_lrelu (upsampled float32 kept per layer) they were 157 without remat and 120 with it, so this
        # fails if the op's backward keeps upsampled floats again.
        plain_bytes, remat_bytes = plain['Gmain'][3], remat['Gmain'][3]
        assert 0 < plain_bytes <= 1.05 * remat_bytes, (plain_bytes, remat_bytes)

