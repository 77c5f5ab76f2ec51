"""The sampling export: G_ema's params and buffers and its G config, without optimiser state, in a directory

    network-snapshot-KKKKKK/
      generator.json     {"format": "sg3jax-generator-v1", "G_cfg": {...}, "extra": {"kimg": ..., "step": ...}}
      arrays/            Orbax: {"params": ..., "buffers": ...}

which the trainer writes at every snapshot and the sampling tools, calc_metrics and notebooks read
(`restore_generator`), on any device topology.
"""

import json
import os
import pathlib
import shutil
import tempfile
from typing import Optional

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

from sg3jax.networks import generator
from sg3jax.utils import error_reason

EXPORT_FORMAT = 'sg3jax-generator-v1'


def export_generator(path, params, buffers, G_cfg: dict, extra: Optional[dict] = None):
    """Writes {params, buffers} and `generator.json` (format tag, G config, `extra`) to directory `path`,
    atomically: everything goes to a temporary sibling first, which is renamed into place only when complete.
    An existing export at `path` is replaced. A failed write (a full disk) raises OSError naming `path` and
    leaves nothing behind. Call from every process (Orbax saves collectively); only process 0 writes the JSON
    and renames."""
    path = pathlib.Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = None
    if jax.process_index() == 0:
        tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{path.name}.tmp-', dir=path.parent))
        umask = os.umask(0)
        os.umask(umask)
        tmp.chmod(0o777 & ~umask)       # mkdtemp's 0700 would make the export private to this user
    tmp = _broadcast_path(tmp)
    try:
        ckptr = ocp.StandardCheckpointer()
        ckptr.save(tmp / 'arrays', {'params': params, 'buffers': buffers})
        ckptr.wait_until_finished()
        if jax.process_index() == 0:
            meta = {'format': EXPORT_FORMAT, 'G_cfg': G_cfg, 'extra': extra or {}}
            (tmp / 'generator.json').write_text(json.dumps(meta, indent=2, sort_keys=True))
            if path.exists():
                old = path.with_name(f'.{path.name}.old-{os.getpid()}')
                os.replace(path, old)
                os.replace(tmp, path)
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.replace(tmp, path)
    except BaseException as e:
        if jax.process_index() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        if isinstance(e, Exception):    # a full disk, a quota, a lost mount: one error naming the export
            raise OSError(f'{path}: the export could not be written ({error_reason(e)}); its temporary directory was '
                          f'removed, and a previous export there, if any, is unchanged') from e
        raise


def _broadcast_path(p):
    if jax.process_count() == 1:
        return p
    s = str(p) if p is not None else ''
    buf = np.frombuffer(s.encode().ljust(4096, b'\0'), np.uint8)
    buf = multihost_utils.broadcast_one_to_all(buf)
    return pathlib.Path(bytes(buf).rstrip(b'\0').decode())


def restore_generator(path):
    """(params, buffers, G_cfg) from an `export_generator` directory, on this process's first device; a clear
    error names what is wrong."""
    path = pathlib.Path(path).absolute()
    meta_file = path / 'generator.json'
    if not meta_file.is_file():
        raise FileNotFoundError(f'{path} is not an sg3jax generator export: {meta_file.name} is missing')
    try:
        meta = json.loads(meta_file.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f'{meta_file}: not valid JSON ({e})') from None
    if meta.get('format') != EXPORT_FORMAT:
        raise ValueError(f'{meta_file}: format {meta.get("format")!r}, expected {EXPORT_FORMAT!r}')
    G_cfg = meta['G_cfg']
    abstract = onto_first_device(jax.eval_shape(lambda k: generator.init(k, G_cfg), jax.random.key(0)))
    target = {'params': abstract[0], 'buffers': abstract[1]}
    try:
        tree = ocp.StandardCheckpointer().restore(path / 'arrays', target)
    except Exception as e:  # orbax reports tree/shape mismatches in many forms; name the export
        raise ValueError(f'{path}: the arrays do not match its generator.json config: {e}') from e
    return tree['params'], tree['buffers'], G_cfg


def onto_first_device(abstract):
    """`abstract` (shapes and dtypes) placed on this process's first device: the target that reads a checkpoint
    whatever devices wrote it (a pod's, on a laptop); without a sharding Orbax rebuilds the writer's and refuses
    another topology."""
    device = jax.sharding.SingleDeviceSharding(jax.local_devices()[0])
    return jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=device), abstract)
