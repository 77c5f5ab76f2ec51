"""Feature networks: the exact Inception-v3 (TF 2015-12-05 graph) and VGG-16/LPIPS architectures (parameter
counts, shapes, forward passes of random weights), TF1 bilinear resizing, the converter's name mapping and the
.npz round trip, and the error that says how to get the official weights."""

import sys

import numpy as np
import jax
import jax.numpy as jnp
import pytest

from sg3jax import convert_feature_nets
from sg3jax.metrics import detectors, inception, vgg16
from sg3jax.metrics.resample import tf1_resize_bilinear


@pytest.fixture(scope='module')
def inception_params():
    return inception.init(0)


def test_inception_architecture_counts():
    shapes = inception.param_shapes()
    convs = [k for k in shapes if k.endswith('.weight') and k != 'output.weight']
    assert len(convs) == 94
    assert sum(int(np.prod(s)) for s in shapes.values()) == 23_868_176
    assert shapes['output.weight'] == (1008, 2048)
    assert shapes['layers.mixed_10.tower_1.mixed.conv_1.weight'] == (384, 384, 3, 1)
    assert shapes['layers.mixed_4.tower.conv_1.weight'] == (128, 128, 1, 7)


def test_inception_forward_features_and_probabilities(inception_params):
    img = jnp.asarray(np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3)), jnp.uint8)

    @jax.jit
    def heads(p, x):  # one compile: the three official call modes share the trunk
        return (inception.apply(p, x), inception.apply(p, x, return_features=False),
                inception.apply(p, x, return_features=False, no_output_bias=True))

    f, probs, nob = heads(inception_params, img)
    assert f.shape == (2, 2048) and bool(jnp.all(jnp.isfinite(f))) and bool(jnp.all(f >= 0))
    assert float(jnp.abs(f[0] - f[1]).max()) > 0
    np.testing.assert_allclose(np.asarray(probs.sum(1)), 1, rtol=1e-5)
    want = jax.nn.softmax(f @ inception_params['output.weight'].T, axis=1)
    np.testing.assert_allclose(np.asarray(nob), np.asarray(want), rtol=1e-4, atol=1e-7)
    assert float(jnp.abs(nob - probs).max()) > 0
    with pytest.raises(ValueError, match='NHWC'):
        inception.apply(inception_params, img[..., :1])


def test_tf1_resize_is_legacy_bilinear():
    x = jnp.arange(4, dtype=jnp.float32).reshape(1, 1, 4, 1) * jnp.ones((1, 2, 1, 1))
    y = tf1_resize_bilinear(x, 2, 6)[0, 0, :, 0]
    # Output j samples input j * 4/6 (no half-pixel offset), clamped at the last pixel.
    np.testing.assert_allclose(np.asarray(y), [0, 2 / 3, 4 / 3, 2, 8 / 3, 3], atol=1e-6)
    np.testing.assert_allclose(np.asarray(tf1_resize_bilinear(x, 4, 2)[0, 0, :, 0]), [0, 2])
    assert tf1_resize_bilinear(x, 2, 4) is x


def test_inception_average_pool_excludes_padding():
    x = jnp.arange(9, dtype=jnp.float32).reshape(1, 3, 3, 1)
    y = inception._avg_pool_exclude_pad(x)
    assert float(y[0, 0, 0, 0]) == pytest.approx((0 + 1 + 3 + 4) / 4)
    assert float(y[0, 1, 1, 0]) == pytest.approx(4.0)


def test_vgg16_architecture_and_shapes():
    shapes = vgg16.param_shapes()
    assert sum(int(np.prod(s)) for s in shapes.values()) == 138_359_016        # 138,357,544 VGG-16 + 1,472 LPIPS
    abstract = {k: jax.ShapeDtypeStruct(s, jnp.float32) for k, s in shapes.items()}
    img = jax.ShapeDtypeStruct((2, 256, 256, 3), jnp.float32)
    feats = jax.eval_shape(lambda p, x: vgg16.apply(p, x, return_features=True), abstract, img)
    assert feats.shape == (2, 4096)
    lp = jax.eval_shape(lambda p, x: vgg16.apply(p, x, resize_images=False, return_lpips=True), abstract, img)
    assert lp.shape == (2, 256 * 256 * 64 + 128 * 128 * 128 + 64 * 64 * 256 + 32 * 32 * 512 + 16 * 16 * 512)


def test_vgg16_lpips_vectors_have_unit_stage_norms():
    # With all LPIPS weights 1, each stage contributes mean_hw |unit feature|^2 = 1 to |v|^2 (nonzero features).
    rng = np.random.default_rng(0)
    params = {}
    for k, s in vgg16.param_shapes().items():
        if k.startswith('layers.fc'):
            params[k] = jnp.zeros(s)
        elif k.startswith('lpips'):
            params[k] = jnp.ones(s)
        elif k.endswith('.weight'):
            params[k] = jnp.asarray(rng.standard_normal(s) * np.sqrt(2 / np.prod(s[1:])), jnp.float32)
        else:
            params[k] = jnp.full(s, 0.1, jnp.float32)
    img = jnp.asarray(rng.uniform(0, 255, (2, 32, 32, 3)), jnp.float32)
    v = jax.jit(lambda p, x: vgg16.apply(p, x, resize_images=False, return_lpips=True))(params, img)
    np.testing.assert_allclose(np.asarray(jnp.sum(v ** 2, 1)), 5.0, rtol=1e-4)
    with pytest.raises(ValueError, match='exactly one'):
        vgg16.apply(params, img)


