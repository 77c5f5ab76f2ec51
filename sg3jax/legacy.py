"""NVIDIA's official network pickles (StyleGAN3 and StyleGAN2-ADA PyTorch) -> sg3jax (cfg, params, buffers),
read WITHOUT running any code from the file and without torch.

What an official `network-snapshot-*.pkl` is (NVlabs/stylegan3 training/training_loop.py, and likewise
stylegan2-ada-pytorch): a plain `pickle.dump` of `dict(G=..., D=..., G_ema=..., augment_pipe=...,
training_set_kwargs=dict(...))`. Each network is a `@persistence.persistent_class` torch module whose pickle is
a call `torch_utils.persistence._reconstruct_persistent_obj(meta)` with
    meta = dict(type='class', version=6, module_src=<the source of the whole networks_*.py>,
                class_name='Generator', state=<the module's __dict__>)
(torch_utils/persistence.py). The official loader `exec()`s `module_src`; a pickle can also name any Python
callable as a global and have it called. Both are arbitrary code execution, so here:
  * a restricted `pickle.Unpickler` resolves only an allow-list of globals (`_ALLOWED`), each mapped to our own
    numpy implementation or to a harmless builtin; any other global raises `ForbiddenGlobal` naming it;
  * the persistence hook becomes `_Record(class_name, init_args, init_kwargs, state)`; `module_src` is dropped
    unread. The architecture is recognised from the record tree (submodule class names) and the constructor
    kwargs instead.
The module state holds `_parameters`, `_buffers` (with `_non_persistent_buffers_set`) and `_modules` (nested
records), from which the official `state_dict()` is rebuilt and handed to `sg3jax.networks.state_dicts.from_state_dict`.

Tensors inside are pickled by torch's own reduce (torch/_tensor.py `_reduce_ex_internal`):
`torch._utils._rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks[, metadata])`, wrapped in
`torch._utils._rebuild_parameter(tensor, requires_grad, hooks)` for parameters; the storage reduces to
`torch.storage._load_from_bytes(b)` where `b` is `torch.save(storage, _use_new_zipfile_serialization=False)`:
the legacy torch.save stream (pickles of the magic number, protocol 1001 and sys info; a pickle whose persistent
ids are `('storage', torch.FloatStorage, key, location, numel, view_metadata)`; a pickle of the sorted storage
keys; then per key an int64 element count and the raw little-endian bytes). That holds for torch 1.7-1.9 (the
published files) and still for torch 2.x. The zip torch.save format (`<dir>/data.pkl`, `<dir>/data/<key>`) is
read too, inside `_load_from_bytes` or as the whole file.

    nets = load_network_pkl('stylegan3-t-ffhqu-256x256.pkl')
    G = nets['G_ema']            # {'cfg': official kwargs + class_name, 'params': ..., 'buffers': ...}
    img = generator.apply(G['params'], G['buffers'], z, c, G['cfg'])

Out of scope, with a clear error: the TensorFlow StyleGAN/StyleGAN2 pickles (`dnnlib.tflib.network.Network`,
which the official legacy.py converts with TF-specific code), tensor subclasses, quantized/sparse tensors.
"""

import collections
import io
import math
import os
import pickle
import struct
import zipfile
from typing import Any, Dict, Optional, Tuple

import numpy as np

from sg3jax.networks import state_dicts
from sg3jax.networks import discriminator, generator

__all__ = ['load_network_pkl', 'read_pickle', 'network_state_dict', 'network_config', 'ForbiddenGlobal',
           'NetworkPickleError']

#----------------------------------------------------------------------------
# Errors.


class NetworkPickleError(ValueError):
    """The file is not a network pickle we can read (corrupt, unexpected layout, unsupported feature)."""


class ForbiddenGlobal(pickle.UnpicklingError):
    """The pickle names a Python global outside the allow-list; nothing it names has been called."""


#----------------------------------------------------------------------------
# What the pickle may name, mapped to our own implementations.

class _Record:
    """A persistent network module as data: what `_reconstruct_persistent_obj(meta)` would have built.
    (__slots__: a pickle BUILD opcode cannot attach attributes to it.)"""
    __slots__ = ('class_name', 'version', 'init_args', 'init_kwargs', 'state')

    def __init__(self, class_name: str, version, init_args, init_kwargs, state: dict):
        self.class_name, self.version = class_name, version
        self.init_args, self.init_kwargs, self.state = init_args, init_kwargs, state

    def children(self) -> Dict[str, '_Record']:
        return {k: v for k, v in (self.state.get('_modules') or {}).items() if isinstance(v, _Record)}

    def __repr__(self):
        return f'_Record({self.class_name!r}, children={list(self.children())})'


