"""Every op case in golden `ops.npz` (discovered from its `cases_json`), for both implementations."""

import json

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import golden
from golden import assert_close, nchw_to_nhwc, nhwc_to_nchw
from sg3jax import ops
from sg3jax.ops import convolution


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
    """Calls our op on the case's inputs, jitted (one compiled program; op by op, each of the dozens of small ops
    of a filtered_lrelu was compiled on its own); returns an NCHW (or unchanged) float32 output like the
    reference. Filters and flags are constants of the program, as in the networks."""
    data, get = _inputs(name, spec)
    op, kw = spec['op'], dict(spec['kwargs'])
    nhwc = lambda k: None if get(k) is None else jnp.asarray(nchw_to_nhwc(get(k)))
    arr = lambda k: None if get(k) is None else jnp.asarray(get(k))
    if op == 'bias_act':
        return jax.jit(lambda x, b: ops.bias_act(x, b, **kw))(arr('x'), arr('b'))
    if op in ('upfirdn2d', 'filter2d', 'upsample2d', 'downsample2d'):
        fn = getattr(ops, op)
        return nhwc_to_nchw(jax.jit(lambda x: fn(x, get('f'), impl=impl, **kw))(nhwc('x')))
    if op == 'filtered_lrelu':
        y = jax.jit(lambda x, b: ops.filtered_lrelu(x, get('fu'), get('fd'), b, impl=impl, **kw))(nhwc('x'), arr('b'))
        return nhwc_to_nchw(y)
    if op == 'modconv3':
        y = jax.jit(lambda x, w, s, g: ops.modulated_conv2d(x, w, s, demodulate=kw['demodulate'],
                                                             padding=kw['padding'], input_gain=g,
                                                             fused=(impl == 'ref')))(
            nhwc('x'), arr('w'), arr('s'), arr('input_gain'))
        return nhwc_to_nchw(y)
    if op == 'modconv2':
        # impl 'ref' runs the case's own fused_modconv flag; 'fast' also runs the other form, which must agree.
        fused = kw['fused_modconv'] if impl == 'ref' else not kw['fused_modconv']
        y = jax.jit(lambda x, w, s, noise: ops.modulated_conv2d_sg2(
            x, w, s, noise=noise, up=kw['up'], down=kw['down'], padding=kw['padding'],
            resample_filter=get('resample_filter'), demodulate=kw['demodulate'], flip_weight=kw['flip_weight'],
            fused_modconv=fused))(nhwc('x'), arr('weight'), arr('styles'), nhwc('noise'))
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
    fns = {impl: jax.jit(lambda x, impl=impl: ops.upfirdn2d(x, f, up=up, down=down, padding=pad, gain=up ** 2,
                                                            impl=impl))
           for impl in IMPLS + ['conv']}
    ct = jnp.asarray(rng.randn(*fns['ref'](x).shape).astype(np.float32))
    grads = {impl: jax.jit(jax.grad(lambda x, fn=fn: jnp.sum(fn(x) * ct)))(x) for impl, fn in fns.items()}
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
    run = jax.jit(lambda x, impl: ops.upfirdn2d(x, f, up=up, down=down, padding=pad, gain=up ** 2, impl=impl),
                  static_argnums=1)
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
        return jax.jit(jax.grad(penalty))(x)
    ref = r1_like('ref')
    assert_close(r1_like('fast'), ref, name='grad of grad')
    assert_close(r1_like('conv'), ref, name='grad of grad (TPU convolution path)')


FLRELU_CASES = [n for n in OP_CASES if CASES['cases'][n]['op'] == 'filtered_lrelu']


def _flrelu_case(name, dtype=jnp.float32):
    spec = CASES['cases'][name]
    _, get = _inputs(name, spec)
    x = jnp.asarray(nchw_to_nhwc(get('x')), dtype)
    b = None if get('b') is None else jnp.asarray(get('b'))
    return x, b, get('fu'), get('fd'), dict(spec['kwargs'])


def _flrelu_by_autodiff(x, b, fu, fd, impl, up, down, padding, gain, slope, clamp, flip_filter):
    """filtered_lrelu as the composition of its steps, on `impl`'s resampling, differentiated by JAX: the twin the
    sign-mask backward is checked against."""
    x = ops.bias_act(x, b)
    x = ops.upfirdn2d(x, fu, up=up, padding=padding, gain=up ** 2, flip_filter=flip_filter, impl=impl)
    x = ops.bias_act(x, act='lrelu', alpha=slope, gain=gain, clamp=clamp)
    return ops.upfirdn2d(x, fd, down=down, flip_filter=flip_filter, impl=impl)


