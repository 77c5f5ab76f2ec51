"""Metric maths with known answers: float64 feature statistics, FID (identical sets, closed-form Gaussians, the
eigen trace vs scipy's sqrtm), KID's unbiased estimator, precision/recall in tiles vs the full matrix, IS,
PPL's percentile filter, the registry and the JSONL report."""

import json
import os

import numpy as np
import pytest
import scipy.linalg

from sg3jax.metrics import metric_main
from sg3jax.metrics.frechet_inception_distance import frechet_distance, trace_sqrt_product
from sg3jax.metrics.inception_score import inception_score
from sg3jax.metrics.kernel_inception_distance import kernel_distance
from sg3jax.metrics.metric_utils import FeatureStats
from sg3jax.metrics.perceptual_path_length import filtered_mean
from sg3jax.metrics.precision_recall import precision_recall


def _psd(rng, n):
    a = rng.standard_normal((n, n))
    return a @ a.T / n + 0.01 * np.eye(n)


def test_feature_stats_float64_mean_cov_batches_truncation_and_roundtrip(tmp_path):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((103, 7)) * 3 + 100).astype(np.float32)
    s = FeatureStats(capture_all=True, capture_mean_cov=True, max_items=100)
    for i in range(0, 103, 16):
        s.append(x[i:i + 16])
    assert s.num_items == 100 and s.is_full()
    mean, cov = s.get_mean_cov()
    ref = x[:100].astype(np.float64)
    np.testing.assert_allclose(mean, ref.mean(0), rtol=1e-12)
    np.testing.assert_allclose(cov, np.cov(ref, rowvar=False, bias=True), atol=1e-9)
    np.testing.assert_array_equal(s.get_all(), x[:100])
    s.save(tmp_path / 's.npz')
    t = FeatureStats.load(tmp_path / 's.npz')
    np.testing.assert_array_equal(t.get_mean_cov()[1], cov)
    np.testing.assert_array_equal(t.get_all(), x[:100])
    with pytest.raises(ValueError, match='features'):
        s.append(np.zeros((2, 3, 4)))


def test_fid_identical_is_zero_and_gaussians_match_closed_form():
    rng = np.random.default_rng(1)
    mu, sigma = rng.standard_normal(12), _psd(rng, 12)
    assert abs(frechet_distance(mu, sigma, mu, sigma)) < 1e-6
    # Diagonal covariances: FID = |m1 - m2|^2 + sum (s1 + s2 - 2 sqrt(s1 s2)).
    m1, m2 = rng.standard_normal(6), rng.standard_normal(6)
    s1, s2 = rng.uniform(0.5, 2, 6), rng.uniform(0.5, 2, 6)
    want = np.sum((m1 - m2) ** 2) + np.sum(s1 + s2 - 2 * np.sqrt(s1 * s2))
    assert frechet_distance(m1, np.diag(s1), m2, np.diag(s2)) == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize('n', [5, 64, 128])
def test_eigen_trace_sqrt_matches_scipy_sqrtm(n):
    rng = np.random.default_rng(n)
    a, b = _psd(rng, n), _psd(rng, n)
    ref = np.trace(scipy.linalg.sqrtm(a @ b)).real
    assert trace_sqrt_product(a, b) == pytest.approx(ref, rel=1e-6)


def test_kid_is_the_unbiased_mmd_and_separates_distributions():
    rng = np.random.default_rng(2)
    x, y = rng.standard_normal((50, 8)), rng.standard_normal((50, 8)) + 0.3
    # One subset holding every item: exactly the unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3.
    k = lambda a, b: (a @ b.T / 8 + 1) ** 3
    m = 50
    kxx, kyy, kxy = k(y, y), k(x, x), k(y, x)   # kernel_distance(real=x, gen=y): its x are the generated
    want = ((kxx.sum() - np.trace(kxx)) + (kyy.sum() - np.trace(kyy))) / (m * (m - 1)) - 2 * kxy.sum() / m ** 2
    assert kernel_distance(x, y, 1, 1000, np.random.default_rng(0)) == pytest.approx(want, rel=1e-10)
    real = rng.standard_normal((400, 16))
    same = [kernel_distance(real, rng.standard_normal((400, 16)), 20, 100, rng) for _ in range(5)]
    shifted = kernel_distance(real, rng.standard_normal((400, 16)) + 0.5, 20, 100, rng)
    assert abs(np.mean(same)) < 0.1 * shifted and shifted > 0


