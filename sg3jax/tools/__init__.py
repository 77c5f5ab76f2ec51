"""Sampling tools shared by the command lines (gen_images, gen_video, gen_style_mix, avg_spectra) and notebooks.

  load.py      load_generator(path): an sg3jax export, a training workdir (its newest snapshot) or an NVIDIA .pkl
  sampling.py  seeds -> z -> ws (truncation toward w_avg, or as an option toward a class mean) ->
               uint8 images, jitted and batched; the official SG3 input transform (make_transform)
  cli.py       the official argument syntaxes (parse_range '0-31,40', 'a,b' vectors, 'WxH' grids), ToolError and
               atomic file writes
"""