# The golden cases of every kind on the polyphase path (clamped, up 2 / down 1, up 1 / down 2, radial, flipped,
# no filters or bias, up 4 cropped, a network layer); on the TPU's convolution path a radial and an up-4 case.
MASK_CASES = [(f'filtered_lrelu/{n}', impl) for n, impl in [
    ('c1_up2_down2_clamp', 'fast'), ('c2_up2_down1', 'fast'), ('c3_up1_down2', 'fast'), ('c4_radial_down', 'fast'),
    ('c6_flip_asym', 'fast'), ('c7_up1_down1_filters', 'fast'), ('c8_up4_down2', 'fast'), ('t64_L0', 'fast'),
    ('c4_radial_down', 'conv'), ('c8_up4_down2', 'conv')]]


@pytest.mark.parametrize('name,impl', MASK_CASES)
def test_filtered_lrelu_mask_backward_matches_autodiff(name, impl):
    """The official kernel's backward (two bits per upsampled value, the adjoint FIRs) gives autodiff's gradient
    of the same forward, for x and the bias, on the golden cases (clamped, radial, flipped, cropped), under a
    cotangent that varies per output sample: to float32 rounding. The forward is the same arithmetic: the losses
    are bitwise equal."""
    golden.require_golden()
    x, b, fu, fd, kw = _flrelu_case(name)
    w = jnp.asarray(np.random.RandomState(0).randn(*jax.eval_shape(
        lambda x: _flrelu_by_autodiff(x, b, fu, fd, impl, **kw), x).shape).astype(np.float32))
    ours = lambda x, b: ops.filtered_lrelu(x, fu, fd, b, impl=impl, **kw)
    twin = lambda x, b: _flrelu_by_autodiff(x, b, fu, fd, impl, **kw)
    argnums = (0,) if b is None else (0, 1)
    loss = lambda f: jax.jit(jax.value_and_grad(lambda x, b: jnp.sum(w * jnp.sin(f(x, b))), argnums=argnums))
    (value, grads), (twin_value, twin_grads) = loss(ours)(x, b), loss(twin)(x, b)
    assert float(value) == float(twin_value)
    for got, want, what in zip(grads, twin_grads, ('dx', 'db')):
        assert_close(got, want, rtol=1e-6, atol_rel=1e-6, name=f'{name}[{impl}] {what}')


