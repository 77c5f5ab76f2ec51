"""load_generator: one entry point for every kind of trained generator the tools take.

    params, buffers, G_cfg = load_generator(path)

`path` may be
  * an sg3jax sampling export (a directory with generator.json, written by export.export_generator);
  * a training workdir: its newest complete `network-snapshot-KKKKKK/` export (the loop's naming, KKKKKK = kimg);
  * an NVIDIA `.pkl` (official StyleGAN2-ADA / StyleGAN3 network pickle): its G_ema, read by sg3jax.legacy.
Anything else is refused with an error saying which of these was expected.
"""

import os
import pathlib
import pickle
import re

from sg3jax import legacy
from sg3jax.sampling.cli import ToolError
from sg3jax.sampling.export import restore_generator

_SNAPSHOT = re.compile(r'^network-snapshot-(\d+)$')


def latest_snapshot(workdir):
    """The newest complete export `network-snapshot-KKKKKK` in a training workdir (largest KKKKKK), or None.
    Exports are renamed into place only when complete (export.export_generator), so a directory with
    generator.json is complete; the hidden temporaries the exporter leaves on a crash never match."""
    best = None
    for p in pathlib.Path(workdir).iterdir():
        m = _SNAPSHOT.match(p.name)
        if m and (p / 'generator.json').is_file():
            kimg = int(m.group(1))
            if best is None or kimg > best[0]:
                best = (kimg, p)
    return None if best is None else best[1]


def resolve(path):
    """('export' | 'pkl', concrete path) for what load_generator accepts; ToolError otherwise."""
    s = os.fspath(path)
    if re.match(r'^[a-z]+://', s):
        raise ToolError(f'--network {s}: URLs are not fetched; download the file and pass its local path')
    p = pathlib.Path(s).expanduser()
    if not p.exists():
        raise ToolError(f'--network {s}: no such file or directory')
    if p.is_file():
        if p.suffix.lower() == '.pkl':
            return 'pkl', p
        raise ToolError(f'--network {s}: expected an NVIDIA .pkl file, an sg3jax generator export directory '
                        f'(with generator.json) or a training workdir (with network-snapshot-*/ exports)')
    if (p / 'generator.json').is_file():
        return 'export', p
    snap = latest_snapshot(p)
    if snap is not None:
        return 'export', snap
    raise ToolError(f'--network {s}: this directory has no generator.json and no complete network-snapshot-*/ '
                    f'export; expected an sg3jax generator export, a training workdir, or an NVIDIA .pkl file')


def load_generator(path_or_pkl):
    """(params, buffers, G_cfg) of the generator at `path_or_pkl` (module docstring); G_ema for pickles."""
    kind, p = resolve(path_or_pkl)
    if kind == 'export':
        try:
            return restore_generator(p)
        except (FileNotFoundError, ValueError) as e:
            raise ToolError(f'--network {p}: {e}') from e
    try:
        nets = legacy.load_network_pkl(p)
    except (ValueError, pickle.UnpicklingError, OSError) as e:   # the reader's errors say what is wrong
        raise ToolError(f'--network {p}: {e}') from e
    if 'G_ema' not in nets:
        raise ToolError(f'--network {p}: the pickle has no G_ema (it holds {sorted(nets)})')
    G = nets['G_ema']
    return G['params'], G['buffers'], G['cfg']
