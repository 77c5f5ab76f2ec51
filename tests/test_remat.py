"""Rematerialisation (`config.remat`): the same update, its layers recomputed in the backward pass.

`remat` wraps every G layer (StyleGAN3) or block (StyleGAN2) and every D block in `jax.checkpoint`, so the
backward pass recomputes their insides instead of keeping them. It must not change a single update (same
losses, same new weights, up to float reassociation). What memory it saves depends on what the layers keep.
Without it a StyleGAN3 layer keeps its styled input and its convolution's output (each about its input's size)
and filtered_lrelu's packed 2-bit mask; with it, only its input, or (`config.remat_policy`) the mask and the
convolution's output too. The layer-level tests check what is kept in each case and that the gradients are
those without remat.
"""

import contextlib
import io
import math
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from sg3jax.networks import generator, synthesis_sg3
from sg3jax.training import steps as steps_lib
from tiny_training import batch as _batch, init_state, tiny_run


def _phase_results(run, names):
    """{phase: (new G, new D, metrics)} of each phase run once from the same initial state."""
    steps = steps_lib.make_steps(run)
    state0 = init_state(run)
    batch, key = _batch(run.batch_size), jax.random.key(1)
    out = {}
    for name in names:
        state = jax.tree.map(np.array, state0)          # the steps donate their state: a fresh copy each
        new, metrics = steps[name](state, batch, key)
        out[name] = jax.tree.map(np.asarray, (new['G'], new['D'], metrics))
    return out


# Between them the two cases go through every rematerialised path: StyleGAN3 layers (Gmain), D blocks under R1's
# double backward (Dreg: D's forward blocks, and their backward as the first order of it), StyleGAN2 blocks under
# the path-length double backward (Greg). Both are `slow` (CI runs them): remat is an option. What a StyleGAN3
# layer keeps, with remat and without, is the layer-level test's.
@pytest.mark.slow
@pytest.mark.parametrize('cfg,names', [('stylegan3-t', ['Gmain', 'Dreg']), ('stylegan2', ['Greg'])])
def test_remat_gives_the_same_updates(cfg, names):
    run = tiny_run(batch_size=8, cfg=cfg)
    plain = _phase_results(run, names)
    remat = _phase_results(tiny_run(batch_size=8, cfg=cfg, remat=True), names)
    for name in names:
        for a, b in zip(jax.tree.leaves(plain[name]), jax.tree.leaves(remat[name])):
            np.testing.assert_allclose(b, a, rtol=1e-4, atol=1e-6, err_msg=f'{cfg} {name}')
    # The updates moved something (so equal results are not two no-ops).
    state0 = init_state(run)
    for name in names:
        net = 0 if name.startswith('G') else 1
        before = jax.tree.leaves(state0['G' if net == 0 else 'D'])
        assert any(np.max(np.abs(a - b)) > 0 for a, b in zip(jax.tree.leaves(plain[name][net]), before)), name


def _layer_fn(remat):
    """(loss(params, x) of one upsampling StyleGAN3 layer, rematerialised as `remat`, params, x): a layer of a
    small T generator (16 px, 32 channels), its output weighted by fixed noise so that every value matters."""
    G_cfg = {'class_name': 'training.networks_stylegan3.Generator', 'z_dim': 8, 'c_dim': 0, 'w_dim': 8,
             'img_resolution': 16, 'img_channels': 3, 'channel_base': 512, 'channel_max': 32,
             'mapping_kwargs': {'num_layers': 1}, 'num_layers': 4, 'num_critical': 1, 'conv_clamp': 256}
    G, G_buf = generator.init(jax.random.key(0), G_cfg)
    spec = generator.spec(G_cfg).synthesis
    layer = next(l for l in spec.layers if l.up_factor > 1 and not l.is_torgb)
    x = jax.random.normal(jax.random.key(1), (2, layer.in_size, layer.in_size, layer.in_channels)) * 3
    w = jax.random.normal(jax.random.key(2), (2, spec.w_dim))
    buf = G_buf['synthesis'][layer.name]
    run = synthesis_sg3.remat_layer(lambda P, x: synthesis_sg3.synthesis_layer(P, buf, x, w, layer, spec)[0],
                                    remat)
    weights = jax.random.normal(jax.random.key(3), jax.eval_shape(run, G['synthesis'][layer.name], x).shape)
    return (lambda P, x: jnp.sum(run(P, x) * weights)), G['synthesis'][layer.name], x


