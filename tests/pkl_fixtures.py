"""Writes network pickles in the byte structure of NVIDIA's official ones, without torch or the official code.

The official snapshot (stylegan3 training/training_loop.py) is `pickle.dump(dict(G=..., D=..., G_ema=...,
augment_pipe=..., training_set_kwargs=...))`. Each network pickles as
`torch_utils.persistence._reconstruct_persistent_obj(meta)` (meta: type, version 6, module_src, class_name, state
= the torch module's __dict__), every Parameter as `torch._utils._rebuild_parameter(tensor, requires_grad, hooks)`,
every tensor as `torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks)` and every
storage as `torch.storage._load_from_bytes(<legacy torch.save stream of that storage>)`. Here stand-in objects
reduce to the same global names and argument structures; a pure-Python pickler writes those globals by name
(`_FixturePickler.save_global`), so no fake module is ever installed in sys.modules.

    write_network_pkl(path, {'G': net_from_golden('G_sg3t_64'), 'D': net_from_golden('D_64')})
"""

import collections
import io
import pickle
import struct

import numpy as np

import golden

#----------------------------------------------------------------------------
# Globals written by name.


def _global(module, name):
    """A class that pickles as the global `module.name` (it is never called here)."""
    return type(name, (), {'_pickle_as': (module, name)})


RECONSTRUCT = _global('torch_utils.persistence', '_reconstruct_persistent_obj')
REBUILD_TENSOR_V2 = _global('torch._utils', '_rebuild_tensor_v2')
REBUILD_PARAMETER = _global('torch._utils', '_rebuild_parameter')
LOAD_FROM_BYTES = _global('torch.storage', '_load_from_bytes')
STORAGE_TYPES = {np.dtype(k): _global('torch', v) for k, v in
                 {'f4': 'FloatStorage', 'f2': 'HalfStorage', 'f8': 'DoubleStorage', 'i8': 'LongStorage',
                  'i4': 'IntStorage', 'u1': 'ByteStorage', '?': 'BoolStorage'}.items()}
EASYDICT_GLOBAL = ('dnnlib.util', 'EasyDict')


class _FixturePickler(pickle._Pickler):
    """The pure-Python pickler, writing `_pickle_as` classes as GLOBAL/STACK_GLOBAL without importing them."""

    def save_global(self, obj, name=None):
        target = getattr(obj, '_pickle_as', None) if isinstance(obj, type) else None
        if target is None:
            return super().save_global(obj, name)
        module, qualname = target
        if self.proto >= 4:
            self.save(module)
            self.save(qualname)
            self.write(pickle.STACK_GLOBAL)
        else:
            self.write(pickle.GLOBAL + module.encode() + b'\n' + qualname.encode() + b'\n')
        self.memoize(obj)


def dumps(obj, protocol=4) -> bytes:
    f = io.BytesIO()
    _FixturePickler(f, protocol=protocol).dump(obj)
    return f.getvalue()


class EasyDict(dict):
    """Pickles as dnnlib.util.EasyDict (a dict subclass: NEWOBJ + SETITEMS, as the official one)."""
    _pickle_as = EASYDICT_GLOBAL


#----------------------------------------------------------------------------
# Tensors in torch's pickle structure.

_MAGIC = 0x1950a86a20f9469cfc6c
_key_counter = [94000000000000]


def legacy_storage_stream(flat: np.ndarray) -> bytes:
    """`torch.save(storage, _use_new_zipfile_serialization=False)` of a 1-D array (torch/serialization.py
    _legacy_save): magic, protocol 1001, sys info, the persistent-id pickle, the key list, int64 numel + raw bytes.
    torch.save's default pickle protocol is 2."""
    flat = np.ascontiguousarray(flat).reshape(-1)
    _key_counter[0] += 16
    key = str(_key_counter[0])
    marker = object()

    class P(_FixturePickler):
        def persistent_id(self, obj):
            if obj is marker:
                return ('storage', STORAGE_TYPES[flat.dtype], key, 'cpu', int(flat.size), None)
            return None

    f = io.BytesIO()
    for head in (_MAGIC, 1001, {'protocol_version': 1001, 'little_endian': True,
                                'type_sizes': {'short': 2, 'int': 4, 'long': 8}}):
        pickle.dump(head, f, protocol=2)
    P(f, protocol=2).dump(marker)
    pickle.dump([key], f, protocol=2)
    f.write(struct.pack('<q', flat.size))
    f.write(flat.astype(flat.dtype.newbyteorder('<')).tobytes())
    return f.getvalue()


class FakeStorage:
    def __init__(self, flat):
        self.flat = flat

    def __reduce__(self):
        return (LOAD_FROM_BYTES, (legacy_storage_stream(self.flat),))


