"""StyleGAN3 synthesis network (Karras et al. 2021, "Alias-Free Generative Adversarial Networks").

Fourier-feature input, then `num_layers` alias-suppressed layers (modulated conv -> filtered leaky ReLU) on a
geometric schedule of cutoffs and stopbands, then ToRGB. T config: 3x3 convs, separable Kaiser filters.
R config: 1x1 convs, radially symmetric (jinc) down-filters. Tensors are NHWC.
"""

import dataclasses
import functools
from typing import List, Optional, Tuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from sg3jax import utils
from sg3jax.networks.layers import fc_apply, fc_init, lerp
from sg3jax.ops import design_lowpass_filter, filtered_lrelu, modulated_conv2d
from sg3jax.ops.filtered_lrelu import MASK_NAME
from sg3jax.ops.modulated_conv2d import CONV_NAME

# Official SynthesisNetwork / SynthesisLayer defaults (networks_stylegan3.py).
SYNTHESIS_DEFAULTS = dict(
    channel_base=32768, channel_max=512, num_layers=14, num_critical=2, first_cutoff=2, first_stopband=2 ** 2.1,
    last_stopband_rel=2 ** 0.3, margin_size=10, output_scale=0.25, num_fp16_res=4,
    conv_kernel=3, filter_size=6, lrelu_upsampling=2, use_radial_filters=False, conv_clamp=256,
    magnitude_ema_beta=0.999,
)


@dataclasses.dataclass(frozen=True)
class LayerSpec:
    """Everything a synthesis layer derives from the config (official SynthesisLayer.__init__)."""
    name: str
    is_torgb: bool
    is_critically_sampled: bool
    use_fp16: bool
    in_channels: int
    out_channels: int
    in_size: int
    out_size: int
    in_sampling_rate: int
    out_sampling_rate: int
    tmp_sampling_rate: float
    in_cutoff: float
    out_cutoff: float
    in_half_width: float
    out_half_width: float
    conv_kernel: int
    up_factor: int
    down_factor: int
    up_taps: int
    down_taps: int
    down_radial: bool
    padding: Tuple[int, int, int, int]   # [x0, x1, y0, y1] of the upsampled image


@dataclasses.dataclass(frozen=True)
class SynthesisSpec:
    w_dim: int
    img_resolution: int
    img_channels: int
    num_ws: int
    input_channels: int
    input_size: int
    input_sampling_rate: float
    input_bandwidth: float
    layers: Tuple[LayerSpec, ...]
    output_scale: float
    conv_clamp: Optional[float]
    magnitude_ema_beta: float

    @property
    def layer_names(self) -> List[str]:
        return [l.name for l in self.layers]


def synthesis_spec(w_dim, img_resolution, img_channels, **kwargs) -> SynthesisSpec:
    """Derives channel counts, sizes, sampling rates, cutoffs and filter sizes as the official constructor."""
    unknown = set(kwargs) - set(SYNTHESIS_DEFAULTS)
    if unknown:
        raise ValueError(f'unknown StyleGAN3 synthesis option(s) {sorted(unknown)}; '
                         f'expected a subset of {sorted(SYNTHESIS_DEFAULTS)}')
    return _synthesis_spec_cached(w_dim, img_resolution, img_channels, kwargs)


