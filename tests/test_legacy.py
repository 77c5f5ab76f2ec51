"""Official network pickles -> sg3jax, read without running code from the file (sg3jax/legacy.py).

The pickles are written by tests/pkl_fixtures.py in the official byte structure, around the golden official
state_dicts, so loading must give exactly the params `state_dicts.from_state_dict` gives for the same state_dict."""

import builtins
import collections
import io
import os
import pickle
import subprocess

import jax
import numpy as np
import pytest

import golden
import pkl_fixtures as pf
from sg3jax import legacy, legacy_convert
from sg3jax.networks import generator, state_dicts
from sg3jax.sampling.export import restore_generator


def _flat_equal(a, b):
    fa, fb = state_dicts.flatten(a), state_dicts.flatten(b)
    assert sorted(fa) == sorted(fb)
    for k in fa:
        np.testing.assert_array_equal(np.asarray(fa[k]), np.asarray(fb[k]), err_msg=k)


def _expected(name):
    data = golden.load(name)
    cfg = golden.json_field(data, 'config_json')
    return cfg, state_dicts.from_state_dict(golden.params_of(data), cfg, kind=name[0])


@pytest.fixture(scope='module')
def sg3t_pkl(tmp_path_factory):
    golden.require_golden()
    G, _, _ = pf.golden_net('G_sg3t_64')
    G_ema, _, _ = pf.golden_net('G_sg3t_64', transpose_2d=True)   # weights stored as non-contiguous views
    D, _, _ = pf.golden_net('D_64')
    return pf.write_network_pkl(tmp_path_factory.mktemp('pkl') / 'sg3t.pkl', {'G': G, 'D': D, 'G_ema': G_ema})


#----------------------------------------------------------------------------
# Known answers: the golden official weights come back exactly.

def test_sg3t_snapshot_loads_golden_weights(sg3t_pkl, monkeypatch):
    real_import = builtins.__import__

    def guarded(name, *args, **kwargs):   # torch, torch_utils and dnnlib are never imported by the reader
        if name.split('.')[0] in ('torch', 'torch_utils', 'dnnlib'):
            raise AssertionError(f'the pickle reader imported {name}')
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, '__import__', guarded)
    nets = legacy.load_network_pkl(sg3t_pkl)
    monkeypatch.undo()
    cfg, (params, buffers) = _expected('G_sg3t_64')
    for key in ('G', 'G_ema'):
        assert nets[key]['cfg'] == cfg
        _flat_equal(nets[key]['params'], params)
        _flat_equal(nets[key]['buffers'], buffers)
    d_cfg, (d_params, _) = _expected('D_64')
    assert nets['D']['cfg'] == d_cfg and nets['D']['buffers'] == {}
    _flat_equal(nets['D']['params'], d_params)
    assert nets['training_set_kwargs'] == pf.TRAINING_SET_KWARGS
    aug = nets['augment_pipe']
    assert aug['class_name'] == 'AugmentPipe' and float(aug['state_dict']['p']) == 0.25


def test_sg3t_generator_output_matches_official(sg3t_pkl):
    # End to end (about 20 s of compile): redundant with the exact-params test plus the golden network tests.
    G = legacy.load_network_pkl(sg3t_pkl)['G_ema']
    data = golden.load('G_sg3t_64')
    fn = jax.jit(lambda p, b, z: generator.apply(p, b, z, None, G['cfg'], noise_mode='const'))
    img = fn(G['params'], G['buffers'], data['z'])
    golden.assert_close(golden.nhwc_to_nchw(img), data['img'], name='img')


@pytest.mark.parametrize('name,protocol,ada', [('G_sg3r_64', 4, False), ('G_sg2_64', 4, False),
                                               ('G_sg2_64', 3, True), ('G_sg2_64_map8', 3, False),
                                               ('D_32_cond', 3, False)])