class FakeTensor:
    """A tensor as torch pickles it; `offset`/`pad` place it inside a larger storage (as a view would be)."""

    def __init__(self, array, offset=0, pad=0, transpose=False):
        self.array, self.offset, self.pad, self.transpose = np.asarray(array), offset, pad, transpose

    def __reduce__(self):
        a = self.array
        if self.transpose and a.ndim == 2:   # stored column-major: a transposed view of a contiguous tensor
            flat = np.ascontiguousarray(a.T).reshape(-1)
            stride = (1, a.shape[0])
        else:
            flat = np.ascontiguousarray(a).reshape(-1)
            stride = tuple(int(np.prod(a.shape[i + 1:])) for i in range(a.ndim))
        storage = np.concatenate([np.zeros(self.offset, a.dtype), flat, np.zeros(self.pad, a.dtype)])
        return (REBUILD_TENSOR_V2, (FakeStorage(storage), self.offset, tuple(a.shape), stride, False,
                                    collections.OrderedDict()))


class FakeParameter:
    def __init__(self, array, **tensor_kwargs):
        self.tensor = FakeTensor(array, **tensor_kwargs)

    def __reduce__(self):
        return (REBUILD_PARAMETER, (self.tensor, False, collections.OrderedDict()))


#----------------------------------------------------------------------------
# Persistent modules.

DEFAULT_SRC = '# stand-in for the networks_*.py source that official pickles embed\n'


class FakeModule:
    """A @persistent_class torch module: reduces to _reconstruct_persistent_obj(meta) with the module __dict__."""

    def __init__(self, class_name, params=None, buffers=None, modules=None, init_kwargs=None, attrs=None,
                 non_persistent=(), module_src=DEFAULT_SRC, init_args=()):
        self.class_name, self.module_src = class_name, module_src
        self.params = collections.OrderedDict(params or {})
        self.buffers = collections.OrderedDict(buffers or {})
        self.modules = collections.OrderedDict(modules or {})
        self.init_kwargs, self.init_args = dict(init_kwargs or {}), tuple(init_args)
        self.attrs, self.non_persistent = dict(attrs or {}), set(non_persistent)

    def state(self):
        # torch.nn.Module.__dict__ of torch 1.9 (the fields every module has), then the class's own attributes.
        st = {'training': False, '_parameters': self.params, '_buffers': self.buffers,
              '_non_persistent_buffers_set': self.non_persistent, '_backward_hooks': collections.OrderedDict(),
              '_is_full_backward_hook': None, '_forward_hooks': collections.OrderedDict(),
              '_forward_pre_hooks': collections.OrderedDict(), '_state_dict_hooks': collections.OrderedDict(),
              '_load_state_dict_pre_hooks': collections.OrderedDict(), '_modules': self.modules}
        st.update(self.attrs)
        st['_init_args'] = self.init_args
        st['_init_kwargs'] = self.init_kwargs
        return st

    def __reduce__(self):
        meta = dict(type='class', version=6, module_src=self.module_src, class_name=self.class_name,
                    state=self.state())
        return (RECONSTRUCT, (meta,), None)


_BUFFER_NAMES = {'w_avg', 'magnitude_ema', 'up_filter', 'down_filter', 'transform', 'freqs', 'phases',
                 'noise_const', 'resample_filter'}


def _class_of(path, family):
    """Official class name of the submodule at dotted `path` (enough for the loader's architecture check)."""
    last = path.split('.')[-1] if path else ''
    if family == 'D':
        if not path:
            return 'Discriminator'
        if path == 'b4':
            return 'DiscriminatorEpilogue'
        if path.startswith('mapping'):
            return 'MappingNetwork' if path == 'mapping' else 'FullyConnectedLayer'
        if '.' not in path:
            return 'DiscriminatorBlock'
        return 'FullyConnectedLayer' if last in ('fc', 'out') else 'Conv2dLayer'
    if not path:
        return 'Generator'
    if path in ('mapping', 'synthesis'):
        return {'mapping': 'MappingNetwork', 'synthesis': 'SynthesisNetwork'}[path]
    if last in ('affine', 'embed') or last.startswith('fc'):
        return 'FullyConnectedLayer'
    if family == 'sg3':
        return 'SynthesisInput' if last == 'input' else 'SynthesisLayer'
    if last.startswith('b'):
        return 'SynthesisBlock'
    return {'torgb': 'ToRGBLayer', 'skip': 'Conv2dLayer'}.get(last, 'SynthesisLayer')