def _pr_reference(real, gen, k):
    real = real.astype(np.float16).astype(np.float64)
    gen = gen.astype(np.float16).astype(np.float64)
    out = []
    for man, probes in ((real, gen), (gen, real)):
        d = np.sqrt(((man[:, None] - man[None]) ** 2).sum(-1))
        radii = np.sort(d, axis=1)[:, k]
        dp = np.sqrt(((probes[:, None] - man[None]) ** 2).sum(-1))
        out.append(float((dp <= radii[None]).any(1).mean()))
    return tuple(out)


def test_precision_recall_tiles_match_full_matrix_and_known_cases():
    rng = np.random.default_rng(3)
    real = rng.standard_normal((37, 5)).astype(np.float32)
    gen = (rng.standard_normal((29, 5)) * 1.5 + 0.5).astype(np.float32)
    got = precision_recall(real, gen, nhood_size=3, row_batch_size=8, col_batch_size=5)
    assert got == pytest.approx(_pr_reference(real, gen, 3), abs=1e-12)
    assert precision_recall(real, real, 3, 16, 16) == (1.0, 1.0)
    far = real + 1000
    assert precision_recall(real, far, 3, 16, 16) == (0.0, 0.0)
    half = np.concatenate([real[:20], far[:20]])
    assert precision_recall(real, half, 3, 16, 16)[0] == 0.5


def test_inception_score_known_cases():
    assert inception_score(np.full((100, 10), 0.1), 10) == pytest.approx((1.0, 0.0))
    onehot = np.eye(10)[np.arange(100) % 10] * (1 - 1e-12) + 1e-13
    mean, std = inception_score(onehot, 10)
    assert mean == pytest.approx(10, rel=1e-6) and std < 1e-6


def test_ppl_percentile_filter_is_the_official_one():
    d = np.random.default_rng(4).exponential(size=1001)
    lo, hi = np.sort(d)[10], np.sort(d)[990]                       # 'lower' 1st / 'higher' 99th percentile
    assert filtered_mean(d) == pytest.approx(d[(d >= lo) & (d <= hi)].mean())


def test_registry_names_and_unknown_metric():
    for name in ['fid50k_full', 'kid50k_full', 'pr50k3_full', 'ppl2_wend', 'eqt50k_int', 'eqt50k_frac', 'eqr50k',
                 'is50k', 'fid50k', 'kid50k', 'pr50k3', 'fid10k', 'ppl_zfull', 'ppl_wfull', 'ppl_zend', 'ppl_wend']:
        assert metric_main.is_valid_metric(name)
    with pytest.raises(ValueError, match='unknown metric'):
        metric_main.calc_metric('fid1k')


def test_report_metric_appends_official_json_lines(tmp_path, capsys):
    result = dict(results=dict(fid50k_full=3.5), metric='fid50k_full', total_time=65.0, total_time_str='1m 05s',
                  num_gpus=8)
    for _ in range(2):
        metric_main.report_metric(result, run_dir=str(tmp_path), snapshot_pkl=str(tmp_path / 'network-snapshot-1'))
    lines = (tmp_path / 'metric-fid50k_full.jsonl').read_text().splitlines()
    assert len(lines) == 2
    rec = json.loads(lines[0])
    assert rec['results'] == {'fid50k_full': 3.5} and rec['snapshot_pkl'] == 'network-snapshot-1'
    assert set(rec) == {'results', 'metric', 'total_time', 'total_time_str', 'num_gpus', 'snapshot_pkl', 'timestamp'}
    assert capsys.readouterr().out.count('fid50k_full') == 4
    assert metric_main.format_time(3725) == '1h 02m 05s'
    metric_main.report_metric(result, run_dir=str(tmp_path / 'missing'))      # no run dir: print only
    assert not os.path.exists(tmp_path / 'missing')
