"""Sampling: what the official-style tools (gen_images, gen_video, gen_style_mix, avg_spectra, calc_metrics) and
notebooks share, without the training package.

  export.py    the sampling export (a network-snapshot-KKKKKK/ directory): export_generator, restore_generator
  load.py      load_generator(path): an sg3jax export, a training workdir (its newest snapshot) or an NVIDIA .pkl
  generate.py  seeds -> z -> ws (truncation toward w_avg, or as an option toward a class mean) -> uint8 images,
               jitted and batched; the official SG3 input transform (make_transform)
  cli.py       the official argument syntaxes (parse_range '0-31,40', 'a,b' vectors, 'WxH' grids) and ToolError

    from sg3jax import sampling
    G = sampling.as_generator(sampling.load_generator('runs/x'))
    images = sampling.render_seeds(G, [0, 1, 2], psi=0.7)
"""

from sg3jax.sampling.export import export_generator, restore_generator
from sg3jax.sampling.generate import (Generator, as_generator, check_class, class_mean_w, input_transform, labels,
                                      make_transform, mapping, render_seeds, synthesis, to_uint8, truncate,
                                      truncation_center, z_from_seeds)
from sg3jax.sampling.load import latest_snapshot, load_generator
from sg3jax.utils import image_grid

__all__ = ['Generator', 'as_generator', 'check_class', 'class_mean_w', 'export_generator', 'image_grid',
           'input_transform', 'labels', 'latest_snapshot', 'load_generator', 'make_transform', 'mapping',
           'render_seeds', 'restore_generator', 'synthesis', 'to_uint8', 'truncate', 'truncation_center',
           'z_from_seeds']