@utils.cache_by_value(maxsize=64)
def _synthesis_spec_cached(w_dim, img_resolution, img_channels, kwargs) -> SynthesisSpec:
    o = {**SYNTHESIS_DEFAULTS, **kwargs}
    num_layers, num_critical = o['num_layers'], o['num_critical']
    # Geometric progression of cutoffs f_c and minimum stopbands f_t (paper Section 3.2, Figure 4b).
    last_cutoff = img_resolution / 2
    last_stopband = last_cutoff * o['last_stopband_rel']
    exponents = np.minimum(np.arange(num_layers + 1) / (num_layers - num_critical), 1)
    cutoffs = o['first_cutoff'] * (last_cutoff / o['first_cutoff']) ** exponents
    stopbands = o['first_stopband'] * (last_stopband / o['first_stopband']) ** exponents
    # Sampling rate: smallest power of two above 2 f_t (capped at the image size); transition half-widths f_h.
    sampling_rates = np.exp2(np.ceil(np.log2(np.minimum(stopbands * 2, img_resolution))))
    half_widths = np.maximum(stopbands, sampling_rates / 2) - cutoffs
    sizes = sampling_rates + o['margin_size'] * 2
    sizes[-2:] = img_resolution
    channels = np.rint(np.minimum((o['channel_base'] / 2) / cutoffs, o['channel_max']))
    channels[-1] = img_channels

    layers = []
    for idx in range(num_layers + 1):
        prev = max(idx - 1, 0)
        is_torgb = idx == num_layers
        in_sr, out_sr = int(sampling_rates[prev]), int(sampling_rates[idx])
        tmp_sr = max(in_sr, out_sr) * (1 if is_torgb else o['lrelu_upsampling'])
        conv_kernel = 1 if is_torgb else o['conv_kernel']
        up = int(np.rint(tmp_sr / in_sr))
        down = int(np.rint(tmp_sr / out_sr))
        assert in_sr * up == tmp_sr and out_sr * down == tmp_sr
        up_taps = o['filter_size'] * up if up > 1 and not is_torgb else 1
        down_taps = o['filter_size'] * down if down > 1 and not is_torgb else 1
        is_crit = idx >= num_layers - num_critical
        in_size, out_size = int(sizes[prev]), int(sizes[idx])
        # Padding so that the output has out_size samples, centred by the symmetric interpretation (App. C.3).
        pad_total = (out_size - 1) * down + 1
        pad_total -= (in_size + conv_kernel - 1) * up
        pad_total += up_taps + down_taps - 2
        pad_lo = (pad_total + up) // 2
        pad_hi = pad_total - pad_lo
        out_channels = int(channels[idx])
        layers.append(LayerSpec(
            name=f'L{idx}_{out_size}_{out_channels}', is_torgb=is_torgb, is_critically_sampled=is_crit,
            use_fp16=bool(sampling_rates[idx] * (2 ** o['num_fp16_res']) > img_resolution),
            in_channels=int(channels[prev]), out_channels=out_channels, in_size=in_size, out_size=out_size,
            in_sampling_rate=in_sr, out_sampling_rate=out_sr, tmp_sampling_rate=tmp_sr,
            in_cutoff=float(cutoffs[prev]), out_cutoff=float(cutoffs[idx]),
            in_half_width=float(half_widths[prev]), out_half_width=float(half_widths[idx]),
            conv_kernel=conv_kernel, up_factor=up, down_factor=down, up_taps=up_taps, down_taps=down_taps,
            down_radial=bool(o['use_radial_filters'] and not is_crit),
            padding=(int(pad_lo), int(pad_hi), int(pad_lo), int(pad_hi))))
    return SynthesisSpec(
        w_dim=w_dim, img_resolution=img_resolution, img_channels=img_channels, num_ws=num_layers + 2,
        input_channels=int(channels[0]), input_size=int(sizes[0]), input_sampling_rate=float(sampling_rates[0]),
        input_bandwidth=float(cutoffs[0]), layers=tuple(layers), output_scale=o['output_scale'],
        conv_clamp=o['conv_clamp'], magnitude_ema_beta=o['magnitude_ema_beta'])


@functools.lru_cache(maxsize=256)
def layer_filters(layer: LayerSpec):
    """(up_filter, down_filter) of a layer: float32 numpy or None (1 tap). Computed, never stored."""
    fu = design_lowpass_filter(numtaps=layer.up_taps, cutoff=layer.in_cutoff, width=layer.in_half_width * 2,
                               fs=layer.tmp_sampling_rate)
    fd = design_lowpass_filter(numtaps=layer.down_taps, cutoff=layer.out_cutoff, width=layer.out_half_width * 2,
                               fs=layer.tmp_sampling_rate, radial=layer.down_radial)
    return fu, fd