_DTYPES = {'f32': jnp.float32, 'bf16': jnp.bfloat16, 'f16': jnp.float16, 'u8': jnp.uint8, 'i32': jnp.int32}


def _saved_residuals(fn, *args):
    """[(bytes, description)] of what autodiff keeps for fn's backward pass, as
    `jax.ad_checkpoint.print_saved_residuals` prints it ('f32[2,20,20,32] named ... from ...'), without fn's
    arguments and constants."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        jax.ad_checkpoint.print_saved_residuals(fn, *args)
    saved = []
    for line in out.getvalue().splitlines():
        m = re.match(r'(\w+)\[([\d,]*)\] (.*)', line)
        assert m, line
        size = math.prod(int(d) for d in m.group(2).split(',') if d) * jnp.dtype(_DTYPES[m.group(1)]).itemsize
        if not m.group(3).startswith(('from the argument', 'from a constant')):
            saved.append((size, m.group(3)))
    return saved



@pytest.fixture(scope='module')
def plain_layer():
    """(x, saved residuals, gradients) of the layer without remat."""
    loss, P, x = _layer_fn(False)
    return x, _saved_residuals(loss, P, x), jax.jit(jax.grad(loss, argnums=(0, 1)))(P, x)


def test_a_layer_without_remat_keeps_no_upsampled_floats(plain_layer):
    """filtered_lrelu's backward keeps a packed 2-bit mask per upsampled value, no float at the upsampled rate
    (which would be 5.2x the layer's input here): the layer keeps the styled input and the convolution's
    output (the input's size, and 1.11x for the padded convolution's), the mask, and small things."""
    x, saved, _ = plain_layer
    floats = sorted(n for n, d in saved if 'filtered_lrelu_mask' not in d)
    assert floats[-1] <= 1.25 * x.nbytes and floats[-2] <= 1.25 * x.nbytes and floats[-3] < x.nbytes / 4, saved
    # 2 bits for each of the 82x82 upsampled values per channel of a 36x36 input: a third of the input's bytes.
    mask = [n for n, d in saved if 'filtered_lrelu_mask' in d]
    assert len(mask) == 1 and mask[0] <= 0.4 * x.nbytes, saved


@pytest.mark.parametrize('policy', ['inputs', 'masks', 'masks_and_convs'])
def test_remat_policy_keeps_what_it_names_and_gives_the_same_gradients(policy, plain_layer):
    x, plain_saved, want = plain_layer
    loss, P, _ = _layer_fn(policy)
    saved = _saved_residuals(loss, P, x)
    named = sorted(d.split("'")[1] for _, d in saved if d.startswith('named'))
    assert named == {'inputs': [], 'masks': ['filtered_lrelu_mask'],
                     'masks_and_convs': ['filtered_lrelu_mask', 'modulated_conv']}[policy], saved
    # Nothing else of any size: what it keeps beyond the layer's input is what it names.
    assert all(n < x.nbytes / 100 for n, d in saved if not d.startswith('named')), saved
    assert sum(n for n, _ in saved) < sum(n for n, _ in plain_saved)
    got = jax.jit(jax.grad(loss, argnums=(0, 1)))(P, x)
    # Up to float reassociation: the compiler sums the styles' gradient in another order under remat (the three
    # policies agree with each other), so the bound is relative to each gradient's scale.
    for (path, a), b in zip(jax.tree_util.tree_leaves_with_path(want), jax.tree.leaves(got)):
        scale = np.max(np.abs(a))
        assert scale > 0, path
        np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-6 * scale,
                                   err_msg=f'{policy} {jax.tree_util.keystr(path)}')
