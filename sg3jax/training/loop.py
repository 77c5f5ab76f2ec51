"""The training loop, read top to bottom (official training_loop.py, on a JAX device mesh).

Sections: set up devices and the mesh / the dataset / the networks and the state / resume / the sample grid /
the loop (phases, then at each tick: status line, stats.jsonl, TensorBoard, snapshots) / preemption.
"""

import json
import pathlib
import resource
import signal
import time

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import AxisType, NamedSharding, PartitionSpec as P
from tensorboardX import SummaryWriter

from sg3jax import data as data_lib
from sg3jax import metrics as metrics_lib
from sg3jax import utils
from sg3jax.networks import generator
from sg3jax.sampling.export import export_generator
from sg3jax.training import checkpoint as ckpt
from sg3jax.training import config as config_lib
from sg3jax.training import steps as steps_lib
from sg3jax.training import transfer
from sg3jax.utils import format_time, save_image_grid


class NonFiniteLoss(FloatingPointError):
    """A loss became NaN or Inf (config.nan_policy='stop')."""


def grid_shape(resolution, c_dim):
    """Official snapshot grid: about 7680x4320 pixels, 7..32 columns; conditional runs get one row per class."""
    gw = int(np.clip(7680 // resolution, 7, 32))
    gh = int(np.clip(4320 // resolution, 4, 32))
    if c_dim:
        gh = min(c_dim, 32)
    return gw, gh


class _Preemption:
    """SIGTERM (TPU preemption, SLURM time limit): the loop checkpoints and exits at the next step.

    One process: a Python handler sets a flag. Several (jax.distributed): JAX's preemption service takes the
    signal, tells every process, and `reached_preemption_sync_point` is true at the same step on all of them. A
    Python handler there would replace the service's own (so it would never hear of the signal) and stop only
    the signalled host, whose checkpoint save then waits forever for peers still training."""

    def __init__(self):
        self.flag = False
        self._multi = jax.process_count() > 1
        self._old = None if self._multi else signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, signum, frame):
        del signum, frame
        self.flag = True

    def reached(self, step):
        if self._multi:
            return multihost_utils.reached_preemption_sync_point(step)
        return self.flag

    def restore(self):
        if not self._multi:
            signal.signal(signal.SIGTERM, self._old)


def train(config, workdir, *, make_data, c_dim, img_channels, log=print):
    """Trains until config.kimg; resumable. `make_data(run, start_step)` returns an iterator of this process's
    slices of the global batches {'img': uint8 [n, H, W, C], 'c': float32 [n, c_dim]}, starting after
    `start_step` global batches (so a resumed run continues with the next unseen batch)."""
    workdir = pathlib.Path(workdir)
    is_main = jax.process_index() == 0

    # Devices and mesh: one `data` axis over every device of every process; parameters replicated.
    run = config_lib.resolve(config, jax.device_count(), c_dim=c_dim, img_channels=img_channels)
    mesh = jax.make_mesh((jax.device_count(),), ('data',), axis_types=(AxisType.Auto,))
    repl, data_sharding = NamedSharding(mesh, P()), NamedSharding(mesh, P('data'))
    steps = steps_lib.make_steps(run, mesh)
    log(f'process {jax.process_index()} holding {jax.local_device_count()}/{jax.device_count()} devices')
    if is_main:
        workdir.mkdir(parents=True, exist_ok=True)

    # State: created already replicated (never built on the host and copied).
    key = jax.random.key(run.seed)
    k_init, k_train, k_grid = jax.random.split(key, 3)
    abstract = jax.eval_shape(lambda k: steps_lib.init_state(k, run), k_init)
    abstract = jax.tree.map(lambda x: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=repl), abstract)

    # Resume order: 1. the newest checkpoint in workdir (a restarted or preempted run); 2. config.resume;
    # 3. from scratch.
    manager = ckpt.make_manager(workdir, max_to_keep=run.keep_checkpoints)

    def check_saved_config(saved_step, saved_meta):
        # Before any array is read, so that another architecture gets this message rather than Orbax's shape
        # errors.
        changes = config_lib.resume_changes(saved_meta.get('config', {}), run)
        if changes:
            listed = '; '.join(f'{k}: {old!r} -> {new!r}' for k, old, new in changes)
            raise config_lib.ResumeConflict(
                f'{workdir}/checkpoints step {saved_step} was trained with other settings ({listed}). A run '
                f'restarted in its workdir continues that run: it may change only '
                f'{", ".join(sorted(config_lib.RESUMABLE_FIELDS))} and the device count. Restore those values, '
                f'or train with the new ones in a new --workdir')

    try:
        restored = ckpt.restore_newest(manager, abstract, check_meta=check_saved_config, log=log)
    except BaseException:
        manager.close()
        raise
    if restored is not None:
        state, meta, step = restored
        log(f'resuming from {workdir}/checkpoints step {step} ({meta["nimg"] / 1000:.1f} kimg)')
        if is_main:
            trim_stats(workdir / 'stats.jsonl', int(meta['nimg']) / 1000)
    else:
        state = jax.jit(lambda k: steps_lib.init_state(k, run), out_shardings=repl)(k_init)
        start_nimg = int(run.resume_kimg * 1000)
        if run.resume:
            # Fine-tuning (official --resume): weights by name into the fresh state, read on every process.
            source = transfer.load_source(run.resume)
            host = transfer.apply_source(jax.device_get(state), source, *config_lib.network_kwargs(run), run.resume,
                                         log=log if is_main else lambda s: None)
            state = jax.tree.map(lambda x: jax.make_array_from_process_local_data(repl, np.asarray(x)), host)
        if start_nimg:      # official cur_nimg = resume_kimg * 1000: the ramp-ups and the end count from there
            state = {**state, 'nimg': jax.make_array_from_process_local_data(repl, np.int32(start_nimg))}
        step, meta = 0, {'nimg': start_nimg, 'data_position': 0}
    run_config = config_lib.stored_form(run)     # the config each checkpoint records
    if is_main:     # after the resume check: a refused restart leaves the run's own options in place
        utils.write_text_atomic(workdir / 'training_options.json', json.dumps(run.to_dict(), indent=2, default=str))
    # The image count and the data position are the checkpoint's (the batch size cannot have changed: see
    # config.resume_changes).
    nimg = int(meta['nimg'])
    data = make_data(run, int(meta['data_position']))

    def to_device(host):
        """This process's uint8 slice -> the global float batch in [-1, 1], sharded on `data`."""
        arrays = _normalize(data_lib.to_global_array(host, data_sharding))
        # An unconditional run's labels are [n, 0]: XLA gives such empty outputs a replicated sharding, which the
        # update steps' `data` in_shardings refuse on more than one device; empty arrays move for free.
        return {k: jax.device_put(a, data_sharding) if a.size == 0 else a for k, a in arrays.items()}

    # Sample grid: fixed z (and one class per row for conditional runs), rendered with G_ema.
    gw, gh = grid_shape(run.resolution, run.c_dim)
    G_cfg, _ = config_lib.network_kwargs(run)
    grid_z = jax.random.normal(k_grid, (gw * gh, G_cfg['z_dim']))
    grid_c = (jnp.eye(run.c_dim)[jnp.repeat(jnp.arange(gh) % max(run.c_dim, 1), gw)] if run.c_dim
              else jnp.zeros([gw * gh, 0]))
    render = jax.jit(lambda p, b: generator.apply(p, b, grid_z, grid_c, G_cfg, noise_mode='const'),
                     out_shardings=repl)

    def snapshot_images(name):
        images = np.asarray(jax.device_get(render(state['G_ema'], state['buffers']['G_ema'])))
        if is_main:
            save_image_grid(images, workdir / name, (gw, gh))

    if step == 0:
        snapshot_images('fakes_init.png')

    # Quality metrics at every snapshot (official --metrics), with G_ema. A resumed run first brings the metric
    # logs to its checkpoint: the records of snapshots after it go (they are made again), and the metrics of the
    # checkpoint's own snapshot, if the run stopped before it wrote them, are computed now from the restored state.
    metric_list = config_lib.metric_names(run.metrics)
    backfill = []
    if restored is not None:
        backfill = settle_metric_logs(workdir, meta.get('metric_records', {}), meta.get('metrics_due', False),
                                      metric_list)

    # The loop.
    preemption = _Preemption()
    writer = None
    if is_main:
        writer = SummaryWriter(str(workdir))
    total_nimg = int(run.kimg * 1000)
    tick_nimg = int(run.tick * 1000)
    cur_tick = 0
    tick_start_nimg, tick_start_time = nimg, time.time()
    start_time = tick_start_time
    maintenance = 0.0
    pending = []
    done = nimg >= total_nimg
    try:
        if backfill:
            snapshot = _snapshot_dir(workdir, nimg)
            log(f'metrics of {snapshot.name} missing from its run ({", ".join(backfill)}): computing them')
            _evaluate_metrics(backfill, run, state, G_cfg, workdir, snapshot, writer, nimg, log)
        while not done:
            batch = to_device(next(data))
            state, metrics = steps_lib.train_step(state, batch, k_train, run, steps, step)
            pending.append(metrics)
            step += 1
            nimg += run.batch_size
            done = nimg >= total_nimg
            preempted = preemption.reached(step)
            if not (done or preempted or cur_tick == 0 or nimg >= tick_start_nimg + tick_nimg):
                continue

            # Tick: pull the metrics of the steps since the last tick (only now: the device never waits).
            fetched = jax.device_get(pending)
            tick_end = time.time()
            pending = []
            nonfinite = int(state['nonfinite'])
            if nonfinite >= 0 and run.nan_policy == 'stop':
                bad_step, phase = divmod(nonfinite, 8)
                name = {v: k for k, v in steps_lib.PHASE_IDS.items()}[phase]
                manager.wait_until_finished()
                raise NonFiniteLoss(f'a loss became NaN or Inf at step {bad_step} (kimg '
                                    f'{bad_step * run.batch_size / 1000:.3f}), phase {name}; set '
                                    f'config.nan_policy=skip to drop such updates instead')
            stats = {}
            for m in fetched:
                for k, v in m.items():
                    stats.setdefault(k, []).append(float(v))
            stats = {k: float(np.mean(v)) for k, v in stats.items()}
            augment_p = float(state['augment']['p']) if 'augment' in state else 0.0   # current p, as official
            tick_time = tick_end - tick_start_time
            kimg_tick = max(nimg - tick_start_nimg, 1) / 1000
            host_mem = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20
            dev_mem = _device_memory_gib()
            stats.update({'Progress/tick': cur_tick, 'Progress/kimg': nimg / 1000,
                          'Timing/total_sec': tick_end - start_time, 'Timing/sec_per_tick': tick_time,
                          'Timing/sec_per_kimg': tick_time / kimg_tick, 'Timing/maintenance_sec': maintenance,
                          'Resources/cpu_mem_gb': host_mem, 'Resources/peak_device_mem_gb': dev_mem,
                          'Progress/augment': augment_p, 'timestamp': time.time()})
            if is_main:
                log(f'tick {cur_tick:<5d} kimg {nimg / 1000:<8.1f} time {format_time(tick_end - start_time):<12s} '
                    f'sec/tick {tick_time:<7.1f} sec/kimg {tick_time / kimg_tick:<7.2f} '
                    f'maintenance {maintenance:<6.1f} cpumem {host_mem:<6.2f} gpumem {dev_mem:<6.2f} '
                    f'augment {augment_p:.3f}')
                with open(workdir / 'stats.jsonl', 'a') as f:
                    f.write(json.dumps(stats) + '\n')
                for k, v in stats.items():   # official: global_step = kimg, walltime since the start
                    if k != 'timestamp':
                        writer.add_scalar(k, v, global_step=nimg // 1000, walltime=tick_end)
                writer.flush()

            # Snapshots (every `snap` ticks, at the end, and on preemption): checkpoint, export, image grid.
            maint_start = time.time()
            if done or preempted or cur_tick % run.snap == 0:
                # With the record count of each metric log before this snapshot's metrics (process 0 writes them),
                # so that a resumed run can tell whether they were written (settle_metric_logs).
                meta = {'nimg': nimg, 'data_position': step, 'config': run_config,
                        'metric_records': {name: len(_json_lines(_read_metric_log(workdir, name)[1]))
                                           for name in metric_list},
                        'metrics_due': bool(metric_list) and not preempted}
                ckpt.save(manager, step, state, meta, force=True)
                snapshot = _snapshot_dir(workdir, nimg)
                export_generator(snapshot, state['G_ema'], state['buffers']['G_ema'], G_cfg,
                                      extra={'kimg': nimg / 1000, 'step': step})
                snapshot_images(f'fakes{nimg // 1000:06d}.png')
                if metric_list and not preempted:
                    _evaluate_metrics(metric_list, run, state, G_cfg, workdir, snapshot, writer, nimg, log)
            cur_tick += 1
            tick_start_nimg, tick_start_time = nimg, time.time()
            maintenance = tick_start_time - maint_start
            if preempted and not done:
                manager.wait_until_finished()
                log(f'preempted (SIGTERM): checkpoint at step {step} written; exiting')
                return state
    finally:
        preemption.restore()
        manager.wait_until_finished()
        manager.close()
        if writer is not None:
            writer.close()
    log('done')
    return state


def trim_stats(path, kimg):
    """Keeps the complete records of `path` (stats.jsonl) up to `kimg`, the checkpoint a run resumes from.

    A run resumes in its own workdir: the ticks it logged after its newest checkpoint are trained and logged again,
    and a kill during an append leaves a partial last line. Without this the file would hold both copies of those
    ticks, or a line that is not JSON, in the middle. Written atomically; a missing file is left missing."""
    path = pathlib.Path(path)
    if not path.exists():
        return
    kept = [line for line, record in _json_lines(path.read_text())
            if isinstance(record, dict) and record.get('Progress/kimg', 0) <= kimg + 1e-9]
    utils.write_text_atomic(path, ''.join(kept))


def _json_lines(text):
    """(line with its newline, parsed record) for each line of `text` (a JSON-lines file) that is JSON; a line cut
    short by a kill during its append is left out."""
    parsed = []
    for line in text.splitlines():
        try:
            parsed.append((line + '\n', json.loads(line)))
        except json.JSONDecodeError:
            continue
    return parsed


def _snapshot_dir(workdir, nimg):
    return workdir / f'network-snapshot-{nimg // 1000:06d}'


def _read_metric_log(workdir, name):
    """(path, text) of workdir/metric-<name>.jsonl, named as metric_main.report_metric writes it; the text is ''
    for a log not written yet."""
    path = workdir / f'metric-{name}.jsonl'
    return path, path.read_text() if path.exists() else ''


def settle_metric_logs(workdir, counts, due, metric_list):
    """Brings the metric logs of a resumed run to its checkpoint; returns the metrics of `metric_list` still to
    compute for the checkpoint's snapshot, the same list on every process (process 0 reads and writes the files).

    `counts` (checkpoint meta 'metric_records'): each log's record count before that snapshot's metrics; `due`:
    whether they were to run (not at a SIGTERM stop). Each log keeps its first counts[name] records, plus the
    snapshot's own when due: later records (of snapshots after the checkpoint, trained again now) and partial lines
    go, so the logs hold each snapshot once. A log holding no record for a due snapshot (the run stopped after the
    checkpoint, before or during the metric) is named in the result, if the metric is still in `metric_list`."""
    if not metric_list:
        return []
    missing = np.zeros(len(metric_list), np.int32)
    if jax.process_index() == 0:
        for i, name in enumerate(metric_list):
            if name not in counts:
                continue
            (path, text), keep = _read_metric_log(workdir, name), counts[name] + due
            records = [line for line, _ in _json_lines(text)]
            if text != ''.join(records[:keep]):          # never true of a missing file: nothing is created
                utils.write_text_atomic(path, ''.join(records[:keep]))
            missing[i] = due and len(records) < keep
    if jax.process_count() > 1:
        missing = multihost_utils.broadcast_one_to_all(missing)
    return [name for name, m in zip(metric_list, np.asarray(missing)) if m]


def _evaluate_metrics(names, run, state, G_cfg, workdir, snapshot, writer, nimg, log):
    """Each metric of `names` on G_ema, appended to workdir/metric-<name>.jsonl and TensorBoard `Metrics/*`
    (official training_loop: after the snapshot, every rank computes, rank 0 reports)."""
    G = (state['G_ema'], state['buffers']['G_ema'], G_cfg)
    # Opened here only for a TFDS name in a data_dir; the equivariance metrics need no dataset at all.
    dataset = data_lib.open_dataset(run.data, data_dir=run.data_dir) if run.data_dir else run.data
    cache_dir = run.metrics_cache_dir or str(pathlib.Path(workdir).absolute().parent / '.metrics-cache')
    for name in names:
        result = metrics_lib.calc_metric(name, G=G, dataset=dataset, mirror=run.mirror,
                                         detector_dir=run.detector_dir or None, cache_dir=cache_dir,
                                         progress=False)
        if jax.process_index() == 0:
            metrics_lib.report_metric(result, run_dir=str(workdir), snapshot_pkl=str(snapshot))
            for k, v in result['results'].items():
                writer.add_scalar(f'Metrics/{k}', v, global_step=nimg // 1000)
            log(f'{name}: ' + ', '.join(f'{k} {v:.4g}' for k, v in result['results'].items())
                + f' ({result["total_time_str"]})')


@jax.jit
def _normalize(arrays):
    return {'img': arrays['img'].astype(jnp.float32) / 127.5 - 1, 'c': arrays['c'].astype(jnp.float32)}


def _device_memory_gib():
    try:
        stats = jax.local_devices()[0].memory_stats() or {}
    except Exception:  # not every backend reports memory
        stats = {}
    return stats.get('peak_bytes_in_use', 0) / 2 ** 30
