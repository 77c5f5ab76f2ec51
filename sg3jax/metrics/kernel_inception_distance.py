"""Kernel Inception Distance (Binkowski et al. 2018), as the official `metrics/kernel_inception_distance.py`:
unbiased MMD^2 with the cubic polynomial kernel k(x, y) = (x.y / n + 1)^3, averaged over `num_subsets` random
subsets of m = min(#real, #gen, max_subset_size) items each, drawn without replacement."""

import numpy as np

from sg3jax.metrics import metric_utils

DETECTOR_KWARGS = dict(return_features=True)


def kernel_distance(real_features, gen_features, num_subsets, max_subset_size, rng):
    """The official estimator (float64 accumulation; can be negative, it is unbiased)."""
    n = real_features.shape[1]
    m = min(real_features.shape[0], gen_features.shape[0], max_subset_size)
    t = 0.0
    for _ in range(num_subsets):
        x = gen_features[rng.choice(gen_features.shape[0], m, replace=False)].astype(np.float64)
        y = real_features[rng.choice(real_features.shape[0], m, replace=False)].astype(np.float64)
        a = (x @ x.T / n + 1) ** 3 + (y @ y.T / n + 1) ** 3
        b = (x @ y.T / n + 1) ** 3
        t += (a.sum() - np.diag(a).sum()) / (m - 1) - b.sum() * 2 / m
    return float(t / num_subsets / m)


def compute_kid(opts, max_real, num_gen, num_subsets, max_subset_size):
    real = metric_utils.compute_feature_stats_for_dataset(
        opts, 'inception', DETECTOR_KWARGS, max_items=max_real, capture_all=True).get_all()
    gen = metric_utils.compute_feature_stats_for_generator(
        opts, 'inception', DETECTOR_KWARGS, capture_all=True, max_items=num_gen).get_all()
    return kernel_distance(real, gen, num_subsets, max_subset_size, np.random.default_rng(opts.seed))
