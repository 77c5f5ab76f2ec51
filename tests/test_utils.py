"""sg3jax.utils: freeze / thaw and the cache_by_value decorator that the network specs and the sampling library's
compiled functions are cached with."""

import collections

import numpy as np
import pytest

from sg3jax import utils
from sg3jax.networks import discriminator, generator, presets


def test_cache_by_value_computes_once_per_value_and_keeps_no_reference_to_the_arguments():
    calls = []

    @utils.cache_by_value(maxsize=8)
    def f(cfg, scale=1):
        calls.append(cfg)
        return (cfg['a'] * scale, tuple(cfg['b']), cfg)

    cfg = {'a': 2, 'b': [1, 2], 'c': {'d': None}}
    first = f(cfg)
    assert f({'c': {'d': None}, 'b': [1, 2], 'a': 2}) is first         # an equal dict (any key order): cached
    assert len(calls) == 1 and f.cache_info().hits == 1
    assert calls[0] == cfg and calls[0] is not cfg and calls[0]['c'] is not cfg['c']   # it got a copy
    f({'a': 3, 'b': [1, 2], 'c': {'d': None}})                            # unequal: computed
    f({'a': 2, 'b': (1, 2), 'c': {'d': None}})                            # a tuple is not the list
    f({'a': 2.0, 'b': [1, 2], 'c': {'d': None}})                          # 2.0 is not 2
    f(cfg, scale=2)
    assert len(calls) == 5
    assert type(calls[2]['b']) is tuple and type(calls[3]['a']) is float  # each as given, not as JSON gives it

    cfg['a'] = 7                              # the caller mutates its dicts: the cached result does not change
    cfg['c']['d'] = 'changed'
    cfg['b'].append(3)
    assert first == (2, (1, 2), {'a': 2, 'b': [1, 2], 'c': {'d': None}})
    assert f({'a': 2, 'b': [1, 2], 'c': {'d': None}}) is first
    assert len(calls) == 5


def test_cache_by_value_keeps_no_exceptions():
    calls = []

    @utils.cache_by_value(maxsize=8)
    def check(cfg):
        calls.append(1)
        raise ValueError(f'bad {sorted(cfg)}')

    for _ in range(2):
        with pytest.raises(ValueError, match=r"bad \['x'\]"):
            check({'x': 1})
    assert len(calls) == 2


def _kinds(x):
    """The type of every container and scalar of x, nested as x."""
    if isinstance(x, dict):
        return (dict, {k: _kinds(v) for k, v in x.items()})
    if isinstance(x, (list, tuple)):
        return (type(x), [_kinds(v) for v in x])
    return type(x)


def test_freeze_thaw_round_trip_keeps_lists_tuples_dicts_and_scalar_types():
    data = {'list': [1, [2, (3, 4.0)], ()], 'tuple': (True, None, 'x', []), 'dict': {'n': {}, 'f': -0.5},
            'int keys': {7: 'k', 2: 'j'}}
    frozen = utils.freeze(data)
    hash(frozen)
    back = utils.thaw(frozen)
    assert back == data and back is not data and _kinds(back) == _kinds(data)
    assert back['list'][1] is not data['list'][1]
    assert utils.freeze(back) == frozen and hash(utils.freeze(back)) == hash(frozen)
    assert list(utils.thaw(utils.freeze({'b': 1, 'a': 2}))) == ['a', 'b']     # keys sorted, as JSON's were
    for a, b in [([1], (1,)), (1, 1.0), (1, True), (0, None), ({'a': 1}, [('a', 1)]), ({1: 0}, {'1': 0})]:
        assert utils.freeze(a) != utils.freeze(b), (a, b)
    with pytest.raises(TypeError):
        utils.freeze({1: 'a', 'b': 2})        # int and str keys cannot be sorted (as json.dumps(sort_keys=True))


def test_freeze_accepts_plain_data_only_unless_keep_other():
    Point = collections.namedtuple('Point', 'x y')
    assert utils.thaw(utils.freeze(collections.OrderedDict(a=Point(1, np.float64(0.5))))) == {'a': (1, 0.5)}
    assert type(utils.thaw(utils.freeze(np.float64(0.5)))) is float
    for bad in (np.int64(1), {1, 2}, object(), np.zeros(2)):
        with pytest.raises(TypeError):
            utils.freeze({'v': [bad]})
    assert utils.thaw(utils.freeze({'fn': len}, keep_other=True)) == {'fn': len}
    with pytest.raises(TypeError, match='unhashable'):
        utils.freeze({'v': np.zeros(2)}, keep_other=True)


def test_network_specs_are_frozen_and_cached_by_value():
    g, d = presets.network_configs('stylegan2', 32, c_dim=3, cbase=1024, cmax=32, z_dim=16, w_dim=16)
    s = generator.spec(g)
    hash(s)
    assert generator.spec({**g, 'mapping_kwargs': dict(g['mapping_kwargs'])}) is s
    assert s.mapping_kwargs['num_layers'] == g['mapping_kwargs']['num_layers']
    # A tuple where JSON gave a list: the spec is the same (resample_filter is stored as a tuple of floats).
    as_tuple, as_list = ({**g, 'resample_filter': f} for f in ((1, 3, 3, 1), [1, 3, 3, 1]))
    assert generator.spec(as_tuple) == generator.spec(as_list)
    assert generator.spec(as_tuple) is not generator.spec(as_list)      # two cache entries, equal specs
    ds = discriminator.spec({**d, 'mapping_kwargs': {'num_layers': 3}})
    hash(ds)
    assert discriminator._mapping_kwargs(ds)['num_layers'] == 3
