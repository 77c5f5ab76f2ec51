"""Official state_dict <-> pytree conversion: exact round trips and strict, named errors."""

import numpy as np
import pytest

import golden
from sg3jax.networks import state_dicts


def _cases():
    return [('G', n) for n in golden.case_files('G')] + [('D', n) for n in golden.case_files('D')]


@pytest.mark.parametrize('kind,name', _cases())
def test_round_trip(kind, name):
    data = golden.load(f'{kind}_{name}')
    cfg = golden.json_field(data, 'config_json')
    sd = golden.params_of(data)
    params, buffers = state_dicts.from_state_dict(sd, cfg, kind=kind)
    back = state_dicts.to_state_dict(params, buffers, cfg, kind=kind)
    assert sorted(back) == sorted(sd)
    derived = state_dicts.derived_buffers(cfg, kind)
    for k, v in sd.items():
        if k in derived:   # recomputed filters: equal to the official design to float32 rounding
            np.testing.assert_allclose(back[k], v, rtol=1e-6, atol=1e-7, err_msg=k)
        else:
            np.testing.assert_array_equal(back[k], v, err_msg=k)


def _sg3t():
    data = golden.load('G_sg3t_64')
    return golden.json_field(data, 'config_json'), dict(golden.params_of(data))


def test_missing_unexpected_and_shape_errors_name_every_key():
    cfg, sd = _sg3t()
    sd.pop('mapping.fc1.bias')
    sd.pop('synthesis.L3_36_128.magnitude_ema')
    sd['synthesis.L99.weight'] = np.zeros([1])
    sd['mapping.fc0.weight'] = np.zeros([3, 3], np.float32)
    with pytest.raises(state_dicts.StateDictMismatch) as e:
        state_dicts.from_state_dict(sd, cfg, kind='G', what='G_sg3t_64.npz')
    msg = str(e.value)
    assert 'G_sg3t_64.npz' in msg
    assert e.value.missing == ['mapping.fc1.bias', 'synthesis.L3_36_128.magnitude_ema']
    assert e.value.unexpected == ['synthesis.L99.weight']
    assert len(e.value.mismatched) == 1 and 'mapping.fc0.weight: shape [3, 3], expected [64, 64]' in msg


def test_filter_from_another_config_is_rejected():
    cfg, sd = _sg3t()
    sd['synthesis.L5_52_128.down_filter'] = sd['synthesis.L5_52_128.down_filter'] * 1.01
    with pytest.raises(state_dicts.StateDictMismatch, match='L5_52_128.down_filter: filter values differ'):
        state_dicts.from_state_dict(sd, cfg, kind='G')


def test_weights_for_another_architecture_are_rejected():
    cfg, sd = _sg3t()
    r_cfg = dict(cfg, conv_kernel=1, use_radial_filters=True, channel_base=8192, channel_max=256)
    with pytest.raises(state_dicts.StateDictMismatch) as e:
        state_dicts.from_state_dict(sd, r_cfg, kind='G')
    assert e.value.missing and e.value.unexpected   # layer names encode channel counts, so they all differ
