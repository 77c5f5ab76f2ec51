"""Parameter-free ops of StyleGAN2/3, as pure `jax.numpy` functions on NHWC tensors.

Each op keeps a readable reference path (`impl='ref'`, differentiated by JAX) beside the fast one, as the official
code keeps `_upfirdn2d_ref` / `_filtered_lrelu_ref` beside its CUDA kernels.
"""

from sg3jax.ops.bias_act import activation_funcs, bias_act
from sg3jax.ops.conv2d_resample import conv2d, conv2d_resample
from sg3jax.ops.filter_design import design_lowpass_filter
from sg3jax.ops.filtered_lrelu import filtered_lrelu
from sg3jax.ops.modulated_conv2d import modulated_conv2d, modulated_conv2d_sg2
from sg3jax.ops.upfirdn2d import downsample2d, filter2d, setup_filter, upfirdn2d, upsample2d

__all__ = [
    'activation_funcs', 'bias_act', 'conv2d', 'conv2d_resample', 'design_lowpass_filter', 'filtered_lrelu',
    'modulated_conv2d', 'modulated_conv2d_sg2', 'downsample2d', 'filter2d', 'setup_filter', 'upfirdn2d',
    'upsample2d',
]
