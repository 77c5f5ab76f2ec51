"""XLA's convolution, with its derivatives lowered to matrix multiplications on the CPU, unchanged elsewhere.

XLA:CPU runs the gradients of a convolution, the weight gradient above all, several times slower than the same
arithmetic as matmuls (measurements: benchmarks/ops_notes.md, benchmarks/bench_cpu_train.py). GPU and TPU
compilers have fast convolutions, and the TPU plan's cache is keyed by the lowered programs, so those programs
must not change. `lax.platform_dependent` cannot give that: under autodiff it adds a `case` and zero residuals
for the other platform to every program. So `conv_p` is a copy of `lax.conv_general_dilated_p` (the same
parameters, shapes and derivative rules, plus a `role`: 'forward', 'input_grad' or 'weight_grad') with one more
lowering rule, for the CPU:

  * on every platform but the CPU it lowers to exactly the HLO of `lax.conv_general_dilated` (tests/test_ops.py
    compares the lowered text for TPU and GPU, second derivatives included);
  * on the CPU a forward convolution stays XLA's (as fast there as matmuls, and quicker to compile), and so
    does the input gradient of a stride-1 convolution, given padding (`_padded_xla_conv`: XLA:CPU's 'valid'
    convolutions are the slow ones); the other derivatives become loops of matmuls (`_matmul_conv`) over
    whichever is fewer: the kernel taps (a strided input gradient: k*k matmuls of [N*H*W, I] x [I, O]) or the
    output positions (a weight gradient, whose "kernel" is the whole output-gradient image: k*k matmuls of
    [I, N*H*W] x [N*H*W, O]).

The derivative and batching rules are XLA's own (`jax.linear_transpose` and `jax.vmap` of
`lax.conv_general_dilated`), replayed with each convolution they make bound as `conv_p` (`_as_conv_p`), so
derivatives of any order (R1 differentiates a gradient) are `conv_p` too. `conv_general_dilated(impl='ref')` is
the plain `lax.conv_general_dilated`, the readable reference.
"""

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.extend import core
from jax.interpreters import ad, batching, mlir, xla

_LAX_CONV = lax.conv_general_dilated_p

#----------------------------------------------------------------------------
# Replaying XLA's rules with `conv_p`.

def _eval_swapped(jaxpr, consts, args, role):
    """Evaluates `jaxpr` with every `conv_general_dilated` bound as `conv_p` of that role (the rest as it is)."""
    env = {}
    read = lambda v: v.val if isinstance(v, core.Literal) else env[v]
    for var, val in zip(jaxpr.constvars, consts):
        env[var] = val
    for var, val in zip(jaxpr.invars, args):
        env[var] = val
    for eqn in jaxpr.eqns:
        params = eqn.primitive.get_bind_params(eqn.params)
        if eqn.primitive is _LAX_CONV:
            out = conv_p.bind(*map(read, eqn.invars), role=role, **params)
        else:
            out = eqn.primitive.bind(*map(read, eqn.invars), **params)
        for var, val in zip(eqn.outvars, out if eqn.primitive.multiple_results else [out]):
            env[var] = val
    return [read(v) for v in jaxpr.outvars]


def _as_conv_p(fun, args, role):
    """fun(*args), where `fun` is built from `lax.conv_general_dilated`, with its convolutions bound as conv_p."""
    closed = jax.make_jaxpr(fun)(*args)
    return _eval_swapped(closed.jaxpr, closed.consts, args, role)


def _transpose_lhs(ct, x, w, *, role, **params):
    del role                  # every transpose with respect to the input is an input gradient
    x_aval = jax.ShapeDtypeStruct(x.aval.shape, x.aval.dtype)
    transpose = lambda ct, w: jax.linear_transpose(lambda x: _LAX_CONV.bind(x, w, **params), x_aval)(ct)
    return _as_conv_p(transpose, (ct, w), 'input_grad')[0]


def _transpose_rhs(ct, x, w, *, role, **params):
    del role
    w_aval = jax.ShapeDtypeStruct(w.aval.shape, w.aval.dtype)
    transpose = lambda ct, x: jax.linear_transpose(lambda w: _LAX_CONV.bind(x, w, **params), w_aval)(ct)
    return _as_conv_p(transpose, (ct, x), 'weight_grad')[0]


def _batch(args, dims, *, role, **params):
    fun = jax.vmap(lambda x, w: _LAX_CONV.bind(x, w, **params), in_axes=tuple(dims))
    return _as_conv_p(fun, args, role)[0], 0