def module_tree(state_dict, family, init_kwargs, module_src=DEFAULT_SRC, transpose_2d=False, fp16_res=(),
                conv_clamp=256):
    """FakeModule tree of an official state_dict. family: 'sg3' | 'sg2' | 'D'. Adds what real modules carry
    besides the state_dict: None buffers (SG3 ToRGB has no up/down filter), a non-persistent buffer, numpy
    scalars and arrays as plain attributes, and D's parameter-free MinibatchStdLayer. For D, `fp16_res` and
    `conv_clamp` are what the blocks were built with (their init_kwargs)."""
    nodes = {}

    def node(path):
        if path not in nodes:
            nodes[path] = FakeModule(_class_of(path, family), module_src=module_src)
            if path:
                parent, _, name = path.rpartition('.')
                node(parent).modules[name] = nodes[path]
        return nodes[path]

    for key, value in state_dict.items():
        path, _, name = key.rpartition('.')
        m = node(path)
        if name in _BUFFER_NAMES:
            m.buffers[name] = FakeTensor(value)
        else:
            m.params[name] = FakeParameter(value, transpose=transpose_2d and np.ndim(value) == 2)
    for path, m in nodes.items():
        if m.class_name == 'SynthesisLayer' and family == 'sg3':
            for name in ('up_filter', 'down_filter'):
                m.buffers.setdefault(name, None)
            m.attrs['in_size'] = np.broadcast_to(np.asarray(16), [2])
        if m.class_name == 'FullyConnectedLayer' and 'weight' in m.params:
            m.attrs['weight_gain'] = np.float64(1) / np.sqrt(m.params['weight'].tensor.array.shape[1])
    top = node('')
    if family == 'D':   # what Discriminator passes its blocks and epilogue explicitly (nested init_kwargs)
        node('b4.mbstd').class_name = 'MinibatchStdLayer'
        for path, m in nodes.items():
            if m.class_name == 'DiscriminatorBlock':
                m.init_kwargs = {'resolution': int(path[1:]), 'use_fp16': int(path[1:]) in fp16_res,
                                 'conv_clamp': conv_clamp}
        nodes['b4'].init_kwargs = {'resolution': 4, 'conv_clamp': conv_clamp}
    syn = nodes.get('synthesis')
    if syn is not None:   # not in state_dict: persistent=False
        syn.buffers['scratch'] = FakeTensor(np.full([3], 7.0, np.float32))
        syn.non_persistent.add('scratch')
    top.init_kwargs = init_kwargs
    return top


def golden_net(name, ada=False, transpose_2d=False, module_src=DEFAULT_SRC, drop_kwargs=()):
    """(FakeModule, official state_dict, config) of golden case `name` ('G_sg3t_64', 'D_64', ...).
    ada=True writes a StyleGAN2 G's kwargs as stylegan2-ada-pytorch did (nested synthesis_kwargs);
    `drop_kwargs` leaves those constructor kwargs out of the top-level init_kwargs."""
    data = golden.load(name)
    cfg = golden.json_field(data, 'config_json')
    sd = golden.params_of(data)
    class_name = cfg['class_name']
    kwargs = {k: v for k, v in cfg.items() if k != 'class_name'}
    for k in ('mapping_kwargs', 'block_kwargs', 'epilogue_kwargs'):
        if k in kwargs:
            kwargs[k] = EasyDict(kwargs[k])
    family = 'D' if class_name.endswith('Discriminator') else ('sg3' if 'stylegan3' in class_name else 'sg2')
    if ada:
        top = ('z_dim', 'c_dim', 'w_dim', 'img_resolution', 'img_channels', 'mapping_kwargs')
        kwargs = {**{k: kwargs[k] for k in top if k in kwargs},
                  'synthesis_kwargs': EasyDict({k: v for k, v in kwargs.items() if k not in top})}
    kwargs = {k: v for k, v in kwargs.items() if k not in drop_kwargs}
    assert cfg.get('num_fp16_res', 0) == 0   # the golden networks have no fp16 blocks
    tree = module_tree(sd, family, kwargs, module_src=module_src, transpose_2d=transpose_2d,
                       conv_clamp=cfg.get('conv_clamp'))
    return tree, sd, cfg


TRAINING_SET_KWARGS = {'class_name': 'training.dataset.ImageFolderDataset', 'path': '/data/ffhq-64x64.zip',
                       'use_labels': False, 'max_size': 70000, 'xflip': True, 'resolution': 64,
                       'random_seed': 0}


def augment_pipe():
    return FakeModule('AugmentPipe', buffers={'p': FakeTensor(np.float32(0.25)),
                                              'Hz_geom': FakeTensor(np.linspace(0, 1, 12, dtype=np.float32))},
                      init_kwargs={'xflip': 1, 'rotate90': 1, 'xint': 1})


def write_network_pkl(path, nets, protocol=4, training_set_kwargs=TRAINING_SET_KWARGS, extra=None):
    """Writes {**nets, 'augment_pipe': ..., 'training_set_kwargs': ...} like the official snapshot."""
    snapshot = dict(nets)
    snapshot.setdefault('augment_pipe', augment_pipe())
    if training_set_kwargs is not None:
        snapshot['training_set_kwargs'] = dict(training_set_kwargs)
    snapshot.update(extra or {})
    with open(path, 'wb') as f:
        f.write(dumps(snapshot, protocol=protocol))
    return path
