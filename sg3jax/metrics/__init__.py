"""Quality metrics (official NVlabs/stylegan3 `metrics/`): FID, KID, precision/recall, PPL, EQ-T/EQ-T_frac/EQ-R,
IS, with the official names, sample counts and JSONL reports.

    from sg3jax.metrics import calc_metric, report_metric
    result = calc_metric('fid50k_full', G=(params, buffers, G_cfg), dataset=path, detector_dir=dir)
    report_metric(result, run_dir=run_dir, snapshot_pkl=snapshot_path)

Files: metric_main.py (registry, calc/report), metric_utils.py (options, feature loops, FeatureStats, cache),
inception.py / vgg16.py (feature networks in JAX), detectors.py (loading converted weights), resample.py,
one file per metric family.
"""

from sg3jax.metrics.metric_main import calc_metric, is_valid_metric, list_valid_metrics, report_metric

__all__ = ['calc_metric', 'is_valid_metric', 'list_valid_metrics', 'report_metric']