#----------------------------------------------------------------------------

def synthesis_init(key, spec: SynthesisSpec):
    """(params, buffers) with official names: `input`, then one entry per layer `L<idx>_<size>_<channels>`."""
    keys = jax.random.split(key, 4 + 2 * len(spec.layers))
    c = spec.input_channels
    # Random frequencies from a uniform-ish 2-D disc of radius `bandwidth` (official SynthesisInput).
    freqs = jax.random.normal(keys[0], (c, 2), jnp.float32)
    radii = jnp.sqrt(jnp.sum(jnp.square(freqs), axis=1, keepdims=True))
    freqs = freqs / (radii * jnp.exp(jnp.square(radii)) ** 0.25) * spec.input_bandwidth
    phases = jax.random.uniform(keys[1], (c,), jnp.float32) - 0.5
    params = {'input': {
        'weight': jax.random.normal(keys[2], (c, c), jnp.float32),
        'affine': fc_init(keys[3], spec.w_dim, 4, weight_init=0, bias_init=[1, 0, 0, 0])}}
    buffers = {'input': {'transform': jnp.eye(3, dtype=jnp.float32), 'freqs': freqs, 'phases': phases}}
    for i, l in enumerate(spec.layers):
        k1, k2 = keys[4 + 2 * i], keys[5 + 2 * i]
        params[l.name] = {
            'weight': jax.random.normal(k1, (l.out_channels, l.in_channels, l.conv_kernel, l.conv_kernel),
                                        jnp.float32),
            'bias': jnp.zeros([l.out_channels], jnp.float32),
            'affine': fc_init(k2, spec.w_dim, l.in_channels, bias_init=1)}
        buffers[l.name] = {'magnitude_ema': jnp.ones([], jnp.float32)}
    return params, buffers


def synthesis_input(params, buffers, w, spec: SynthesisSpec, transform=None):
    """Fourier features [N, size, size, C] for w [N, w_dim] (official SynthesisInput, Section 3.1).

    `transform` overrides the `transform` buffer: a [3,3] or per-sample [N,3,3] inverse transform of the image
    (gen_images' `make_transform` inverse), so a batch can be rendered under different translations/rotations.
    """
    n = w.shape[0]
    hp = lax.Precision.HIGHEST
    transforms = buffers['transform'] if transform is None else jnp.asarray(transform, jnp.float32)
    transforms = jnp.broadcast_to(transforms, (n, 3, 3))
    freqs, phases = buffers['freqs'], buffers['phases']                    # [C,2], [C]

    # Learned rotation and translation from w: t = (r_c, r_s, t_x, t_y), rotation part normalised.
    t = fc_apply(params['affine'], w)                                      # [N,4]
    t = t / jnp.linalg.norm(t[:, :2], axis=1, keepdims=True)
    one, zero = jnp.ones([n]), jnp.zeros([n])
    m_r = jnp.stack([jnp.stack([t[:, 0], -t[:, 1], zero], -1),
                     jnp.stack([t[:, 1], t[:, 0], zero], -1),
                     jnp.stack([zero, zero, one], -1)], 1)                 # inverse rotation [N,3,3]
    m_t = jnp.stack([jnp.stack([one, zero, -t[:, 2]], -1),
                     jnp.stack([zero, one, -t[:, 3]], -1),
                     jnp.stack([zero, zero, one], -1)], 1)                 # inverse translation [N,3,3]
    # First rotate the resulting image, then translate, and finally apply the user-specified transform.
    transforms = jnp.matmul(jnp.matmul(m_r, m_t, precision=hp), transforms, precision=hp)

    phases = phases[None] + jnp.matmul(freqs[None], transforms[:, :2, 2:], precision=hp)[..., 0]   # [N,C]
    freqs = jnp.matmul(freqs[None], transforms[:, :2, :2], precision=hp)                           # [N,C,2]
    # Dampen frequencies pushed out of band by the user transform.
    amplitudes = jnp.clip(1 - (jnp.linalg.norm(freqs, axis=2) - spec.input_bandwidth)
                          / (spec.input_sampling_rate / 2 - spec.input_bandwidth), 0, 1)          # [N,C]

    # Sample grid: pixel centres of a size x size image spanning [-0.5, 0.5] * size / sampling_rate
    # (torch affine_grid with align_corners=False).
    size = spec.input_size
    coords = ((2 * np.arange(size) + 1) / size - 1) * (0.5 * size / spec.input_sampling_rate)
    gx = jnp.asarray(coords, jnp.float32)[None, None, :, None]            # x varies along W
    gy = jnp.asarray(coords, jnp.float32)[None, :, None, None]            # y varies along H
    x = gx * freqs[:, None, None, :, 0] + gy * freqs[:, None, None, :, 1]  # [N,H,W,C]
    x = x + phases[:, None, None, :]
    x = jnp.sin(x * (np.pi * 2))
    x = x * amplitudes[:, None, None, :]
    weight = params['weight'] / np.sqrt(spec.input_channels)
    return jnp.matmul(x, weight.T, precision=hp)                          # [N,H,W,C]