def test_other_networks_load_golden_weights(tmp_path, name, protocol, ada):
    golden.require_golden()
    net, _, _ = pf.golden_net(name, ada=ada)
    key = 'D' if name.startswith('D') else 'G_ema'
    path = pf.write_network_pkl(tmp_path / 'net.pkl', {key: net}, protocol=protocol)
    got = legacy.load_network_pkl(path)[key]
    cfg, (params, buffers) = _expected(name)
    _flat_equal(got['params'], params)
    _flat_equal(got['buffers'], buffers if key != 'D' else {})
    if ada:  # stylegan2-ada-pytorch kwargs: nested synthesis_kwargs, its own MappingNetwork w_avg_beta default
        assert got['cfg'] == {**cfg, 'mapping_kwargs': {**cfg['mapping_kwargs'], 'w_avg_beta': 0.995}}
        assert generator.spec(got['cfg']) != generator.spec(cfg)   # only the beta differs
        assert generator.spec(got['cfg']).num_ws == generator.spec(cfg).num_ws
    else:
        assert got['cfg'] == cfg


def test_discriminator_kwargs_missing_from_file_come_from_its_blocks(tmp_path):
    golden.require_golden()
    D, _, cfg = pf.golden_net('D_64', drop_kwargs=('num_fp16_res', 'conv_clamp'))
    got = legacy.load_network_pkl(pf.write_network_pkl(tmp_path / 'd.pkl', {'D': D}))['D']
    assert got['cfg'] == cfg     # 0 and 256 from the blocks, not a default of either official repo
    fp16_tree = pf.module_tree(golden.params_of(golden.load('D_64')), 'D', {
        k: v for k, v in cfg.items() if k not in ('class_name', 'num_fp16_res')}, fp16_res=(64, 32))
    rec = legacy.read_pickle(pf.write_network_pkl(tmp_path / 'd.pkl', {'D': fp16_tree}))['D']
    assert legacy.network_config(rec)[0]['num_fp16_res'] == 2


def test_state_dict_rebuilt_as_torch_does(tmp_path):
    """Non-persistent and None buffers are not in the state_dict; nested modules give dotted names in order."""
    golden.require_golden()
    G, sd, _ = pf.golden_net('G_sg3t_64')
    rec = legacy.read_pickle(pf.write_network_pkl(tmp_path / 'g.pkl', {'G': G}))['G']
    got = legacy.network_state_dict(rec)
    assert sorted(got) == sorted(sd)          # 'synthesis.scratch' (persistent=False) and None filters absent
    assert 'scratch' in rec.children()['synthesis'].state['_buffers']
    assert rec.children()['synthesis'].children()['L14_64_3'].state['_buffers']['up_filter'] is None
    for k in sd:
        np.testing.assert_array_equal(got[k], sd[k], err_msg=k)
    # The numpy attributes of the module state (official: np.broadcast_to sizes, float64 gains) were read too.
    layer = rec.children()['synthesis'].children()['L0_36_128']
    np.testing.assert_array_equal(layer.state['in_size'], [16, 16])


def test_tensor_layouts_and_dtypes(tmp_path):
    """Offsets into a larger storage, transposed strides, 0-d tensors and non-float dtypes."""
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    obj = {'off': pf.FakeTensor(a, offset=5, pad=3), 'T': pf.FakeTensor(a, transpose=True),
           'half': pf.FakeTensor(a.astype(np.float16)), 'i64': pf.FakeTensor(np.arange(5, dtype=np.int64) - 2),
           'bool': pf.FakeTensor(np.array([True, False])), 'scalar': pf.FakeParameter(np.float32(3.5)),
           'f64': pf.FakeTensor(np.linspace(0, 1, 7))}
    for protocol in (2, 3, 4, 5):
        path = tmp_path / f'p{protocol}.pkl'
        path.write_bytes(pf.dumps(obj, protocol=protocol))
        got = legacy.read_pickle(path)
        for k in ('off', 'T'):
            np.testing.assert_array_equal(got[k], a)
        assert got['half'].dtype == np.float16 and got['i64'].dtype == np.int64 and got['bool'].dtype == bool
        np.testing.assert_array_equal(got['i64'], [-2, -1, 0, 1, 2])
        assert got['scalar'].shape == () and got['scalar'] == 3.5
        np.testing.assert_array_equal(got['f64'], np.linspace(0, 1, 7))


