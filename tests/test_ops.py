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


@pytest.mark.parametrize('impl', IMPLS)
@pytest.mark.parametrize('name', OP_CASES)
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
    """The polyphase path equals the reference path in value and gradient for random asymmetric filters."""
    rng = np.random.RandomState(0)
    x = jnp.asarray(rng.randn(2, 11, 13, 3).astype(np.float32))
    f = rng.randn(taps).astype(np.float32)
    fns = {impl: (lambda x, impl=impl: ops.upfirdn2d(x, f, up=up, down=down, padding=pad, gain=up ** 2, impl=impl))
           for impl in IMPLS}
    assert_close(fns['fast'](x), fns['ref'](x), name='value')
    ct = jnp.asarray(rng.randn(*fns['ref'](x).shape).astype(np.float32))
    grads = {impl: jax.grad(lambda x: jnp.sum(fn(x) * ct))(x) for impl, fn in fns.items()}
    assert_close(grads['fast'], grads['ref'], name='grad')


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
    assert_close(r1_like('fast'), r1_like('ref'), name='grad of grad')