def _reconstruct_persistent_obj(meta):
    """Stands in for torch_utils.persistence._reconstruct_persistent_obj; never looks at meta['module_src']."""
    if not isinstance(meta, dict) or meta.get('type') != 'class' or not isinstance(meta.get('class_name'), str):
        raise NetworkPickleError(f'persistent object meta is not a class record (keys {sorted(meta)!r})'
                                 if isinstance(meta, dict) else 'persistent object meta is not a dict')
    if meta.get('version') != 6:  # the official loader asserts the same (torch_utils/persistence.py _version)
        raise NetworkPickleError(f'persistent class {meta["class_name"]!r} has persistence version '
                                 f'{meta.get("version")!r}; only version 6 (StyleGAN2-ADA / StyleGAN3) is known')
    state = meta.get('state')
    if not isinstance(state, dict):
        raise NetworkPickleError(f'persistent class {meta["class_name"]!r} has no state dict')
    for field in ('_parameters', '_buffers', '_modules', '_init_kwargs'):
        if not isinstance(state.get(field) or {}, dict):
            raise NetworkPickleError(f'persistent class {meta["class_name"]!r}: {field} is a '
                                     f'{type(state[field]).__name__}, expected a dict')
    return _Record(meta['class_name'], meta['version'], tuple(state.get('_init_args') or ()),
                   _plain(state.get('_init_kwargs') or {}), state)


class _EasyDict(dict):
    """dnnlib.util.EasyDict as a plain dict subclass (the pickle rebuilds it with NEWOBJ + SETITEMS)."""


class _StorageType:
    """torch.<X>Storage named in a storage's persistent id: only its element dtype matters."""
    __slots__ = ('name', 'dtype')

    def __init__(self, name, dtype):
        self.name, self.dtype = name, dtype

    def __repr__(self):
        return f'torch.{self.name}'


def _bfloat16():
    import ml_dtypes  # a JAX dependency; only needed for bfloat16 storages
    return np.dtype(ml_dtypes.bfloat16)


# torch storage classes and dtypes -> numpy dtype (callables so bfloat16 is resolved only when used).
_STORAGE_DTYPES = {
    'DoubleStorage': 'f8', 'FloatStorage': 'f4', 'HalfStorage': 'f2', 'BFloat16Storage': _bfloat16,
    'LongStorage': 'i8', 'IntStorage': 'i4', 'ShortStorage': 'i2', 'CharStorage': 'i1', 'ByteStorage': 'u1',
    'BoolStorage': '?', 'ComplexFloatStorage': 'c8', 'ComplexDoubleStorage': 'c16', 'UntypedStorage': 'u1',
}
_TORCH_DTYPES = {
    'float32': 'f4', 'float': 'f4', 'float64': 'f8', 'double': 'f8', 'float16': 'f2', 'half': 'f2',
    'bfloat16': _bfloat16, 'int64': 'i8', 'long': 'i8', 'int32': 'i4', 'int': 'i4', 'int16': 'i2', 'short': 'i2',
    'int8': 'i1', 'uint8': 'u1', 'uint16': 'u2', 'uint32': 'u4', 'uint64': 'u8', 'bool': '?',
    'complex64': 'c8', 'cfloat': 'c8', 'complex128': 'c16', 'cdouble': 'c16',
}


def _np_dtype(spec) -> np.dtype:
    return spec() if callable(spec) else np.dtype(spec)


class _Storage:
    """A flat typed buffer; `data` is filled after the torch.save stream's pickle has been read (legacy format)."""
    __slots__ = ('dtype', 'numel', 'data')

    def __init__(self, dtype: np.dtype, numel: int, data: Optional[np.ndarray] = None):
        self.dtype, self.numel, self.data = dtype, numel, data

    def array(self) -> np.ndarray:
        if self.data is None:
            raise NetworkPickleError('a tensor storage has no data (truncated torch.save stream?)')
        return self.data