def test_zip_storage_stream_and_numpy1_globals(tmp_path):
    """A storage in the zip torch.save format inside _load_from_bytes, and numpy 1.x global names
    (numpy.core.multiarray), as in files written with numpy < 2."""
    import zipfile
    flat = np.arange(6, dtype=np.float32)

    class ZipStorage(pf.FakeStorage):
        def __reduce__(self):
            marker = object()

            class P(pf._FixturePickler):
                def persistent_id(self, obj):
                    return ('storage', pf.STORAGE_TYPES[flat.dtype], '0', 'cpu', flat.size) if obj is marker else None

            pkl = io.BytesIO()
            P(pkl, protocol=2).dump(marker)
            buf = io.BytesIO()
            with zipfile.ZipFile(buf, 'w') as z:
                z.writestr('archive/data.pkl', pkl.getvalue())
                z.writestr('archive/byteorder', 'little')
                z.writestr('archive/data/0', flat.tobytes())
                z.writestr('archive/version', '3\n')
            return (pf.LOAD_FROM_BYTES, (buf.getvalue(),))

    class T(pf.FakeTensor):
        def __reduce__(self):
            f, args = super().__reduce__()
            return f, (ZipStorage(None), 0, (2, 3), (3, 1)) + args[4:]

    class OldArray:
        def __reduce__(self):
            return (pf._global('numpy.core.multiarray', '_reconstruct'), (np.ndarray, (0,), b'b'),
                    (1, (2,), np.dtype('int64'), False, np.array([4, 5]).tobytes()))

    class OldScalar:
        def __reduce__(self):
            return (pf._global('numpy.core.multiarray', 'scalar'), (np.dtype('float64'), np.float64(0.5).tobytes()))

    path = tmp_path / 'z.pkl'
    path.write_bytes(pf.dumps({'t': T(flat), 'a': OldArray(), 's': OldScalar()}, protocol=3))
    got = legacy.read_pickle(path)
    np.testing.assert_array_equal(got['t'], flat.reshape(2, 3))
    np.testing.assert_array_equal(got['a'], [4, 5])
    assert got['s'] == 0.5


def test_tensor_reaching_past_its_storage_is_rejected(tmp_path):
    class Bad(pf.FakeTensor):
        def __reduce__(self):
            f, args = super().__reduce__()
            return f, (args[0], 2, (3, 4), (4, 1)) + args[4:]
    path = tmp_path / 'bad.pkl'
    path.write_bytes(pf.dumps({'t': Bad(np.zeros([3, 4], np.float32))}))
    with pytest.raises(legacy.NetworkPickleError, match=r'bad.pkl: .*reaches past its storage of 12 elements'):
        legacy.read_pickle(path)

#----------------------------------------------------------------------------
# Security: nothing from the file runs.

def test_module_src_is_never_executed(tmp_path, capsys):
    golden.require_golden()
    marker = tmp_path / 'module_src_ran'
    src = (f'import pathlib\npathlib.Path({str(marker)!r}).write_text("executed")\nprint("MODULE_SRC_EXECUTED")\n'
           f'raise SystemExit("module_src was executed")\n')
    G, _, _ = pf.golden_net('G_sg3t_64', module_src=src)
    path = pf.write_network_pkl(tmp_path / 'src.pkl', {'G': G})
    nets = legacy.load_network_pkl(path)
    assert not marker.exists()
    assert 'MODULE_SRC_EXECUTED' not in capsys.readouterr().out
    assert nets['G']['cfg']['class_name'] == 'training.networks_stylegan3.Generator'