def _lax_conv(x, w, *, role, **params):
    del role
    return _LAX_CONV.bind(x, w, **params)

#----------------------------------------------------------------------------
# The CPU lowering.

def _matmul_conv(x, w, *, role, window_strides, padding, lhs_dilation, rhs_dilation, dimension_numbers,
                 feature_group_count, batch_group_count, precision, preferred_element_type, **unused):
    """The CPU lowering of conv_p. Forward convolutions, grouped ones, other ranks and integer types are XLA's.
    An input gradient of a stride-1 convolution is XLA's convolution too, given at least one sample of padding on
    every side (`_padded_xla_conv`). The other derivatives, of two spatial dimensions, become loops of
    dot_generals (no layout change of the large operand for an input gradient, one transpose of it for a weight
    gradient, whose contraction over N, H, W is then one plain GEMM per position)."""
    params = dict(window_strides=window_strides, padding=padding, lhs_dilation=lhs_dilation,
                  rhs_dilation=rhs_dilation, dimension_numbers=dimension_numbers,
                  feature_group_count=feature_group_count, batch_group_count=batch_group_count,
                  precision=precision, preferred_element_type=preferred_element_type, **unused)
    lhs_spec, rhs_spec, out_spec = dimension_numbers
    floating = jnp.issubdtype(x.dtype, jnp.floating) and jnp.issubdtype(w.dtype, jnp.floating)
    if (role == 'forward' or len(lhs_spec) != 4 or feature_group_count != 1 or batch_group_count != 1
            or not floating):
        return _LAX_CONV.bind(x, w, **params)
    unit = lambda v: tuple(v) == (1, 1)
    if (role == 'input_grad' and unit(window_strides) and unit(lhs_dilation) and unit(rhs_dilation)
            and min(min(p) for p in padding) >= 0):
        return _padded_xla_conv(x, w, params)
    b_, f_, h_, w_ = lhs_spec
    o_, i_, kh_, kw_ = rhs_spec
    kh, kw = w.shape[kh_], w.shape[kw_]
    # Padding and input dilation in one pad (negative padding crops); then a 'valid' strided, dilated correlation.
    config = [(0, 0, 0)] * 4
    config[h_] = (*padding[0], lhs_dilation[0] - 1)
    config[w_] = (*padding[1], lhs_dilation[1] - 1)
    x = lax.pad(x, jnp.zeros((), x.dtype), config)
    (sh, sw), (dh, dw) = window_strides, rhs_dilation
    oh = (x.shape[h_] - (kh - 1) * dh - 1) // sh + 1
    ow = (x.shape[w_] - (kw - 1) * dw - 1) // sw + 1
    out_dtype = preferred_element_type or x.dtype
    # 16-bit inputs: products summed in float32 (as XLA's convolution does), one rounding at the end.
    acc = jnp.promote_types(out_dtype, jnp.float32)
    dot = functools.partial(lax.dot_general, precision=precision, preferred_element_type=acc)

    def window(v, v_h, v_w, a, b, size_h, size_w, step_h, step_w):
        """v[..., a : a + size_h * step_h : step_h, b : ...] on v's spatial dims v_h, v_w; a, b may be traced."""
        start, sizes = [0] * 4, list(v.shape)
        start[v_h], sizes[v_h] = a, (size_h - 1) * step_h + 1
        start[v_w], sizes[v_w] = b, (size_w - 1) * step_w + 1
        win = lax.dynamic_slice(v, start, sizes)
        strides = [1] * 4
        strides[v_h], strides[v_w] = step_h, step_w
        return win if (step_h, step_w) == (1, 1) else lax.slice(win, [0] * 4, sizes, strides)

    # The loops are XLA loops, not unrolled: one slice is live at a time (an unrolled weight gradient kept all
    # its k*k input windows, twice the temporary memory), and the program is smaller to compile.
    labels_x = {b_: 'b', f_: 'f', h_: 'h', w_: 'w'}
    out_labels = [{out_spec[0]: 'b', out_spec[1]: 'o', out_spec[2]: 'h', out_spec[3]: 'w'}[d] for d in range(4)]
    if oh * ow < kh * kw:
        # Few output positions (a weight gradient): one matmul per position over its whole input window,
        # contracting the input features and the window: [B, (F, KH, KW)] x [(I, KH, KW), O]. Both operands are
        # first laid out so that this is a plain row-major GEMM (faster than contracting x's major dimensions in
        # place: benchmarks/ops_notes.md); the copies are one pass over each.
        x_bfhw = jnp.transpose(x, (b_, f_, h_, w_))
        w_mat = jnp.transpose(w, (i_, kh_, kw_, o_)).reshape(-1, w.shape[o_])     # [(I, KH, KW), O]

        def position(p):
            win = window(x_bfhw, 2, 3, (p // ow) * sh, (p % ow) * sw, kh, kw, dh, dw)
            return dot(win.reshape(win.shape[0], -1), w_mat, (((1,), (0,)), ((), ())))  # [B, O]
        y = lax.map(position, jnp.arange(oh * ow)) if oh * ow > 1 else position(0)[None]
        y = y.reshape(oh, ow, *y.shape[1:])                                         # [OH, OW, B, O]
        res_labels = ['h', 'w', 'b', 'o']
    else:
        # Few taps (an input gradient): one matmul per tap over all output positions, contracting the input
        # features: [(B, OH, OW), F] x [I, O].
        kw_in_tap = kw_ - (kw_ > kh_)
        i_tap = i_ - (i_ > kh_) - (i_ > kw_)

        def tap(t, acc):
            w_t = lax.dynamic_index_in_dim(lax.dynamic_index_in_dim(w, t // kw, kh_, keepdims=False), t % kw,
                                           kw_in_tap, keepdims=False)                # [O, I] in w's order
            win = window(x, h_, w_, (t // kw) * dh, (t % kw) * dw, oh, ow, sh, sw)
            y_t = dot(win, w_t, (((f_,), (i_tap,)), ((), ())))
            return y_t if acc is None else acc + y_t
        y = tap(0, None)
        if kh * kw > 1:
            y = lax.fori_loop(1, kh * kw, tap, y)
        res_labels = [labels_x[d] for d in range(4) if d != f_] + ['o']
    y = jnp.transpose(y, [res_labels.index(l) for l in out_labels])
    return y.astype(out_dtype)


def _padded_xla_conv(x, w, params):
    """XLA's convolution, with one more sample of padding on every spatial side when some side has none, and the
    extra output cropped. XLA:CPU runs a convolution without padding ('valid') several times slower than the
    same arithmetic padded, and a stride-1 input gradient of G's convolutions (padding 2 for 3 taps) is exactly
    such a 'valid' convolution. Padded, it also beat `_matmul_conv`'s loop over taps on the shapes measured
    (benchmarks/ops_notes.md)."""
    padding = params['padding']
    if min(min(p) for p in padding) > 0:
        return _LAX_CONV.bind(x, w, **params)
    y = _LAX_CONV.bind(x, w, **{**params, 'padding': tuple((lo + 1, hi + 1) for lo, hi in padding)})
    _, _, out_spec = params['dimension_numbers']
    starts, limits = [0] * 4, list(y.shape)
    for d in out_spec[2:]:
        starts[d], limits[d] = 1, y.shape[d] - 1
    return lax.slice(y, starts, limits)

#----------------------------------------------------------------------------
# The primitive.

conv_p = core.Primitive('sg3jax_conv_general_dilated')
conv_p.def_impl(functools.partial(xla.apply_primitive, conv_p))
conv_p.def_effectful_abstract_eval(lambda x, w, *, role, **params: _LAX_CONV.abstract_eval(x, w, **params))
ad.defbilinear(conv_p, _transpose_lhs, _transpose_rhs)
batching.primitive_batchers[conv_p] = _batch
mlir.register_lowering(conv_p, mlir.lower_fun(_lax_conv, multiple_results=False))
mlir.register_lowering(conv_p, mlir.lower_fun(_matmul_conv, multiple_results=False), platform='cpu')


def conv_general_dilated(x, w, window_strides, padding, dimension_numbers, *, feature_group_count=1,
                         precision=lax.Precision.HIGHEST, impl='fast'):
    """`lax.conv_general_dilated` (strides, explicit padding, feature groups): impl='fast' binds `conv_p`
    (matmuls on the CPU), 'ref' is XLA's convolution everywhere."""
    if impl == 'ref':
        return lax.conv_general_dilated(x, w, window_strides, padding, dimension_numbers=dimension_numbers,
                                        feature_group_count=feature_group_count, precision=precision)
    if impl != 'fast':
        raise ValueError(f"impl must be 'fast' or 'ref', got {impl!r}")
    # Traced through lax.conv_general_dilated, so that conv_p gets its parameters in XLA's conventions.
    conv = functools.partial(lax.conv_general_dilated, window_strides=window_strides, padding=padding,
                             dimension_numbers=dimension_numbers, feature_group_count=feature_group_count,
                             precision=precision)
    return _as_conv_p(conv, (x, w), 'forward')[0]