class _StorageView(_Storage):
    """Legacy torch.save `view_metadata`: a slice of a root storage (elements [offset, offset + numel))."""
    __slots__ = ('root', 'offset')

    def __init__(self, root: _Storage, offset: int, numel: int):
        super().__init__(root.dtype, numel)
        self.root, self.offset = root, offset

    def array(self) -> np.ndarray:
        return self.root.array()[self.offset:self.offset + self.numel]


def _as_tensor(storage, storage_offset, size, stride, dtype: Optional[np.dtype] = None) -> np.ndarray:
    """A copy of the strided view torch would make (`Tensor.set_(storage, offset, size, stride)`), bounds-checked."""
    if not isinstance(storage, _Storage):
        raise NetworkPickleError(f'tensor storage is a {type(storage).__name__}, expected a torch storage')
    flat = storage.array()
    if dtype is not None and dtype != flat.dtype:  # _rebuild_tensor_v3: untyped (byte) storage + dtype
        flat = flat.view(np.uint8).view(dtype)
    size, stride = tuple(int(s) for s in size), tuple(int(s) for s in stride)
    if len(size) != len(stride) or any(s < 0 for s in size) or any(s < 0 for s in stride) or storage_offset < 0:
        raise NetworkPickleError(f'bad tensor geometry size={size} stride={stride} offset={storage_offset}')
    if 0 not in size:
        last = storage_offset + sum((n - 1) * s for n, s in zip(size, stride))
        if last >= flat.size:
            raise NetworkPickleError(f'tensor of size {list(size)} (stride {list(stride)}, offset '
                                     f'{storage_offset}) reaches past its storage of {flat.size} elements')
        if math.prod(size) > flat.size:   # also bounds what a hostile file can allocate
            raise NetworkPickleError(f'tensor of size {list(size)} has more elements than its storage '
                                     f'({flat.size}): overlapping/expanded views are not supported')
    view = np.lib.stride_tricks.as_strided(flat[storage_offset:] if flat.size else flat, shape=size,
                                           strides=[s * flat.itemsize for s in stride], writeable=False)
    return np.array(view, copy=True)


def _check_metadata(metadata):
    if metadata and any(metadata.values()):  # conj/neg view bits; never set on network weights
        raise NetworkPickleError(f'tensor with view metadata {metadata!r} (conjugate/negative views) is not supported')


def _rebuild_tensor(storage, storage_offset, size, stride):
    return _as_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False, backward_hooks=None,
                       metadata=None):
    _check_metadata(metadata)
    return _as_tensor(storage, storage_offset, size, stride)


def _rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks, dtype, metadata=None):
    _check_metadata(metadata)
    return _as_tensor(storage, storage_offset, size, stride, dtype=dtype)


def _rebuild_parameter(data, requires_grad=False, backward_hooks=None):
    return data


def _rebuild_parameter_with_state(data, requires_grad, backward_hooks, state):
    return data


def _load_from_bytes(b):
    """torch.storage._load_from_bytes: the bytes are a whole torch.save stream of one storage."""
    if not isinstance(b, (bytes, bytearray)):
        raise NetworkPickleError('torch.storage._load_from_bytes argument is not bytes')
    return _read_torch_save(bytes(b), 'an embedded tensor storage')


def _codecs_encode(s, encoding='utf-8'):
    # Protocol <= 2 pickles write bytes as _codecs.encode(str, 'latin1'); nothing else is needed.
    if not isinstance(s, str) or encoding not in ('latin1', 'latin-1'):
        raise NetworkPickleError(f'_codecs.encode with encoding {encoding!r} is not expected in a network pickle')
    return s.encode('latin1')


# numpy objects in module state (np.broadcast_to sizes, float64 gains) are rebuilt here from validated plain
# dtypes and exact-length bytes, never through numpy's own __setstate__ on file-controlled dtype states.
_NP_KINDS = set('biufc')


