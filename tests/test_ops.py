"""Every op case in golden `ops.npz` (discovered from its `cases_json`), for both implementations."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import golden
from golden import assert_close, nchw_to_nhwc, nhwc_to_nchw
from sg3jax import ops


def _cases():
    d = golden.golden_dir()
    if d is None:
        return {}
    with np.load(d / 'ops.npz') as z:
        return json.loads(str(z['cases_json']))


CASES = _cases()
OP_CASES = sorted(CASES.get('cases', {}))
SETUP_CASES = sorted(CASES.get('setup_filter', {}))
DESIGN_CASES = sorted(CASES.get('design_lowpass_filter', {}))
IMPLS = ['ref', 'fast']
# 'conv' is the program `fast` lowers to on a TPU (depthwise convolutions), run here on the CPU: it must meet the
# same golden numbers. Only the resampling ops have it.
FIR_OPS = ('upfirdn2d', 'filter2d', 'upsample2d', 'downsample2d', 'filtered_lrelu')
PARITY = [(name, impl) for name in OP_CASES for impl in IMPLS + ['conv']
          if impl != 'conv' or CASES['cases'][name]['op'] in FIR_OPS]


def _inputs(name, spec):
    data = golden.load('ops')
    get = lambda k: None if k in spec['none_inputs'] else data[f'{name}/{k}']
    return data, get


def _run(name, spec, impl):
    """Calls our op on the case's inputs; returns an NCHW (or unchanged) float32 output like the reference."""
    data, get = _inputs(name, spec)
    op, kw = spec['op'], dict(spec['kwargs'])
    if op == 'bias_act':
        x, b = get('x'), get('b')
        return ops.bias_act(jnp.asarray(x), None if b is None else jnp.asarray(b), **kw)
    if op in ('upfirdn2d', 'filter2d', 'upsample2d', 'downsample2d'):
        fn = getattr(ops, op)
        x = jnp.asarray(nchw_to_nhwc(get('x')))
        return nhwc_to_nchw(fn(x, get('f'), impl=impl, **kw))
    if op == 'filtered_lrelu':
        x = jnp.asarray(nchw_to_nhwc(get('x')))
        b = get('b')
        y = ops.filtered_lrelu(x, get('fu'), get('fd'), None if b is None else jnp.asarray(b), impl=impl, **kw)
        return nhwc_to_nchw(y)
    if op == 'modconv3':
        x = jnp.asarray(nchw_to_nhwc(get('x')))
        g = get('input_gain')
        y = ops.modulated_conv2d(x, jnp.asarray(get('w')), jnp.asarray(get('s')), demodulate=kw['demodulate'],
                                 padding=kw['padding'], input_gain=None if g is None else jnp.asarray(g),
                                 fused=(impl == 'ref'))
        return nhwc_to_nchw(y)
    if op == 'modconv2':
        x = jnp.asarray(nchw_to_nhwc(get('x')))
        noise = get('noise')
        if noise is not None:
            noise = jnp.asarray(nchw_to_nhwc(noise))
        # impl 'ref' runs the case's own fused_modconv flag; 'fast' also runs the other form, which must agree.
        fused = kw['fused_modconv'] if impl == 'ref' else not kw['fused_modconv']
        y = ops.modulated_conv2d_sg2(
            x, jnp.asarray(get('weight')), jnp.asarray(get('styles')), noise=noise, up=kw['up'], down=kw['down'],
            padding=kw['padding'], resample_filter=get('resample_filter'), demodulate=kw['demodulate'],
            flip_weight=kw['flip_weight'], fused_modconv=fused)
        return nhwc_to_nchw(y)
    raise AssertionError(f'ops.npz case {name} has an op this test does not know: {op!r}; add it here')


@pytest.mark.parametrize('name,impl', PARITY)
def test_op_parity(name, impl):
    golden.require_golden()
    spec = CASES['cases'][name]
    ref = golden.load('ops')[f'{name}/y']
    ours = np.asarray(_run(name, spec, impl))
    assert list(ours.shape) == spec['out_shape']
    assert_close(ours, ref, name=f'{name}[{impl}]')