def test_filtered_lrelu_saves_only_the_packed_mask():
    """What the forward keeps for the backward (the residuals of jax.vjp): one uint8 per four upsampled values,
    nothing in float, against autodiff's boolean and two float32 upsampled tensors; bfloat16 activations give
    bfloat16 input gradients and a float32 bias gradient."""
    x, b, fu, fd, kw = _flrelu_case('filtered_lrelu/c8_up4_down2')          # up 4, cropped, clamped
    y, vjp = jax.vjp(lambda x, b: ops.filtered_lrelu(x, fu, fd, b, **kw), x, b)
    (mask,) = jax.tree.leaves(vjp)
    u_shape = jax.eval_shape(lambda x: ops.upfirdn2d(x, fu, up=4, padding=kw['padding'], gain=16), x).shape
    assert mask.dtype == jnp.uint8 and mask.shape == (*u_shape[:3], -(-u_shape[3] // 4))
    _, twin_vjp = jax.vjp(lambda x, b: _flrelu_by_autodiff(x, b, fu, fd, 'fast', **kw), x, b)
    assert sum(r.nbytes for r in jax.tree.leaves(twin_vjp)) > 30 * mask.nbytes
    xb = x.astype(jnp.bfloat16)
    grad = lambda f: jax.jit(jax.grad(lambda x, b: jnp.sum(f(x, b).astype(jnp.float32)), argnums=(0, 1)))
    dx, db = grad(lambda x, b: ops.filtered_lrelu(x, fu, fd, b, **kw))(xb, b)
    assert dx.dtype == jnp.bfloat16 and db.dtype == jnp.float32
    _, twin_db = grad(lambda x, b: _flrelu_by_autodiff(x, b, fu, fd, 'fast', **kw))(xb, b)
    assert_close(db, twin_db, rtol=1e-2, atol_rel=1e-2, name='bf16 db')


# (input shape, HWIO kernel shape, strides, padding, groups): stride 1 and 2 as in G and D, 1x1 kernels, negative
# padding (a crop), and grouped convolutions (the official fused modconv), which stay XLA's on the CPU too.
CONV_CASES = [((2, 9, 11, 4), (3, 3, 4, 5), (1, 1), [(1, 1), (1, 1)], 1),
              ((2, 9, 11, 4), (3, 3, 4, 6), (2, 2), [(1, 2), (0, 1)], 1),
              ((2, 9, 11, 4), (1, 1, 4, 6), (2, 2), [(0, 0), (0, 0)], 1),
              ((2, 9, 11, 4), (3, 3, 4, 5), (1, 1), [(1, 1), (-1, 2)], 1),
              ((2, 9, 11, 4), (3, 3, 2, 6), (1, 1), [(1, 1), (-1, 2)], 2)]


@pytest.mark.parametrize('xs,ws,strides,pad,groups', CONV_CASES)
def test_convolution_primitive_matches_xla_in_every_derivative(xs, ws, strides, pad, groups):
    """ops.convolution (matmuls on the CPU) against lax.conv_general_dilated: value, both first derivatives,
    the second derivatives R1 takes (the gradient of |d tanh(conv)/dx|^2) and vmap, to float32 rounding."""
    rng = np.random.RandomState(3)
    x = jnp.asarray(rng.randn(*xs).astype(np.float32))
    w = jnp.asarray(rng.randn(*ws).astype(np.float32))
    fns = {impl: (lambda x, w, impl=impl: convolution.conv_general_dilated(
        x, w, strides, pad, ('NHWC', 'HWIO', 'NHWC'), feature_group_count=groups, impl=impl)) for impl in IMPLS}
    ct = jnp.asarray(rng.randn(*jax.eval_shape(fns['ref'], x, w).shape).astype(np.float32))

    def derivatives(f):
        first = jax.grad(lambda x, w: jnp.vdot(f(x, w), ct), argnums=(0, 1))
        second = jax.grad(lambda x, w: jnp.sum(jax.grad(lambda x: jnp.sum(jnp.tanh(f(x, w))))(x) ** 2),
                          argnums=(0, 1))
        return jax.jit(lambda x, w: (f(x, w), first(x, w), second(x, w), jax.vmap(f, (0, None))(x[:, None], w)))
    ref, fast = derivatives(fns['ref'])(x, w), derivatives(fns['fast'])(x, w)
    for name, a, b in zip(('y', 'dx', 'dw', 'd2x', 'd2w', 'vmap'), jax.tree.leaves(fast), jax.tree.leaves(ref)):
        assert_close(a, b, name=name)


def test_convolution_primitive_lowers_to_matmuls_on_cpu_only():
    """On the CPU the forward stays a convolution, the weight gradient and a strided input gradient are dots, and
    a stride-1 input gradient is a convolution with padding on every side (XLA:CPU's unpadded ones are slow); for
    TPU and GPU every program, second derivatives included, is the very text lax.conv_general_dilated lowers to
    (the TPU plan's cache is keyed by it). Lowered only, for every platform, on this host."""
    x, w = jax.ShapeDtypeStruct((2, 8, 8, 4), jnp.float32), jax.ShapeDtypeStruct((3, 3, 4, 5), jnp.float32)

    def programs(impl, strides, pad):
        f = lambda x, w: jnp.sum(jnp.tanh(convolution.conv_general_dilated(
            x, w, strides, pad, ('NHWC', 'HWIO', 'NHWC'), impl=impl)))
        first = jax.grad(f, argnums=(0, 1))
        second = jax.grad(lambda x, w: sum(jnp.sum(g ** 2) for g in first(x, w)), argnums=(0, 1))
        return {'forward': f, 'first': first, 'second': second}

    ref, fast = programs('ref', (2, 2), [(1, 1)] * 2), programs('fast', (2, 2), [(1, 1)] * 2)
    for order in ref:
        for platform in ('tpu', 'cuda', 'rocm'):
            lower = lambda f: jax.jit(f).trace(x, w).lower(lowering_platforms=(platform,)).as_text()
            assert lower(fast[order]) == lower(ref[order]), (order, platform)
    cpu = {order: jax.jit(f).trace(x, w).lower(lowering_platforms=('cpu',)).as_text() for order, f in fast.items()}
    assert cpu['forward'].count('stablehlo.convolution') == 1 and 'dot_general' not in cpu['forward']
    assert cpu['first'].count('stablehlo.convolution') == 1          # the forward; both gradients are dots
    assert cpu['first'].count('stablehlo.dot_general') >= 2
    # Stride 1, padding 2 of 3 taps (G's convolutions): the input gradient's convolution has no padding as XLA
    # writes it; here it is padded by one on every side, and the weight gradient is dots.
    first = jax.jit(programs('fast', (1, 1), [(2, 2)] * 2)['first']).trace(x, w).lower(lowering_platforms=('cpu',))
    convs = [l for l in first.as_text().splitlines() if 'stablehlo.convolution' in l]
    assert len(convs) == 2 and 'pad = [[2, 2], [2, 2]]' in convs[0] and 'pad = [[1, 1], [1, 1]]' in convs[1], convs
    assert 'stablehlo.dot_general' in first.as_text()
