"""Inception Score (Salimans et al. 2016), as the official `metrics/inception_score.py`: softmax of the 1008-way
output without its bias, exp(mean KL(p(y|x) || p(y))) per split, mean and std over `num_splits` splits."""

import numpy as np

from sg3jax.metrics import metric_utils

DETECTOR_KWARGS = dict(return_features=False, no_output_bias=True)


def inception_score(probs, num_splits):
    n = probs.shape[0]
    probs = probs.astype(np.float64)
    scores = []
    for i in range(num_splits):
        part = probs[i * n // num_splits:(i + 1) * n // num_splits]
        kl = part * (np.log(part) - np.log(np.mean(part, axis=0, keepdims=True)))
        scores.append(np.exp(np.mean(np.sum(kl, axis=1))))
    return float(np.mean(scores)), float(np.std(scores))


def compute_is(opts, num_gen, num_splits):
    probs = metric_utils.compute_feature_stats_for_generator(
        opts, 'inception', DETECTOR_KWARGS, capture_all=True, max_items=num_gen).get_all()
    return inception_score(probs, num_splits)
