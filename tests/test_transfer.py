"""Fine-tuning (config.resume, training/transfer.py) from an official-format pickle, an sg3jax run and a sampling
export, into the same config or a conditional one; the mismatches it refuses; and Freeze-D."""

import jax
import numpy as np
import pytest

import golden
import pkl_fixtures as pf
from sg3jax import legacy
from sg3jax.networks.state_dicts import flatten
from sg3jax.networks import discriminator
from sg3jax.training import checkpoint as ckpt
from sg3jax.training import config as config_lib
from sg3jax.training import steps as steps_lib
from sg3jax.training import transfer
from sg3jax.sampling.export import export_generator
from tiny_training import tiny_run, train_steps, with_networks


def _run(G_cfg, D_cfg):
    return with_networks(tiny_run(batch_size=8), G_cfg, D_cfg)


def _zero_state(run):
    """init_state's structure and dtypes, all zeros: whatever a resume does not copy stays exactly zero."""
    abstract = jax.eval_shape(lambda k: steps_lib.init_state(k, run), jax.random.key(0))
    return jax.tree.map(lambda a: np.zeros(a.shape, a.dtype), abstract)


def _random_like(tree, seed):
    rng = np.random.RandomState(seed)
    return jax.tree.map(lambda a: rng.standard_normal(a.shape).astype(a.dtype), tree)


def _golden_cfgs(c_dim=0):
    G_cfg = golden.json_field(golden.load('G_sg3t_64'), 'config_json')
    D_cfg = golden.json_field(golden.load('D_64'), 'config_json')
    return {**G_cfg, 'c_dim': c_dim}, {**D_cfg, 'c_dim': c_dim}


@pytest.fixture(scope='module')
def official_pkl(tmp_path_factory):
    """An official-format snapshot of the golden StyleGAN3-T 64 px G (as G and G_ema) and D."""
    G, _, _ = pf.golden_net('G_sg3t_64')
    D, _, _ = pf.golden_net('D_64')
    path = pf.write_network_pkl(tmp_path_factory.mktemp('pkl') / 'network-snapshot.pkl', {'G': G, 'D': D, 'G_ema': G})
    return path, legacy.load_network_pkl(path)


def _assert_copied(got, want, names=None):
    got, want = flatten(got), flatten(want)
    for name in names if names is not None else got:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)


def _assert_same_leaves(got, want):
    """Optimiser states (optax tuples): the same leaves, bitwise."""
    assert jax.tree.structure(got) == jax.tree.structure(want)
    for a, b in zip(jax.tree.leaves(got), jax.tree.leaves(want)):
        np.testing.assert_array_equal(a, b)


def test_fine_tune_from_an_official_pickle(official_pkl):
    """Every parameter and buffer of G, D and G_ema comes from the pickle; the optimiser states stay fresh."""
    path, nets = official_pkl
    G_cfg, D_cfg = _golden_cfgs()
    run = _run(G_cfg, D_cfg)
    fresh = _zero_state(run)
    lines = []
    state = transfer.apply_source(fresh, transfer.load_source(path), *config_lib.network_kwargs(run), str(path),
                                  log=lines.append)
    for name in ('G', 'G_ema'):
        _assert_copied(state[name], nets[name]['params'])
        _assert_copied(state['buffers'][name], nets[name]['buffers'])
    _assert_copied(state['D'], nets['D']['params'])
    _assert_same_leaves(state['G_opt'], fresh['G_opt'])
    _assert_same_leaves(state['D_opt'], fresh['D_opt'])
    n_G = len(flatten(nets['G']['params'])) + len(flatten(nets['G']['buffers']))
    assert lines == [f'resume: G: {n_G} tensors from {path} (pickle)', f'resume: G_ema: {n_G} tensors from {path} '
                     f'(pickle)', f'resume: D: {len(flatten(nets["D"]["params"]))} tensors from {path} (pickle)']