class _NpDType:
    """numpy.dtype(code, align, copy) + BUILD state: only plain little/big-endian numeric dtypes."""
    __slots__ = ('code', 'dtype')

    def __init__(self, code, align=False, copy=False):
        if not isinstance(code, str) or len(code) > 4:
            raise NetworkPickleError(f'numpy dtype {code!r} is not a plain numeric dtype')
        try:
            dt = np.dtype(code)
        except TypeError as e:
            raise NetworkPickleError(f'numpy dtype {code!r} is not valid') from e
        if dt.kind not in _NP_KINDS or dt.fields is not None or dt.subdtype is not None:
            raise NetworkPickleError(f'numpy dtype {code!r} is not a plain numeric dtype')
        self.code, self.dtype = code, dt

    def __setstate__(self, state):
        # (version, byteorder, subdescr, names, fields, elsize, alignment, flags), numpy's dtype pickle state.
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ('<', '>', '|', '='):
            raise NetworkPickleError(f'numpy dtype state {state!r} is not a plain dtype state')
        if any(x is not None for x in state[2:5]):
            raise NetworkPickleError('structured numpy dtypes are not supported')
        order = {'|': '=', '=': '='}.get(state[1], state[1])
        self.dtype = self.dtype.newbyteorder(order)


def _np_dtype_of(d) -> np.dtype:
    if not isinstance(d, _NpDType):
        raise NetworkPickleError(f'expected a numpy dtype, got {type(d).__name__}')
    return d.dtype


def _np_array(shape, dtype, raw, fortran=False) -> np.ndarray:
    dtype = _np_dtype_of(dtype)
    if isinstance(raw, bytearray) or type(raw).__name__ == 'PickleBuffer':
        raw = bytes(raw)
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise NetworkPickleError(f'bad numpy array shape {shape!r}')
    if not isinstance(raw, bytes) or len(raw) != math.prod(shape) * dtype.itemsize:
        raise NetworkPickleError(f'numpy array data does not fit shape {shape} and dtype {dtype}')
    return np.frombuffer(raw, dtype).reshape(shape, order='F' if fortran else 'C').astype(dtype.newbyteorder('='))


class _NpArray:
    """numpy.core.multiarray._reconstruct(ndarray, (0,), b'b') followed by BUILD (ndarray.__setstate__ state:
    (version, shape, dtype, is_fortran, rawdata)); `value` is the array. Replaced by it in `_plain`."""
    __slots__ = ('value',)

    def __init__(self):
        self.value = None

    def __setstate__(self, state):
        if not isinstance(state, tuple) or len(state) not in (4, 5):
            raise NetworkPickleError('bad numpy array state')
        shape, dtype, fortran, raw = state[-4:]
        self.value = _np_array(tuple(shape), dtype, raw, bool(fortran))


class _NdarrayType:
    """numpy.ndarray as named in array pickles: only an argument of _reconstruct, never called."""
    __slots__ = ()


_NDARRAY = _NdarrayType()


def _np_reconstruct(subtype, shape, dtype):
    if subtype is not _NDARRAY:
        raise NetworkPickleError(f'numpy array subclass {subtype!r} is not supported')
    return _NpArray()


def _np_scalar(dtype, raw=None):
    return _np_array((), dtype, raw)[()]


def _np_frombuffer(buf, dtype, shape, order):
    return _np_array(tuple(shape), dtype, buf, order == 'F')


_NUMPY = {
    ('multiarray', '_reconstruct'): _np_reconstruct, ('multiarray', 'scalar'): _np_scalar,
    ('numeric', '_frombuffer'): _np_frombuffer,
}

_ALLOWED: Dict[Tuple[str, str], Any] = {
    ('collections', 'OrderedDict'): collections.OrderedDict,
    ('builtins', 'set'): set, ('builtins', 'frozenset'): frozenset,
    ('__builtin__', 'set'): set, ('__builtin__', 'frozenset'): frozenset,
    ('_codecs', 'encode'): _codecs_encode,
    ('torch._utils', '_rebuild_tensor'): _rebuild_tensor,
    ('torch._utils', '_rebuild_tensor_v2'): _rebuild_tensor_v2,
    ('torch._utils', '_rebuild_tensor_v3'): _rebuild_tensor_v3,
    ('torch._utils', '_rebuild_parameter'): _rebuild_parameter,
    ('torch._utils', '_rebuild_parameter_with_state'): _rebuild_parameter_with_state,
    ('torch.storage', '_load_from_bytes'): _load_from_bytes,
    ('torch_utils.persistence', '_reconstruct_persistent_obj'): _reconstruct_persistent_obj,
    ('dnnlib.util', 'EasyDict'): _EasyDict, ('dnnlib', 'EasyDict'): _EasyDict,
    ('numpy', 'ndarray'): _NDARRAY, ('numpy', 'dtype'): _NpDType,
}
for _mod in ('numpy.core', 'numpy._core'):
    for (_sub, _name), _fn in _NUMPY.items():
        _ALLOWED[(f'{_mod}.{_sub}', _name)] = _fn
