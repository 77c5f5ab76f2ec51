"""The training checkpoint, through Orbax (with sg3jax/sampling/export.py, the only files that call Orbax, so
that a move to Orbax's V1 API changes two files).

The whole training state (G, D, G_ema, both optimiser states, buffers, step, nimg) plus a JSON item (resolved
config, data-iterator position, ...), through `ocp.CheckpointManager`: asynchronous, keep-N, each step committed
atomically (written to a temporary directory, then renamed); a restart takes the newest step that restores
(`restore_newest`: damaged ones are reported and set aside). The sampling export (G_ema alone, for the sampling
tools) is sg3jax.sampling.export; export_generator and restore_generator are importable from here as well.
"""

import os
import pathlib
from typing import Any, Optional, Tuple

import jax
import numpy as np
import orbax.checkpoint as ocp
from jax.experimental import multihost_utils

# export_generator and restore_generator are sg3jax.sampling's; importable from here for code written before.
from sg3jax.sampling.export import export_generator, onto_first_device, restore_generator  # noqa: F401
from sg3jax.utils import error_reason

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


# Orbax writes this file into a step's temporary directory just before renaming it into place, so every
# committed step has it; a step directory without it was not written by a completed save.
COMMIT_MARKER = 'commit_success.txt'
DAMAGED_DIR = 'damaged-checkpoints'     # beside `checkpoints`: where steps that cannot be restored are moved


class NoUsableCheckpoint(RuntimeError):
    """A workdir holds checkpoints, and none of them can be restored."""


def restore_newest(manager: ocp.CheckpointManager, abstract_state, check_meta=None,
                   log=print) -> Optional[Tuple[Any, dict, int]]:
    """(state, meta, step) of the newest checkpoint that restores, with the shardings of `abstract_state` (a
    pytree of jax.ShapeDtypeStruct); None if the directory has none. Call on every process.

    A step that cannot be restored (no commit marker, unreadable or incomplete JSON item, arrays that do not
    read back) is reported through `log` with its path and reason, and the previous step is tried; on more than
    one process, a step counts as restored only if it restored on all of them. Once an older step restores, the
    newer damaged ones are moved, never deleted, to `<workdir>/damaged-checkpoints/` (so the run can save those
    steps again). If no step restores, NoUsableCheckpoint lists each with its reason and nothing is moved.

    `check_meta(step, meta)` runs on each step's JSON item before its arrays are read: it may raise (a config
    that does not match), and that error is not a damaged checkpoint, so it propagates."""
    root = pathlib.Path(manager.directory)
    failures = []
    for step in sorted(manager.all_steps(), reverse=True):
        path = root / str(step)
        meta, reason = None, None
        try:
            if not (path / COMMIT_MARKER).is_file():
                raise FileNotFoundError(f'{COMMIT_MARKER} is missing: its save did not complete')
            meta = manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))['meta']
            missing = [k for k in ('nimg', 'data_position') if not isinstance(meta, dict) or k not in meta]
            if missing:
                raise KeyError(f'its JSON item lacks {", ".join(missing)}')
        except Exception as e:  # noqa: BLE001 -- any failure to read makes this step unusable, reported below
            reason = error_reason(e)
        reason = _agree(reason)
        if reason is None:
            if check_meta is not None:
                check_meta(step, meta)
            try:
                state = manager.restore(step, args=ocp.args.Composite(
                    state=ocp.args.StandardRestore(abstract_state)))['state']
            except Exception as e:  # noqa: BLE001
                reason = error_reason(e)
            reason = _agree(reason)
            if reason is None:
                if failures:
                    _move_damaged(manager, [p for p, _ in failures], log)
                return state, meta, step
        log(f'checkpoint {path} cannot be restored ({reason}); trying the one before it')
        failures.append((path, reason))
    if failures:
        listed = '; '.join(f'{p.name}: {r}' for p, r in failures)
        raise NoUsableCheckpoint(f'{root}: no checkpoint can be restored ({listed}). Nothing was changed; move '
                                 f'these step directories away to start this run from scratch')
    return None


def _agree(reason: Optional[str]) -> Optional[str]:
    """None only if every process restored the step; else this process's reason, or the first failed peer."""
    if jax.process_count() == 1:
        return reason
    ok = multihost_utils.process_allgather(np.array([reason is None], np.int32))
    if reason is None and not ok.all():
        reason = f'unreadable on process {int(np.argmin(ok.reshape(-1)))}'
    return reason


def _move_damaged(manager, paths, log):
    dest = paths[0].parent.parent / DAMAGED_DIR
    if jax.process_index() == 0:
        dest.mkdir(exist_ok=True)
        for p in paths:
            target = dest / p.name
            n = 1
            while target.exists():      # a step damaged a second time keeps both copies
                target, n = dest / f'{p.name}.{n}', n + 1
            os.replace(p, target)
            log(f'moved {p} to {target}')
    if jax.process_count() > 1:
        multihost_utils.sync_global_devices('sg3jax: damaged checkpoints moved')
    manager.reload()


def read_training_state(path) -> Tuple[Any, dict, int]:
    """(state, meta, step) of another run, read onto this process's first device whatever devices wrote it:
    `path` is a run directory, its `checkpoints` directory (the newest committed step) or one step directory.
    For fine-tuning from it (`config.resume`); the state's arrays keep the shapes the run saved."""
    path = pathlib.Path(path).absolute()
    if (path / 'checkpoints').is_dir():
        path = path / 'checkpoints'
    if not (path / 'state').is_dir():
        steps = sorted((int(p.name) for p in path.iterdir() if p.name.isdigit() and (p / COMMIT_MARKER).is_file()),
                       reverse=True) if path.is_dir() else []
        if not steps:
            raise FileNotFoundError(f'{path}: no committed sg3jax checkpoint here (expected a run directory, its '
                                    f'checkpoints/ or one of its step directories)')
        path = path / str(steps[0])
    target = onto_first_device(ocp.StandardCheckpointer().metadata(path / 'state').item_metadata)
    state = ocp.StandardCheckpointer().restore(path / 'state', target)
    meta = ocp.Checkpointer(ocp.JsonCheckpointHandler()).restore(path / 'meta', args=ocp.args.JsonRestore())
    return state, meta, int(path.name)
