"""The metric registry and the API the trainer and `calc_metrics` call (official `metrics/metric_main.py`).

    result = calc_metric('fid50k_full', G=(params, buffers, G_cfg), dataset='/data/ffhq-256', detector_dir=DIR)
    report_metric(result, run_dir='/runs/x', snapshot_pkl='/runs/x/network-snapshot-000100')

Names, sample counts and options are the official ones. `num_gen=` / `max_real=` override the counts for quick
checks (the result then no longer is the named metric's; the JSON line records the override).
"""

import json
import os
import time

from sg3jax.metrics import (equivariance, frechet_inception_distance, inception_score, kernel_inception_distance,
                            metric_utils, perceptual_path_length, precision_recall)
from sg3jax.utils import format_time

#----------------------------------------------------------------------------

def _n(opts, default):
    return default if opts.num_gen is None else opts.num_gen


def _real(opts, default):
    return default if opts.max_real is None else opts.max_real


def _full(opts):  # the *_full metrics: the whole dataset, never mirrored (official dataset_kwargs update)
    opts.mirror = False
    opts.max_size = None


def fid50k_full(opts):
    _full(opts)
    return dict(fid50k_full=frechet_inception_distance.compute_fid(opts, max_real=_real(opts, None),
                                                                   num_gen=_n(opts, 50000)))


def kid50k_full(opts):
    _full(opts)
    return dict(kid50k_full=kernel_inception_distance.compute_kid(
        opts, max_real=_real(opts, 1000000), num_gen=_n(opts, 50000), num_subsets=100, max_subset_size=1000))


def pr50k3_full(opts):
    _full(opts)
    p, r = precision_recall.compute_pr(opts, max_real=_real(opts, 200000), num_gen=_n(opts, 50000), nhood_size=3,
                                       row_batch_size=10000, col_batch_size=10000)
    return dict(pr50k3_full_precision=p, pr50k3_full_recall=r)


def ppl2_wend(opts):
    return dict(ppl2_wend=perceptual_path_length.compute_ppl(
        opts, num_samples=_n(opts, 50000), epsilon=1e-4, space='w', sampling='end', crop=False, batch_size=2))


def _eq(opts, **flags):
    return equivariance.compute_equivariance_metrics(opts, num_samples=_n(opts, 50000), batch_size=4, **flags)


def eqt50k_int(opts):
    return dict(eqt50k_int=_eq(opts, compute_eqt_int=True))


def eqt50k_frac(opts):
    return dict(eqt50k_frac=_eq(opts, compute_eqt_frac=True))


def eqr50k(opts):
    return dict(eqr50k=_eq(opts, compute_eqr=True))

# Legacy metrics (official), and StyleGAN2-ADA's PPL variants (face crop on) and fid10k.

def fid50k(opts):
    opts.max_size = None
    return dict(fid50k=frechet_inception_distance.compute_fid(opts, max_real=_real(opts, 50000),
                                                              num_gen=_n(opts, 50000)))


def fid10k(opts):
    opts.max_size = None
    return dict(fid10k=frechet_inception_distance.compute_fid(opts, max_real=_real(opts, 10000),
                                                              num_gen=_n(opts, 10000)))


def kid50k(opts):
    opts.max_size = None
    return dict(kid50k=kernel_inception_distance.compute_kid(
        opts, max_real=_real(opts, 50000), num_gen=_n(opts, 50000), num_subsets=100, max_subset_size=1000))


def pr50k3(opts):
    opts.max_size = None
    p, r = precision_recall.compute_pr(opts, max_real=_real(opts, 50000), num_gen=_n(opts, 50000), nhood_size=3,
                                       row_batch_size=10000, col_batch_size=10000)
    return dict(pr50k3_precision=p, pr50k3_recall=r)


def is50k(opts):
    _full(opts)
    mean, std = inception_score.compute_is(opts, num_gen=_n(opts, 50000), num_splits=10)
    return dict(is50k_mean=mean, is50k_std=std)


def _ppl(name, space, sampling):
    def fn(opts):
        return {name: perceptual_path_length.compute_ppl(opts, num_samples=_n(opts, 50000), epsilon=1e-4,
                                                         space=space, sampling=sampling, crop=True, batch_size=2)}
    fn.__name__ = name
    return fn


METRICS = {fn.__name__: fn for fn in [
    fid50k_full, kid50k_full, pr50k3_full, ppl2_wend, eqt50k_int, eqt50k_frac, eqr50k,
    fid50k, fid10k, kid50k, pr50k3, is50k,
    _ppl('ppl_zfull', 'z', 'full'), _ppl('ppl_wfull', 'w', 'full'), _ppl('ppl_zend', 'z', 'end'),
    _ppl('ppl_wend', 'w', 'end'),
]}


def is_valid_metric(metric):
    return metric in METRICS


def list_valid_metrics():
    return list(METRICS)


#----------------------------------------------------------------------------

def calc_metric(metric, **kwargs):
    """Compute one registered metric; kwargs are MetricOptions fields (G=(params, buffers, G_cfg), dataset,
    mirror, num_devices, cache_dir, detector_dir, num_gen, max_real, ...). Returns the official result dict:
    {results: {name: value}, metric, total_time, total_time_str, num_gpus (= devices used)}."""
    if not is_valid_metric(metric):
        raise ValueError(f'unknown metric {metric!r}; valid metrics: {", ".join(list_valid_metrics())}')
    opts = metric_utils.MetricOptions(**kwargs)
    start = time.time()
    results = {k: float(v) for k, v in METRICS[metric](opts).items()}
    total = time.time() - start
    out = dict(results=results, metric=metric, total_time=total, total_time_str=format_time(total),
               num_gpus=opts.num_devices)
    if opts.num_gen is not None or opts.max_real is not None:
        out['overrides'] = dict(num_gen=opts.num_gen, max_real=opts.max_real)
    return out


def report_metric(result_dict, run_dir=None, snapshot_pkl=None):
    """Print the official JSON line and append it to run_dir/metric-<name>.jsonl with one write() on an
    O_APPEND descriptor (concurrent writers never interleave partial lines)."""
    metric = result_dict['metric']
    if not is_valid_metric(metric):
        raise ValueError(f'unknown metric {metric!r} in result_dict')
    if run_dir is not None and snapshot_pkl is not None:
        snapshot_pkl = os.path.relpath(snapshot_pkl, run_dir)
    line = json.dumps(dict(result_dict, snapshot_pkl=snapshot_pkl, timestamp=time.time()))
    print(line)
    if run_dir is not None and os.path.isdir(run_dir):
        fd = os.open(os.path.join(run_dir, f'metric-{metric}.jsonl'), os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        try:
            os.write(fd, (line + '\n').encode())
        finally:
            os.close(fd)
    return line