for _name, _dt in _STORAGE_DTYPES.items():
    _ALLOWED[('torch', _name)] = _StorageType(_name, _dt)
_ALLOWED[('torch.storage', 'UntypedStorage')] = _ALLOWED[('torch', 'UntypedStorage')]  # its __module__ in torch 2


class _RestrictedUnpickler(pickle.Unpickler):
    """Resolves only `_ALLOWED` globals (and torch dtypes); `persistent_load` is set per format."""

    def __init__(self, file, where: str, persistent_load=None):
        super().__init__(file)
        self._where = where
        self._persistent_load = persistent_load

    def find_class(self, module, name):
        if (module, name) in _ALLOWED:
            return _ALLOWED[(module, name)]
        if module == 'torch' and name in _TORCH_DTYPES:
            return _np_dtype(_TORCH_DTYPES[name])
        if module == 'dnnlib.tflib.network' and name == 'Network':
            raise NetworkPickleError(
                f'{self._where}: this is a TensorFlow StyleGAN/StyleGAN2 network pickle (it contains '
                f'dnnlib.tflib.network.Network objects). Reading it is not supported; the official '
                f'stylegan3 legacy.py converts it to the PyTorch format with TensorFlow-specific code.')
        raise ForbiddenGlobal(
            f'{self._where}: refusing to load the pickle global {module}.{name}: only the tensor, storage, '
            f'persistent-class and container types of an official StyleGAN network pickle are allowed '
            f'(nothing was executed)')

    def persistent_load(self, pid):
        if self._persistent_load is None:
            raise NetworkPickleError(f'{self._where}: unexpected persistent id {pid!r} in a plain pickle')
        return self._persistent_load(pid)


#----------------------------------------------------------------------------
# torch.save streams (inside _load_from_bytes, or a whole file).

_LEGACY_MAGIC = 0x1950a86a20f9469cfc6c   # torch/serialization.py MAGIC_NUMBER
_LEGACY_PROTOCOL = 1001                   # torch/serialization.py PROTOCOL_VERSION


def _read_torch_save(data: bytes, where: str):
    if data[:4] == b'PK\x03\x04':
        return _read_torch_zip(data, where)
    return _read_torch_legacy(data, where)


def _read_torch_legacy(data: bytes, where: str):
    f = io.BytesIO(data)
    load = lambda: _RestrictedUnpickler(f, where).load()
    try:
        if load() != _LEGACY_MAGIC:
            raise NetworkPickleError(f'{where}: not a torch.save stream (bad magic number)')
        if load() != _LEGACY_PROTOCOL:
            raise NetworkPickleError(f'{where}: unknown torch.save protocol version')
        sys_info = load()
        little = bool(sys_info.get('little_endian', True)) if isinstance(sys_info, dict) else True
        roots: Dict[str, _Storage] = {}

        def persistent_load(pid):
            if not isinstance(pid, tuple) or len(pid) < 5 or pid[0] != 'storage':
                raise NetworkPickleError(f'{where}: unexpected persistent id {pid!r}')
            storage_type, key, _location, numel = pid[1:5]
            view = pid[5] if len(pid) > 5 else None
            if not isinstance(storage_type, _StorageType):
                raise NetworkPickleError(f'{where}: storage type {storage_type!r} is not a torch storage class')
            dtype = _np_dtype(storage_type.dtype)
            if key not in roots:
                roots[key] = _Storage(dtype, int(numel))
            root = roots[key]
            if view is not None:
                _view_key, offset, view_numel = view
                return _StorageView(root, int(offset), int(view_numel))
            return root

        result = _RestrictedUnpickler(f, where, persistent_load).load()
        keys = load()
        for key in keys:
            if key not in roots:
                raise NetworkPickleError(f'{where}: storage key {key!r} was never referenced')
            s = roots[key]
            head = f.read(8)
            if len(head) != 8:
                raise NetworkPickleError(f'{where}: truncated storage data')
            numel = struct.unpack('<q' if little else '>q', head)[0]
            nbytes = numel * s.dtype.itemsize
            raw = f.read(nbytes)
            if len(raw) != nbytes or numel != s.numel:
                raise NetworkPickleError(f'{where}: truncated or inconsistent storage data '
                                         f'({len(raw)} of {nbytes} bytes, {numel} vs {s.numel} elements)')
            s.data = np.frombuffer(raw, s.dtype.newbyteorder('<' if little else '>')).astype(s.dtype)
    except (pickle.UnpicklingError, EOFError, struct.error) as e:
        if isinstance(e, ForbiddenGlobal):
            raise
        raise NetworkPickleError(f'{where}: corrupt torch.save stream ({type(e).__name__}: {e})') from e
    return result