def synthesis_layer(params, buffers, x, w, layer: LayerSpec, spec: SynthesisSpec, update_emas=False,
                    impl='fast', dtype=jnp.float32):
    """One SG3 layer: modulated conv (input scaled by rsqrt(magnitude_ema)) -> filtered leaky ReLU.

    Returns (x, buffers); with `update_emas` the input's mean square updates `magnitude_ema` (decay
    magnitude_ema_beta), computed over the whole batch given (global batch under jit). `dtype` is the layer's
    compute dtype: the styles, weight normalisation and demodulation stay float32 and only the activations and
    the convolution run in it, as the official fp16 layers (the clamp to conv_clamp is what keeps them finite)."""
    if update_emas:
        magnitude_cur = jnp.mean(jnp.square(lax.stop_gradient(x).astype(jnp.float32)))
        buffers = {**buffers, 'magnitude_ema': lerp(magnitude_cur, buffers['magnitude_ema'],
                                                    spec.magnitude_ema_beta)}
    input_gain = lax.rsqrt(buffers['magnitude_ema'])
    styles = fc_apply(params['affine'], w)
    if layer.is_torgb:
        styles = styles * (1 / np.sqrt(layer.in_channels * layer.conv_kernel ** 2))
    x = modulated_conv2d(x.astype(dtype), params['weight'], styles, demodulate=not layer.is_torgb,
                         padding=layer.conv_kernel - 1, input_gain=input_gain, fused=(impl == 'ref'))
    fu, fd = layer_filters(layer)
    x = filtered_lrelu(x, fu, fd, params['bias'], up=layer.up_factor, down=layer.down_factor,
                       padding=layer.padding, gain=1 if layer.is_torgb else np.sqrt(2),
                       slope=1 if layer.is_torgb else 0.2, clamp=spec.conv_clamp, impl=impl)
    return x, buffers


def synthesis_apply(params, buffers, ws, spec: SynthesisSpec, update_emas=False, transform=None, impl='fast',
                    mixed_dtype=None, remat=False):
    """ws [N, num_ws, w_dim] -> (images [N, R, R, img_channels] (NHWC, output_scale applied, float32), buffers).

    With `update_emas` each layer's `magnitude_ema` in the returned buffers moves toward the batch's input
    magnitude; without, the buffers are returned as given. Options as in _synthesis."""
    img, new_buffers, _ = _synthesis(params, buffers, ws, spec, update_emas=update_emas, transform=transform,
                                     impl=impl, mixed_dtype=mixed_dtype, remat=remat)
    return img, new_buffers


