"""Frechet Inception Distance (Heusel et al. 2017), as the official `metrics/frechet_inception_distance.py`:
Inception pool_3 features, float64 mean/covariance, scipy.linalg.sqrtm of sigma_gen @ sigma_real."""

import numpy as np
import scipy.linalg

from sg3jax.metrics import metric_utils

DETECTOR_KWARGS = dict(return_features=True)


def frechet_distance(mu1, sigma1, mu2, sigma2):
    """|mu1 - mu2|^2 + tr(S1 + S2 - 2 sqrtm(S1 @ S2)), the real part, as officially."""
    m = np.square(mu1 - mu2).sum()
    # Official: sqrtm(..., disp=False); `disp` is deprecated in SciPy >= 1.16 and the plain call returns the
    # same matrix (and only warns on a singular input).
    s = scipy.linalg.sqrtm(np.dot(sigma1, sigma2))
    return float(np.real(m + np.trace(sigma1 + sigma2 - s * 2)))


def trace_sqrt_product(sigma1, sigma2):
    """tr(sqrtm(S1 @ S2)) for symmetric PSD S1, S2 by symmetric eigendecompositions: S1 @ S2 is similar to
    sqrt(S1) S2 sqrt(S1), which is symmetric PSD, so the trace is the sum of the square roots of its
    eigenvalues. Faster and better conditioned than a general sqrtm; matches scipy's on PSD inputs."""
    w, v = np.linalg.eigh(sigma1)
    r = (v * np.sqrt(np.maximum(w, 0))) @ v.T
    e = np.linalg.eigvalsh(r @ sigma2 @ r)
    return float(np.sqrt(np.maximum(e, 0)).sum())


def compute_fid(opts, max_real, num_gen):
    mu_real, sigma_real = metric_utils.compute_feature_stats_for_dataset(
        opts, 'inception', DETECTOR_KWARGS, max_items=max_real, capture_mean_cov=True).get_mean_cov()
    mu_gen, sigma_gen = metric_utils.compute_feature_stats_for_generator(
        opts, 'inception', DETECTOR_KWARGS, capture_mean_cov=True, max_items=num_gen).get_mean_cov()
    return frechet_distance(mu_gen, sigma_gen, mu_real, sigma_real)