def _read_torch_zip(data: bytes, where: str):
    try:
        zf = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as e:
        raise NetworkPickleError(f'{where}: corrupt torch.save zip archive ({e})') from e
    names = zf.namelist()
    pkl = [n for n in names if n.endswith('/data.pkl') and n.count('/') == 1]
    if len(pkl) != 1:
        raise NetworkPickleError(f'{where}: zip archive is not a torch.save file (no <dir>/data.pkl)')
    prefix = pkl[0][:-len('data.pkl')]
    byteorder = zf.read(prefix + 'byteorder').decode().strip() if prefix + 'byteorder' in names else 'little'
    storages: Dict[str, _Storage] = {}

    def persistent_load(pid):
        if not isinstance(pid, tuple) or len(pid) != 5 or pid[0] != 'storage':
            raise NetworkPickleError(f'{where}: unexpected persistent id {pid!r}')
        storage_type, key, _location, numel = pid[1:]
        if not isinstance(storage_type, _StorageType):
            raise NetworkPickleError(f'{where}: storage type {storage_type!r} is not a torch storage class')
        if key not in storages:
            dtype = _np_dtype(storage_type.dtype)
            try:
                raw = zf.read(f'{prefix}data/{key}')
            except KeyError:
                raise NetworkPickleError(f'{where}: storage {key!r} is missing from the archive') from None
            if len(raw) < int(numel) * dtype.itemsize:
                raise NetworkPickleError(f'{where}: storage {key!r} is truncated')
            arr = np.frombuffer(raw[:int(numel) * dtype.itemsize], dtype.newbyteorder(
                '<' if byteorder == 'little' else '>')).astype(dtype)
            storages[key] = _Storage(dtype, int(numel), arr)
        return storages[key]

    try:
        return _RestrictedUnpickler(io.BytesIO(zf.read(pkl[0])), where, persistent_load).load()
    except (pickle.UnpicklingError, EOFError) as e:
        if isinstance(e, ForbiddenGlobal):
            raise
        raise NetworkPickleError(f'{where}: corrupt data.pkl ({type(e).__name__}: {e})') from e


#----------------------------------------------------------------------------
# The file.

def read_pickle(path):
    """The unpickled object of an official network pickle, networks as `_Record`s; runs no code from the file."""
    path = os.fspath(path)
    with open(path, 'rb') as f:
        data = f.read()
    if data[:4] == b'PK\x03\x04':   # a torch.save(...) zip file rather than NVIDIA's pickle.dump
        return _finish(_read_torch_zip(data, path))
    if not data or data[:1] != b'\x80':
        raise NetworkPickleError(f'{path}: not a pickle file (expected a binary pickle starting with 0x80, got '
                                 f'{data[:8]!r})')
    try:
        return _finish(_RestrictedUnpickler(io.BytesIO(data), path).load())
    except (NetworkPickleError, ForbiddenGlobal) as e:   # errors from embedded streams: name the file too
        if str(e).startswith(path):
            raise
        raise type(e)(f'{path}: {e}') from e
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, KeyError, IndexError, AttributeError,
            MemoryError, OverflowError, RecursionError) as e:
        raise NetworkPickleError(f'{path}: not a readable network pickle (truncated or corrupt: '
                                 f'{type(e).__name__}: {e})') from e


def _finish(obj):
    """Replaces every `_NpArray` placeholder by its array, in dicts, lists, tuples and record states."""
    done = {}

    def rec(x):
        if isinstance(x, _NpArray):
            return x.value
        if id(x) in done:
            return done[id(x)]
        if isinstance(x, dict):
            done[id(x)] = x
            for k in list(x):
                x[k] = rec(x[k])
        elif isinstance(x, list):
            done[id(x)] = x
            x[:] = [rec(v) for v in x]
        elif isinstance(x, tuple):
            done[id(x)] = x
            done[id(x)] = x = tuple(rec(v) for v in x)
        elif isinstance(x, _Record):
            done[id(x)] = x
            x.state = rec(x.state)
            x.init_kwargs, x.init_args = rec(x.init_kwargs), rec(x.init_args)
        return x

    return rec(obj)


