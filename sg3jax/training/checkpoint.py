"""Every Orbax call of sg3jax lives here (so a move to Orbax's V1 API is a one-file change).

Two artefacts:
  * the training checkpoint: the whole training state (G, D, G_ema, both optimiser states, buffers, step, nimg)
    plus a JSON item (resolved config, data-iterator position, ...), through `ocp.CheckpointManager`:
    asynchronous, keep-N, each step committed atomically (written to a temporary directory, then renamed);
  * the sampling export: G_ema's params and buffers and the G config only, which `restore_generator` loads
    without any optimiser state (the file that gen_images, gen_video and notebooks take).
"""

import json
import os
import pathlib
import shutil
import tempfile
from typing import Any, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp

#----------------------------------------------------------------------------
# Training checkpoints.

def make_manager(workdir, max_to_keep: int = 5, async_save: bool = True) -> ocp.CheckpointManager:
    """CheckpointManager over `<workdir>/checkpoints`, keeping the newest `max_to_keep` steps."""
    options = ocp.CheckpointManagerOptions(max_to_keep=max_to_keep, enable_async_checkpointing=async_save,
                                           create=True, cleanup_tmp_directories=True)
    return ocp.CheckpointManager(pathlib.Path(workdir).absolute() / 'checkpoints', options=options)


def save(manager: ocp.CheckpointManager, step: int, state, meta: dict, force: bool = False) -> bool:
    """Saves (asynchronously) the state and a JSON-serialisable `meta` dict at `step`. Call on every process."""
    return manager.save(step, args=ocp.args.Composite(state=ocp.args.StandardSave(state),
                                                      meta=ocp.args.JsonSave(meta)), force=force)


def latest_meta(manager: ocp.CheckpointManager) -> Optional[Tuple[int, dict]]:
    """(step, meta) of the newest committed checkpoint, its JSON item only (the state is not read: the caller can
    compare the saved config with its own before restoring arrays of possibly other shapes); None if none."""
    step = manager.latest_step()
    if step is None:
        return None
    return step, manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']


def restore_latest(manager: ocp.CheckpointManager, abstract_state) -> Optional[Tuple[Any, dict, int]]:
    """(state, meta, step) of the newest committed checkpoint, restored with the shardings of
    `abstract_state` (a pytree of jax.ShapeDtypeStruct); None if the directory has none."""
    step = manager.latest_step()
    if step is None:
        return None
    out = manager.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract_state),
                                                        meta=ocp.args.JsonRestore()))
    return out['state'], out['meta'], step

#----------------------------------------------------------------------------
# Sampling export.

EXPORT_FORMAT = 'sg3jax-generator-v1'


def export_generator(path, params, buffers, G_cfg: dict, extra: Optional[dict] = None):
    """Writes {params, buffers} and `generator.json` (format tag, G config, `extra`) to directory `path`,
    atomically: everything goes to a temporary sibling first, which is renamed into place only when complete.
    An existing export at `path` is replaced. Call from every process (Orbax saves collectively); only
    process 0 writes the JSON and renames."""
    path = pathlib.Path(path).absolute()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f'.{path.name}.tmp-', dir=path.parent)) \
        if jax.process_index() == 0 else None
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
    except BaseException:
        if jax.process_index() == 0:
            shutil.rmtree(tmp, ignore_errors=True)
        raise


def _broadcast_path(p):
    if jax.process_count() == 1:
        return p
    from jax.experimental import multihost_utils
    s = str(p) if p is not None else ''
    buf = np.frombuffer(s.encode().ljust(4096, b'\0'), np.uint8)
    buf = multihost_utils.broadcast_one_to_all(buf)
    return pathlib.Path(bytes(buf).rstrip(b'\0').decode())


def restore_generator(path):
    """(params, buffers, G_cfg) from an `export_generator` directory; a clear error names what is wrong."""
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
    from sg3jax.networks import generator
    G_cfg = meta['G_cfg']
    abstract = jax.eval_shape(lambda k: generator.init(k, G_cfg), jax.random.key(0))
    target = {'params': abstract[0], 'buffers': abstract[1]}
    try:
        tree = ocp.StandardCheckpointer().restore(path / 'arrays', target)
    except Exception as e:  # orbax reports tree/shape mismatches in many forms; name the export
        raise ValueError(f'{path}: the arrays do not match its generator.json config: {e}') from e
    return tree['params'], tree['buffers'], G_cfg