def test_fine_tune_an_unconditional_pickle_into_a_conditional_config(official_pkl):
    """The label-shaped tensors (G: the label embedding and the first mapping layer, which takes z and the
    embedded label; D: its label mapping and the output projected onto it) keep their initialisation; every
    other tensor is the pickle's."""
    path, nets = official_pkl
    G_cfg, D_cfg = _golden_cfgs(c_dim=10)
    run = _run(G_cfg, D_cfg)
    lines = []
    state = transfer.apply_source(_zero_state(run), transfer.load_source(path), *config_lib.network_kwargs(run),
                                  str(path),
                                  log=lines.append)
    G_new = {'mapping.embed.weight', 'mapping.embed.bias', 'mapping.fc0.weight'}
    G = flatten(state['G'])
    assert G_new <= set(G) and all(not G[n].any() for n in G_new)
    _assert_copied(state['G'], nets['G']['params'], set(G) - G_new)
    D = flatten(state['D'])
    D_new = {n for n in D if n.startswith('mapping.')} | {'b4.out.weight', 'b4.out.bias'}
    assert len(D_new) > 2 and all(not D[n].any() for n in D_new)
    _assert_copied(state['D'], nets['D']['params'], set(D) - D_new)
    assert lines[0] == (f'resume: G: {len(flatten(state["G"])) - 3 + len(flatten(state["buffers"]["G"]))} tensors '
                        f'from {path} (pickle); left at their initialisation: mapping.embed.bias, '
                        'mapping.embed.weight, mapping.fc0.weight'), lines


def test_fine_tune_from_an_sg3jax_run_and_from_an_export(tmp_path):
    """From a run directory: its newest checkpoint's G, D, G_ema and buffers, not its optimiser states. From a
    sampling export: G and G_ema both from its G_ema, D left at its initialisation."""
    run = tiny_run(batch_size=8)
    saved = _random_like(_zero_state(run), seed=1)
    mngr = ckpt.make_manager(tmp_path / 'run')
    G_cfg, D_cfg = config_lib.network_kwargs(run)
    meta = {'nimg': 8, 'data_position': 1, 'config': {'G_kwargs': G_cfg, 'D_kwargs': D_cfg}}
    ckpt.save(mngr, 1, saved, meta, force=True)
    mngr.close()
    fresh = _zero_state(run)
    state = transfer.apply_source(fresh, transfer.load_source(tmp_path / 'run'), *config_lib.network_kwargs(run), 'run',
                                  log=lambda s: None)
    for name in ('G', 'G_ema', 'D'):
        _assert_copied(state[name], saved[name])
    for name in ('G', 'G_ema'):
        _assert_copied(state['buffers'][name], saved['buffers'][name])
    _assert_same_leaves(state['G_opt'], fresh['G_opt'])
    assert not state['buffers']['pl_mean'].any()

    export_generator(tmp_path / 'export', saved['G_ema'], saved['buffers']['G_ema'], G_cfg)
    lines = []
    state = transfer.apply_source(fresh, transfer.load_source(tmp_path / 'export'), *config_lib.network_kwargs(run),
                                  'export', log=lines.append)
    for name in ('G', 'G_ema'):
        _assert_copied(state[name], saved['G_ema'])
        _assert_copied(state['buffers'][name], saved['buffers']['G_ema'])
    _assert_copied(state['D'], fresh['D'])
    assert lines[2] == 'resume: D: 0 tensors from export (export); none copied (the source has no such network)'