def network_state_dict(rec: _Record, where: str = 'network') -> Dict[str, np.ndarray]:
    """The official `module.state_dict()` of a record tree: parameters, then persistent non-None buffers, then
    submodules with dotted prefixes (torch.nn.Module._save_to_state_dict / state_dict order)."""
    sd = {}

    def walk(r, prefix):
        if not isinstance(r, _Record):
            raise NetworkPickleError(f'{where}: submodule {prefix[:-1]!r} is a {type(r).__name__}, not a '
                                     f'persistent network module')
        st = r.state
        non_persistent = set(st.get('_non_persistent_buffers_set') or ())
        for group in ('_parameters', '_buffers'):
            for name, t in (st.get(group) or {}).items():
                if t is None or (group == '_buffers' and name in non_persistent):
                    continue
                if not isinstance(t, np.ndarray):
                    raise NetworkPickleError(f'{where}: {prefix}{name} is a {type(t).__name__}, expected a tensor')
                sd[prefix + name] = t
        for name, child in (st.get('_modules') or {}).items():
            if child is not None:
                walk(child, f'{prefix}{name}.')

    walk(rec, '')
    return sd


# Official constructor positional-argument names (for records built with positional args).
_POSITIONAL = {
    'Generator': ('z_dim', 'c_dim', 'w_dim', 'img_resolution', 'img_channels'),
    'Discriminator': ('c_dim', 'img_resolution', 'img_channels'),
}
# StyleGAN2-ADA (stylegan2-ada-pytorch training/networks.py) defaults that differ from the StyleGAN3 repo's
# networks_stylegan2.py, which our StyleGAN2 configs follow: filled in when the file leaves them out.
_ADA_SYNTHESIS_DEFAULTS = dict(num_fp16_res=0, conv_clamp=None)
_ADA_MAPPING_DEFAULTS = dict(w_avg_beta=0.995)


def _official_class(rec: _Record, where: str) -> str:
    """Which official network the record tree is, from its submodule classes (module_src is never read)."""
    kids = rec.children()
    if rec.class_name == 'Generator':
        syn = kids.get('synthesis')
        sub = {c.class_name for c in syn.children().values()} if isinstance(syn, _Record) else set()
        if 'SynthesisInput' in sub:
            return 'training.networks_stylegan3.Generator'
        if 'SynthesisBlock' in sub:
            return 'training.networks_stylegan2.Generator'
        raise NetworkPickleError(f'{where}: Generator whose synthesis network has submodules {sorted(sub)}: '
                                 f'neither StyleGAN3 (SynthesisInput) nor StyleGAN2 (SynthesisBlock)')
    if rec.class_name == 'Discriminator' and any(c.class_name == 'DiscriminatorEpilogue' for c in kids.values()):
        return 'training.networks_stylegan2.Discriminator'
    raise NetworkPickleError(f'{where}: unsupported network class_name {rec.class_name!r}; supported are the '
                             f'official StyleGAN3/StyleGAN2(-ADA) Generator and StyleGAN2 Discriminator')


def network_config(rec: _Record, where: str = 'network') -> Tuple[dict, str]:
    """(cfg, kind): the official constructor kwargs plus `class_name`, as sg3jax G/D configs take them."""
    class_name = _official_class(rec, where)
    kwargs = dict(rec.init_kwargs)
    names = _POSITIONAL[rec.class_name]
    if len(rec.init_args) > len(names):
        raise NetworkPickleError(f'{where}: {len(rec.init_args)} positional constructor args, expected at most '
                                 f'{len(names)}')
    kwargs.update(zip(names, _plain(list(rec.init_args))))
    if class_name.endswith('Generator') and 'synthesis_kwargs' in kwargs:
        # StyleGAN2-ADA's Generator(..., mapping_kwargs, synthesis_kwargs); the StyleGAN3 repo's takes the
        # synthesis kwargs flat (**synthesis_kwargs). Same network and state_dict.
        kwargs.update({**_ADA_SYNTHESIS_DEFAULTS, **dict(kwargs.pop('synthesis_kwargs') or {})})
        kwargs['mapping_kwargs'] = {**_ADA_MAPPING_DEFAULTS, **dict(kwargs.get('mapping_kwargs') or {})}
    if class_name.endswith('Discriminator'):
        _infer_d_defaults(rec, kwargs)
    return {'class_name': class_name, **kwargs}, ('G' if class_name.endswith('Generator') else 'D')