@pytest.mark.parametrize('name', SETUP_CASES)
def test_setup_filter_parity(name):
    golden.require_golden()
    spec = CASES['setup_filter'][name]
    data = golden.load('ops')
    f_in = None if spec['f_in_is_none'] else data[f'setup_filter/{name}/f_in']
    ours = ops.setup_filter(f_in, **spec['kwargs'])
    assert ours.dtype == np.float32
    np.testing.assert_allclose(ours, data[f'setup_filter/{name}/out'], rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize('name', DESIGN_CASES)
def test_design_lowpass_filter_parity(name):
    golden.require_golden()
    spec = CASES['design_lowpass_filter'][name]
    ours = ops.design_lowpass_filter(**spec['kwargs'])
    key = f'design_lowpass_filter/{name}'
    data = golden.load('ops')
    if spec['is_none']:
        assert ours is None
        assert key not in data
        return
    np.testing.assert_allclose(ours, data[key], rtol=1e-6, atol=1e-7)


def test_golden_has_op_cases():
    golden.require_golden()
    # The discovery above must actually find cases, or the parametrised tests silently vanish.
    assert len(OP_CASES) >= 40 and len(SETUP_CASES) >= 5 and len(DESIGN_CASES) >= 20


@pytest.mark.parametrize('up,down,pad,taps', [(2, 1, [5, 6, 5, 6], 12), (4, 2, [-2, -3, -2, -3], 24),
                                              (3, 2, [4, 3, 2, 5], 9), (1, 2, [3, 4, 2, 5], 12)])
def test_upfirdn2d_fast_matches_ref_and_grads(up, down, pad, taps):
    """The polyphase path and the TPU convolution path equal the reference path in value and gradient for random
    asymmetric filters (negative padding included)."""
    rng = np.random.RandomState(0)
    x = jnp.asarray(rng.randn(2, 11, 13, 3).astype(np.float32))
    f = rng.randn(taps).astype(np.float32)
    fns = {impl: (lambda x, impl=impl: ops.upfirdn2d(x, f, up=up, down=down, padding=pad, gain=up ** 2, impl=impl))
           for impl in IMPLS + ['conv']}
    ct = jnp.asarray(rng.randn(*fns['ref'](x).shape).astype(np.float32))
    grads = {impl: jax.grad(lambda x: jnp.sum(fn(x) * ct))(x) for impl, fn in fns.items()}
    for impl in ('fast', 'conv'):
        assert_close(fns[impl](x), fns['ref'](x), name=f'{impl} value')
        assert_close(grads[impl], grads['ref'], name=f'{impl} grad')


@pytest.mark.parametrize('up,down,pad', [(1, 2, [2, -1, -3, 4]), (2, 1, [3, 4, 2, 5]), (1, 1, [-2, -1, 0, 3])])
def test_upfirdn2d_conv_radial_and_bf16(up, down, pad):
    """The TPU path with a non-separable (radial) filter, as StyleGAN3-R's downsampling, and in bfloat16 (summed in
    float32 like the fast path, so the two agree to bf16 rounding of the output)."""
    rng = np.random.RandomState(2)
    x = jnp.asarray(rng.randn(2, 17, 19, 4).astype(np.float32))
    f = ops.design_lowpass_filter(numtaps=12, cutoff=3, width=2, fs=12, radial=True)
    run = lambda x, impl: ops.upfirdn2d(x, f, up=up, down=down, padding=pad, gain=up ** 2, impl=impl)
    assert_close(run(x, 'conv'), run(x, 'ref'), name='radial')
    xb = x.astype(jnp.bfloat16)
    yc, yf = run(xb, 'conv'), run(xb, 'fast')
    assert yc.dtype == jnp.bfloat16
    np.testing.assert_allclose(np.asarray(yc, np.float32), np.asarray(yf, np.float32), rtol=1e-2, atol=1e-2)


def test_upfirdn2d_fast_lowers_radial_filters_to_convolutions_for_tpu_only():
    """impl='fast' is platform-dependent for a non-separable (radial) filter: the TPU program is one depthwise
    convolution (its 144 slice sums cost the TPU compiler many times the memory), every other platform keeps the
    slices; separable filters are slices everywhere. Exported for both platforms without a TPU; only the named
    platform's branch is emitted."""
    radial = ops.design_lowpass_filter(numtaps=12, cutoff=3, width=2, fs=12, radial=True)
    separable = ops.design_lowpass_filter(numtaps=12, cutoff=3, width=2, fs=12)
    x = jax.ShapeDtypeStruct((1, 16, 16, 2), jnp.float32)
    for f, on_tpu in ((radial, True), (separable, False), (ops.setup_filter([1, 3, 3, 1]), False)):
        fn = jax.jit(lambda x: ops.upfirdn2d(x, f, down=2))
        text = {p: jax.export.export(fn, platforms=[p])(x).mlir_module() for p in ('cpu', 'tpu')}
        assert ('stablehlo.convolution' in text['tpu']) == on_tpu, f.shape
        assert 'stablehlo.convolution' not in text['cpu']


def test_bias_act_rejects_bad_input():
    with pytest.raises(ValueError, match='unknown activation'):
        ops.bias_act(jnp.zeros([2, 3]), act='gelu')
    with pytest.raises(ValueError, match='bias shape'):
        ops.bias_act(jnp.zeros([2, 3]), jnp.zeros([4]))


def test_filtered_lrelu_double_backward_fast_matches_ref():
    """R1 needs grad-of-grad through the ops: the fast path's custom adjoint must be differentiable too."""
    rng = np.random.RandomState(1)
    x = jnp.asarray(rng.randn(2, 14, 14, 3).astype(np.float32))
    fu, fd = rng.randn(12).astype(np.float32), rng.randn(6, 6).astype(np.float32)

    def r1_like(impl):
        f = lambda x: jnp.sum(jnp.square(ops.filtered_lrelu(x, fu, fd, up=2, down=2, padding=[5, 4, 3, 6],
                                                            impl=impl)))
        penalty = lambda x: jnp.sum(jnp.square(jax.grad(f)(x)))
        return jax.grad(penalty)(x)
    ref = r1_like('ref')
    assert_close(r1_like('fast'), ref, name='grad of grad')
    assert_close(r1_like('conv'), ref, name='grad of grad (TPU convolution path)')