def synthesis_activations(params, buffers, ws, spec: SynthesisSpec, transform=None, impl='fast', mixed_dtype=None,
                          remat=False):
    """(images, {'input' and each layer's name: its output}) of `synthesis_apply` without EMA updates: every
    layer's output, for localising parity differences."""
    img, _, acts = _synthesis(params, buffers, ws, spec, update_emas=False, transform=transform, impl=impl,
                              mixed_dtype=mixed_dtype, remat=remat)
    return img, acts


# What a rematerialised layer keeps for its backward pass besides its input (`remat`; config.remat_policy).
#   'inputs':          nothing more: the backward pass runs the whole layer's forward again.
#   'masks':           filtered_lrelu's packed 2-bit sign/clamp mask (about a byte per input value): the backward
#                      runs the modulated convolution again, but not the FIR chain (up-FIR, activation, down-FIR).
#   'masks_and_convs': the modulated convolution's output too (an output-sized float): only elementwise work (the
#                      styled input, the demodulation coefficients) is computed again.
REMAT_POLICIES = {
    'inputs': None,
    'masks': jax.checkpoint_policies.save_only_these_names(MASK_NAME),
    'masks_and_convs': jax.checkpoint_policies.save_only_these_names(MASK_NAME, CONV_NAME),
}


def remat_layer(run_layer, remat):
    """`run_layer` as `remat` asks: False as it is; True or 'inputs', 'masks', 'masks_and_convs' (REMAT_POLICIES)
    wrapped in `jax.checkpoint` with that policy."""
    if not remat:
        return run_layer
    name = 'inputs' if remat is True else remat
    if name not in REMAT_POLICIES:
        raise ValueError(f'remat must be False, True or one of {sorted(REMAT_POLICIES)}, got {remat!r}')
    return jax.checkpoint(run_layer, policy=REMAT_POLICIES[name])


def _synthesis(params, buffers, ws, spec: SynthesisSpec, update_emas, transform, impl, mixed_dtype, remat):
    """(img, new_buffers, activations). `mixed_dtype` (jnp.bfloat16 / jnp.float16): the compute dtype of
    the layers the official code runs in fp16 on CUDA (`use_fp16`: sampling rate * 2**num_fp16_res >
    img_resolution, i.e. the highest-resolution layers); None = float32 everywhere, the official CPU behaviour.
    `remat`: rematerialise each layer (`jax.checkpoint`) under differentiation: False keeps what autodiff keeps
    (the styled input and output of each modulated convolution, filtered_lrelu's packed sign mask); True (=
    'inputs') keeps only the layers' inputs and recomputes the rest from them, about one more forward of compute;
    'masks' and 'masks_and_convs' keep those too (REMAT_POLICIES). The same values in every case."""
    if ws.ndim != 3 or ws.shape[1:] != (spec.num_ws, spec.w_dim):
        raise ValueError(f'ws must have shape [N, {spec.num_ws}, {spec.w_dim}], got {ws.shape}')
    ws = ws.astype(jnp.float32)
    acts = {}
    x = synthesis_input(params['input'], buffers['input'], ws[:, 0], spec, transform=transform)
    acts['input'] = x
    new_buffers = dict(buffers)
    for i, layer in enumerate(spec.layers):
        dtype = mixed_dtype if (mixed_dtype is not None and layer.use_fp16) else jnp.float32
        run_layer = functools.partial(synthesis_layer, layer=layer, spec=spec, update_emas=update_emas, impl=impl,
                                      dtype=dtype)
        run_layer = remat_layer(run_layer, remat)
        x, new_buffers[layer.name] = run_layer(params[layer.name], buffers[layer.name], x, ws[:, i + 1])
        acts[layer.name] = x
    if spec.output_scale != 1:
        x = x * spec.output_scale
    x = x.astype(jnp.float32)
    return x, new_buffers, acts