def _infer_d_defaults(rec: _Record, kwargs: dict):
    """`num_fp16_res` and `conv_clamp` default differently in stylegan2-ada-pytorch (0, None) and the StyleGAN3
    repo (4, 256), and both trainers always pass them; if a file lacks them, take what the submodules were
    actually built with: the epilogue (b4) gets `conv_clamp` explicitly and every DiscriminatorBlock `use_fp16`
    (use_fp16 = res >= max(2**(log2(R) + 1 - num_fp16_res), 8), so the count of fp16 blocks is an equivalent
    num_fp16_res)."""
    kids = rec.children()
    epilogue = kids.get('b4')
    if 'conv_clamp' not in kwargs and isinstance(epilogue, _Record) and 'conv_clamp' in epilogue.init_kwargs:
        kwargs['conv_clamp'] = epilogue.init_kwargs['conv_clamp']
    blocks = [c for c in kids.values() if c.class_name == 'DiscriminatorBlock']
    if 'num_fp16_res' not in kwargs and blocks and all('use_fp16' in b.init_kwargs for b in blocks):
        kwargs['num_fp16_res'] = sum(bool(b.init_kwargs['use_fp16']) for b in blocks)


def _convert(rec, key, where) -> dict:
    if not isinstance(rec, _Record):
        raise NetworkPickleError(f'{where} is a {type(rec).__name__}, expected a persistent network')
    cfg, kind = network_config(rec, where)
    if kind != ('D' if key == 'D' else 'G'):
        raise NetworkPickleError(f'{where} is a {cfg["class_name"]}, expected a '
                                 f'{"Discriminator" if key == "D" else "Generator"}')
    try:
        (generator if kind == 'G' else discriminator).spec(cfg)
    except (ValueError, TypeError, NotImplementedError) as e:
        raise NetworkPickleError(f'{where}: constructor kwargs {cfg!r} are not a supported config: {e}') from e
    params, buffers = state_dicts.from_state_dict(network_state_dict(rec, where), cfg, kind=kind, what=where)
    return {'cfg': cfg, 'params': params, 'buffers': buffers if kind == 'G' else {}}


def load_network_pkl(path) -> Dict[str, Any]:
    """Official network pickle -> {'G', 'D', 'G_ema' (those present): {'cfg', 'params', 'buffers'}, ...}.

    Other entries pass through as plain data (`training_set_kwargs`); other persistent modules such as
    `augment_pipe` become {'class_name', 'init_kwargs', 'state_dict'}. Raises NetworkPickleError (bad file,
    unsupported class), ForbiddenGlobal (a global outside the allow-list; nothing was run) or
    state_dicts.StateDictMismatch (weights that do not fit the constructor kwargs), each naming the file."""
    path = os.fspath(path)
    data = read_pickle(path)
    if not isinstance(data, dict):
        raise NetworkPickleError(f'{path}: top-level object is a {type(data).__name__}, expected the dict of an '
                                 f'official network snapshot (G, D, G_ema, ...)')
    nets = [k for k in ('G', 'D', 'G_ema') if k in data]
    if not nets:
        raise NetworkPickleError(f'{path}: none of the keys G, D, G_ema is present (keys: {sorted(map(str, data))})')
    out = {}
    for key, value in data.items():
        where = f'{path}: {key}'
        if key in ('G', 'D', 'G_ema'):
            out[key] = _convert(value, key, where)
        elif isinstance(value, _Record):
            out[key] = {'class_name': value.class_name, 'init_kwargs': value.init_kwargs,
                        'state_dict': network_state_dict(value, where)}
        else:
            out[key] = _plain(value)
    return out


def _plain(x):
    """EasyDict/OrderedDict -> dict recursively; tuples, lists, scalars and arrays kept; records summarised."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list):
        return [_plain(v) for v in x]
    if isinstance(x, tuple):
        return tuple(_plain(v) for v in x)
    if isinstance(x, np.generic):
        return x.item()
    if isinstance(x, _NpArray):
        return x.value
    return x