def _official_style(params, kind, flatten_names=False):
    """Our params as an official state_dict: same names (optionally TorchScript-flattened), LPIPS as convs."""
    sd = {}
    for k, v in params.items():
        v = np.asarray(v)
        if kind == 'vgg16' and k.startswith('lpips'):
            v = v.reshape(1, -1, 1, 1)
        if flatten_names and k.startswith('layers.mixed'):
            head, rest = k.split('.', 2)[:2], k.split('.', 2)[2]
            k = '.'.join(head) + '.' + rest.rsplit('.', 1)[0].replace('.', '_') + '.' + rest.rsplit('.', 1)[1]
        sd[k] = v
    return sd


@pytest.mark.parametrize('flatten', [False, True])
def test_converter_roundtrip_inception(inception_params, tmp_path, flatten):
    sd = _official_style(inception_params, 'inception', flatten)
    params = convert_feature_nets.map_state_dict(sd, 'inception')
    assert all(np.array_equal(params[k], np.asarray(v)) for k, v in inception_params.items())
    detectors.save_npz(tmp_path / 'inception-2015-12-05.npz', 'inception', params, torchscript_code='def f(): ...')
    det = detectors.get_detector('inception', detector_dir=str(tmp_path))
    assert all(np.array_equal(np.asarray(det.params[k]), np.asarray(v)) for k, v in inception_params.items())
    assert len(det.fingerprint) == 32
    with np.load(tmp_path / 'inception-2015-12-05.npz') as z:
        assert str(z['_torchscript_code']) == 'def f(): ...'


def test_converter_vgg16_names_and_strictness():
    rng = np.random.default_rng(0)
    small = {k: rng.standard_normal(s).astype(np.float32) if np.prod(s) < 1e6 else np.zeros(s, np.float32)
             for k, s in vgg16.param_shapes().items()}
    sd = _official_style(small, 'vgg16')
    assert sd['lpips2'].shape == (1, 256, 1, 1)
    params = convert_feature_nets.map_state_dict(sd, 'vgg16')
    np.testing.assert_array_equal(params['lpips2'], small['lpips2'])
    del sd['layers.conv3.bias']
    sd['layers.extra.weight'] = np.zeros(3)
    with pytest.raises(ValueError, match='unexpected.*layers.extra.weight'):
        convert_feature_nets.map_state_dict(sd, 'vgg16')
    sd.pop('layers.extra.weight')
    with pytest.raises(ValueError, match=r'missing \(1\): layers.conv3.bias'):
        convert_feature_nets.map_state_dict(sd, 'vgg16')


def test_missing_detector_error_says_how_to_convert(tmp_path, monkeypatch):
    monkeypatch.delenv(detectors.ENV_DIR, raising=False)
    with pytest.raises(FileNotFoundError) as e:
        detectors.get_detector('vgg16', detector_dir=str(tmp_path))
    msg = str(e.value)
    assert 'convert_feature_nets' in msg and detectors.OFFICIAL_URLS['vgg16'] in msg and 'SG3JAX_DETECTORS' in msg
    for content in (b'', b'PK\x03\x04 truncated'):
        (tmp_path / 'vgg16.npz').write_bytes(content)
        with pytest.raises(ValueError, match=r'vgg16\.npz: not a readable converted vgg16 network .*convert_feature_nets'):
            detectors.get_detector('vgg16', detector_dir=str(tmp_path))


def test_converter_cli_without_torch_says_so(tmp_path, monkeypatch):
    """Without PyTorch (simulated whether or not it is installed: a None entry in sys.modules makes `import torch`
    raise ImportError) the converter says what it needs and writes nothing."""
    monkeypatch.setitem(sys.modules, 'torch', None)
    src = tmp_path / 'inception-2015-12-05.pkl'
    src.write_bytes(b'not used')
    with pytest.raises(SystemExit, match='needs PyTorch'):
        convert_feature_nets.main(['--src', str(src), '--dest', str(tmp_path / 'out')])
    assert not (tmp_path / 'out').exists()


def test_converter_cli_reads_a_torchscript_file_with_the_official_names(tmp_path):
    """A TorchScript module whose state_dict has the official Inception names (BN statistics as buffers),
    saved as NVIDIA's .pt files are, goes through the CLI into an .npz that the metrics load, value for value."""
    torch = pytest.importorskip('torch')

    class Node(torch.nn.Module):
        def forward(self, x):
            return x

    root, rng, want = Node(), np.random.default_rng(0), {}
    for name, shape in inception.param_shapes().items():
        *path, leaf = name.split('.')
        m = root
        for p in path:
            if not hasattr(m, p):
                m.add_module(p, Node())
            m = getattr(m, p)
        v = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
        if leaf in ('mean', 'var'):
            m.register_buffer(leaf, v)
        else:
            m.register_parameter(leaf, torch.nn.Parameter(v, requires_grad=False))
        want[name] = v.numpy()
    src = tmp_path / 'inception-2015-12-05.pt'
    torch.jit.script(root).save(str(src))
    assert convert_feature_nets.main(['--src', str(src), '--dest', str(tmp_path / 'det')]) == 0
    det = detectors.get_detector('inception', detector_dir=str(tmp_path / 'det'))
    assert all(np.array_equal(np.asarray(det.params[k]), v) for k, v in want.items())
    with np.load(tmp_path / 'det' / 'inception-2015-12-05.npz') as z:
        assert 'def forward' in str(z['_torchscript_code'])