class _Evil:
    def __init__(self, func, args):
        self.func, self.args = func, args

    def __reduce__(self):
        return self.func, self.args


@pytest.mark.parametrize('func,args_fn,name', [
    (os.system, lambda m: (f'touch {m}',), f'{os.system.__module__}.system'),
    (eval, lambda m: (f'open({str(m)!r}, "w").close()',), 'builtins.eval'),
    (subprocess.Popen, lambda m: (['touch', str(m)],), 'subprocess.Popen'),
])
def test_forbidden_globals_raise_before_running(tmp_path, func, args_fn, name):
    marker = tmp_path / 'pwned'
    evil = _Evil(func, args_fn(marker))
    # Deep inside a network's state, where an official loader would happily call it.
    net = pf.FakeModule('Generator', attrs={'payload': evil}, init_kwargs={'z_dim': 1})
    path = pf.write_network_pkl(tmp_path / 'evil.pkl', {'G': net})
    with pytest.raises(legacy.ForbiddenGlobal) as e:
        legacy.load_network_pkl(path)
    assert str(path) in str(e.value) and name in str(e.value) and 'nothing was executed' in str(e.value)
    assert isinstance(e.value, pickle.UnpicklingError)
    assert not marker.exists()


def test_forbidden_global_inside_an_embedded_storage_stream(tmp_path):
    marker = tmp_path / 'pwned'

    class EvilStorage(pf.FakeStorage):
        def __reduce__(self):
            stream = io.BytesIO()
            for head in (0x1950a86a20f9469cfc6c, 1001, {'little_endian': True}):
                pickle.dump(head, stream, protocol=2)
            pickle.dump(_Evil(os.system, (f'touch {marker}',)), stream, protocol=2)
            return (pf.LOAD_FROM_BYTES, (stream.getvalue(),))

    class T(pf.FakeTensor):
        def __reduce__(self):
            f, args = super().__reduce__()
            return f, (EvilStorage(None),) + args[1:]

    path = tmp_path / 'evil_storage.pkl'
    path.write_bytes(pf.dumps({'G': T(np.zeros(2, np.float32))}))
    with pytest.raises(legacy.ForbiddenGlobal, match=r'evil_storage.pkl: .*system'):
        legacy.load_network_pkl(path)
    assert not marker.exists()


def test_state_cannot_be_attached_to_records(tmp_path):
    """A BUILD opcode after the persistence call (state as the reduce's third item) cannot set attributes."""
    class Built(pf.FakeModule):
        def __reduce__(self):
            f, args, _ = super().__reduce__()
            return f, args, {'children': collections.OrderedDict}

    path = pf.write_network_pkl(tmp_path / 'b.pkl', {'G': Built('Generator')})
    with pytest.raises(legacy.NetworkPickleError, match=r'b.pkl: not a readable network pickle'):
        legacy.load_network_pkl(path)


def test_tensorflow_pickle_is_named(tmp_path):
    tf_net = pf._global('dnnlib.tflib.network', 'Network')

    class TFNet:
        def __reduce__(self):
            return (tf_net, ())

    path = tmp_path / 'tf.pkl'
    path.write_bytes(pf.dumps((TFNet(), TFNet(), TFNet()), protocol=2))
    with pytest.raises(legacy.NetworkPickleError, match=r'tf.pkl: this is a TensorFlow StyleGAN'):
        legacy.load_network_pkl(path)

#----------------------------------------------------------------------------
# Bad inputs: one clear error naming the file.