def test_mismatches_are_one_error_naming_both(official_pkl, tmp_path):
    path, _ = official_pkl
    source = transfer.load_source(path)
    G_cfg, D_cfg = _golden_cfgs()
    for G_other, D_other, message in [
            ({**G_cfg, 'img_resolution': 32}, {**D_cfg, 'img_resolution': 32},
             "its generator has resolution 64, the config 32"),
            ({**G_cfg, 'channel_max': 64}, D_cfg, 'shape '),
            ({**G_cfg, 'conv_kernel': 1, 'use_radial_filters': True}, D_cfg, 'shape (')]:
        run = _run(G_other, D_other)
        with pytest.raises(transfer.ResumeSourceError, match=message.replace('(', r'\(')) as e:
            transfer.apply_source(_zero_state(run), source, *config_lib.network_kwargs(run), str(path))
        assert str(e.value).startswith(f'config.resume {path}')
    sg2 = tiny_run(batch_size=8, cfg='stylegan2')
    state2 = _random_like(_zero_state(sg2), 2)
    export_generator(tmp_path / 'sg2', state2['G_ema'], state2['buffers']['G_ema'], config_lib.network_kwargs(sg2)[0])
    sg3 = tiny_run(batch_size=8)
    with pytest.raises(transfer.ResumeSourceError, match="architecture 'stylegan2', the config 'stylegan3'"):
        transfer.apply_source(_zero_state(sg3), transfer.load_source(tmp_path / 'sg2'), *config_lib.network_kwargs(sg3),
                              'x')
    cond3, cond5 = tiny_run(batch_size=8, c_dim=3), tiny_run(batch_size=8, c_dim=5)
    state3 = _random_like(_zero_state(cond3), 3)
    export_generator(tmp_path / 'cond3', state3['G_ema'], state3['buffers']['G_ema'],
                     config_lib.network_kwargs(cond3)[0])
    with pytest.raises(transfer.ResumeSourceError, match='its generator has c_dim 3, the config 5'):
        transfer.apply_source(_zero_state(cond5), transfer.load_source(tmp_path / 'cond3'),
                              *config_lib.network_kwargs(cond5), 'x')
    with pytest.raises(transfer.ResumeSourceError, match='no such file or directory'):
        transfer.load_source(tmp_path / 'missing.pkl')
    (tmp_path / 'empty').mkdir()
    with pytest.raises(transfer.ResumeSourceError, match='no committed sg3jax checkpoint here'):
        transfer.load_source(tmp_path / 'empty')

#----------------------------------------------------------------------------
# Freeze-D.

def test_freeze_d_counts_layers_as_the_official_code():
    """Official DiscriminatorBlock: fromrgb (first block), conv0, conv1, skip (resnet), block by block from the
    highest resolution: 7 layers for the 16 px D (b16, b8), of which --freezed=5 takes b16 and b8.conv0."""
    _, D_cfg = config_lib.network_kwargs(tiny_run())
    d_spec = discriminator.spec({**D_cfg, 'block_kwargs': {'freeze_layers': 5}})
    assert discriminator.block_layers(d_spec) == [('b16', 'fromrgb'), ('b16', 'conv0'), ('b16', 'conv1'),
                                                ('b16', 'skip'), ('b8', 'conv0'), ('b8', 'conv1'), ('b8', 'skip')]
    params = jax.eval_shape(lambda k: discriminator.init(k, D_cfg)[0], jax.random.key(0))
    mask = flatten(discriminator.trainable(params, d_spec))
    assert sorted(n for n, t in mask.items() if not t) == [
        'b16.conv0.bias', 'b16.conv0.weight', 'b16.conv1.bias', 'b16.conv1.weight', 'b16.fromrgb.bias',
        'b16.fromrgb.weight', 'b16.skip.weight', 'b8.conv0.bias', 'b8.conv0.weight']


@pytest.mark.slow
def test_freeze_d_leaves_the_frozen_layers_bitwise_and_trains_the_rest():
    """Three steps of every phase with --freezed=5: the frozen D parameters are bitwise their initial values
    (Adam keeps no state for them), every other D parameter moves, and G trains as without Freeze-D."""
    base = tiny_run(batch_size=8, batch_gpu=8)
    run = with_networks(base, D_cfg={**config_lib.network_kwargs(base)[1], 'block_kwargs': {'freeze_layers': 5}})
    init = jax.device_get(jax.jit(lambda k: steps_lib.init_state(k, run))(jax.random.key(0)))
    out = train_steps(run, 1, n_steps=3)['state']
    frozen = {'b16.fromrgb', 'b16.conv0', 'b16.conv1', 'b16.skip', 'b8.conv0'}
    before, after = flatten(init['D']), flatten(out['D'])
    for name in before:
        if name.rsplit('.', 1)[0] in frozen:
            np.testing.assert_array_equal(after[name], before[name], err_msg=name)
        else:
            assert np.abs(after[name] - before[name]).max() > 0, name
    n_moments = sum(x.size for x in jax.tree.leaves(init['D_opt']))
    n_trainable = sum(v.size for n, v in before.items() if n.rsplit('.', 1)[0] not in frozen)
    assert n_moments == 2 * n_trainable + 1      # Adam's mu and nu for the trainable leaves, and its count
    assert all(np.abs(a - b).max() > 0 for a, b in zip(jax.tree.leaves(out['G']), jax.tree.leaves(init['G'])))