def test_truncated_file(sg3t_pkl, tmp_path):
    path = tmp_path / 'cut.pkl'
    path.write_bytes(sg3t_pkl.read_bytes()[:len(sg3t_pkl.read_bytes()) // 2])
    with pytest.raises(legacy.NetworkPickleError, match=r'cut.pkl: .*(truncated|corrupt)'):
        legacy.load_network_pkl(path)


@pytest.mark.parametrize('content', [b'', b'hello, not a pickle\n', b'\x89PNG\r\n\x1a\n'])
def test_not_a_pickle(tmp_path, content):
    path = tmp_path / 'x.pkl'
    path.write_bytes(content)
    with pytest.raises(legacy.NetworkPickleError, match=r'x.pkl: not a pickle file'):
        legacy.load_network_pkl(path)


def test_missing_networks_and_wrong_top_level(tmp_path):
    path = tmp_path / 'a.pkl'
    path.write_bytes(pickle.dumps({'training_set_kwargs': {}}))
    with pytest.raises(legacy.NetworkPickleError, match=r'a.pkl: none of the keys G, D, G_ema is present'):
        legacy.load_network_pkl(path)
    path.write_bytes(pickle.dumps([1, 2]))
    with pytest.raises(legacy.NetworkPickleError, match=r'a.pkl: top-level object is a list'):
        legacy.load_network_pkl(path)
    path.write_bytes(pickle.dumps({'G': {'weight': 1}}))
    with pytest.raises(legacy.NetworkPickleError, match=r'a.pkl: G is a dict, expected a persistent network'):
        legacy.load_network_pkl(path)


def test_unknown_class(tmp_path):
    path = pf.write_network_pkl(tmp_path / 'u.pkl', {'G': pf.FakeModule('MyGenerator')})
    with pytest.raises(legacy.NetworkPickleError, match=r"u.pkl: G: unsupported network class_name 'MyGenerator'"):
        legacy.load_network_pkl(path)
    odd = pf.FakeModule('Generator', modules={'synthesis': pf.FakeModule('SynthesisNetwork', modules={
        'x': pf.FakeModule('Whatever')})})
    path = pf.write_network_pkl(tmp_path / 'u.pkl', {'G': odd})
    with pytest.raises(legacy.NetworkPickleError, match=r"neither StyleGAN3 \(SynthesisInput\) nor StyleGAN2"):
        legacy.load_network_pkl(path)
    D, _, _ = pf.golden_net('D_64')
    path = pf.write_network_pkl(tmp_path / 'u.pkl', {'G': D})
    with pytest.raises(legacy.NetworkPickleError, match=r'u.pkl: G is a training.networks_stylegan2.Discrim'):
        legacy.load_network_pkl(path)


def test_weights_not_matching_kwargs_name_file_and_key(tmp_path):
    golden.require_golden()
    data = golden.load('G_sg3t_64')
    cfg = golden.json_field(data, 'config_json')
    sd = dict(golden.params_of(data))
    sd['mapping.fc0.weight'] = np.zeros([3, 3], np.float32)
    kwargs = {k: v for k, v in cfg.items() if k != 'class_name'}
    path = pf.write_network_pkl(tmp_path / 'm.pkl', {'G_ema': pf.module_tree(sd, 'sg3', kwargs)})
    with pytest.raises(state_dicts.StateDictMismatch, match=r'(?s)m.pkl: G_ema.*mapping.fc0.weight: shape \[3, 3\]'):
        legacy.load_network_pkl(path)
    bad = dict(kwargs, channel_base='wide')
    path = pf.write_network_pkl(tmp_path / 'm.pkl', {'G_ema': pf.module_tree(sd, 'sg3', bad)})
    with pytest.raises((legacy.NetworkPickleError, state_dicts.StateDictMismatch), match=r'm.pkl: G_ema'):
        legacy.load_network_pkl(path)

#----------------------------------------------------------------------------
# The export command line.

def test_convert_cli_round_trip(sg3t_pkl, tmp_path, capsys):
    out = tmp_path / 'export'
    assert legacy_convert.main(['--network', str(sg3t_pkl), '--outdir', str(out)]) == 0
    assert 'wrote' in capsys.readouterr().out
    params, buffers, cfg = restore_generator(out)
    nets = legacy.load_network_pkl(sg3t_pkl)
    assert cfg == nets['G_ema']['cfg']
    _flat_equal(params, nets['G_ema']['params'])
    _flat_equal(buffers, nets['G_ema']['buffers'])
    assert legacy_convert.main(['--network', str(tmp_path / 'missing.pkl'), '--outdir', str(out)]) == 1
    assert 'missing.pkl' in capsys.readouterr().err


def test_convert_cli_missing_network(tmp_path, capsys):
    golden.require_golden()
    D, _, _ = pf.golden_net('D_64')
    path = pf.write_network_pkl(tmp_path / 'd.pkl', {'D': D})
    assert legacy_convert.main(['--network', str(path), '--outdir', str(tmp_path / 'o')]) == 1
    assert "d.pkl: has no 'G_ema' network (it has D)" in capsys.readouterr().err
    assert not (tmp_path / 'o').exists()

#----------------------------------------------------------------------------
# Optional: real torch pickles (skipped without torch; torch is not a dependency of sg3jax).

def test_real_torch_pickles_cross_check(tmp_path):
    torch = pytest.importorskip('torch')
    g = torch.Generator().manual_seed(0)
    base = torch.randn(6, 5, generator=g)
    tensors = {
        'param': torch.nn.Parameter(base.clone(), requires_grad=False),
        'view': base[1:4, 2:],                      # offset + strides into a bigger storage
        'T': base.t(),
        'half': base.half()[2], 'f64': base.double(), 'i64': torch.arange(7) - 3, 'bool': base > 0,
        'scalar': torch.tensor(1.5), 'bf16': base.bfloat16(),
        'u16': torch.arange(5).to(torch.uint16),   # torch 2.x pickles these with _rebuild_tensor_v3
    }
    expect = {k: (v.float() if v.dtype == torch.bfloat16 else v).detach().numpy() for k, v in tensors.items()}
    for protocol in (2, 4):
        path = tmp_path / f't{protocol}.pkl'
        path.write_bytes(pickle.dumps(collections.OrderedDict(tensors), protocol=protocol))
        got = legacy.read_pickle(path)
        for k, v in expect.items():
            assert got[k].dtype == v.dtype or k == 'bf16', k
            np.testing.assert_array_equal(got[k].astype(v.dtype), v, err_msg=k)
    # The zip torch.save format as a whole file.
    path = tmp_path / 'zip.pt'
    torch.save(tensors, path)
    got = legacy.read_pickle(path)
    for k, v in expect.items():
        np.testing.assert_array_equal(got[k].astype(v.dtype), v, err_msg=k)


def test_real_torch_module_state_cross_check(tmp_path):
    """A real torch module tree pickled the way torch_utils.persistence does (meta with the module __dict__):
    our state_dict equals torch's, whatever fields this torch version keeps in Module.__dict__."""
    torch = pytest.importorskip('torch')

    class Persistent(torch.nn.Module):
        def __reduce__(self):
            state = dict(self.__dict__, _init_args=(), _init_kwargs={'name': type(self).__name__})
            return (pf.RECONSTRUCT, (dict(type='class', version=6, module_src='raise SystemExit', class_name=
                                          type(self).__name__, state=state),), None)

    class Leaf(Persistent):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.randn(3, 2))
            self.register_buffer('ema', torch.ones([]))
            self.register_buffer('tmp', torch.zeros(2), persistent=False)
            self.register_buffer('none', None)
            self.gain = np.sqrt(2.0)

    class Root(Persistent):
        def __init__(self):
            super().__init__()
            self.a, self.b = Leaf(), Leaf()
            self.bias = torch.nn.Parameter(torch.zeros(4))

    m = Root().eval().requires_grad_(False)
    path = tmp_path / 'm.pkl'
    path.write_bytes(pf.dumps({'G': m}, protocol=4))
    rec = legacy.read_pickle(path)['G']
    got = legacy.network_state_dict(rec)
    ref = {k: v.numpy() for k, v in m.state_dict().items()}
    assert list(got) == list(ref)
    for k in ref:
        np.testing.assert_array_equal(got[k], ref[k], err_msg=k)
