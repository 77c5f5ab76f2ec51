"""Convert NVIDIA's metric feature networks (TorchScript pickles) into the .npz files sg3jax.metrics reads.

    python -m sg3jax.convert_feature_nets --src inception-2015-12-05.pkl --dest ~/sg3jax-detectors
    python -m sg3jax.convert_feature_nets --src vgg16.pkl --dest ~/sg3jax-detectors

Sources (official `metrics/*.py`): https://api.ngc.nvidia.com/v2/models/nvidia/research/stylegan3/versions/1/
files/metrics/inception-2015-12-05.pkl and .../metrics/vgg16.pkl (StyleGAN2-ADA's `.pt` TorchScript files of
the same networks are accepted too). Needs PyTorch, only here. The official .pkl is a Python pickle of a
TorchScript module: loading it runs pickle, so convert only files from NVIDIA. Names are matched strictly (dots
and underscores are treated alike, since TorchScript flattens some submodule names); the module's TorchScript
source is saved with the weights (`_torchscript_code`) for auditing.
"""

import argparse
import os
import pickle
import sys

import numpy as np

from sg3jax.metrics import detectors


def _norm(name):
    return name.replace('.', '_')


def map_state_dict(state_dict, kind):
    """{official name: array} -> our params {name: float32 array}; strict (names up to '.'/'_', shapes)."""
    expected = detectors.MODULES[kind].param_shapes()
    by_norm = {}
    for k in expected:
        if _norm(k) in by_norm:
            raise AssertionError(f'{kind}: parameter names {k} and {by_norm[_norm(k)]} collide')
        by_norm[_norm(k)] = k
    params, unexpected = {}, []
    for k, v in state_dict.items():
        ours = by_norm.get(_norm(k))
        if ours is None:
            if k.endswith('num_batches_tracked'):
                continue
            unexpected.append(k)
            continue
        v = np.asarray(v, np.float32)
        if ours.startswith('lpips'):
            v = v.reshape(-1)                                        # stored as a [1, C, 1, 1] / [C, 1, 1] conv
        params[ours] = v
    if unexpected:
        raise ValueError(f'{kind}: unexpected state_dict entries ({len(unexpected)}): {", ".join(unexpected[:10])}')
    detectors.check_params(kind, params, where=f'{kind} state_dict')
    return params


def guess_kind(path):
    base = os.path.basename(path).lower()
    if 'inception' in base:
        return 'inception'
    if 'vgg' in base:
        return 'vgg16'
    raise ValueError(f'{path}: cannot tell the network from the file name; pass --kind inception|vgg16')


def load_torch_module(path):
    try:
        import torch    # only here: torch is the optional [torch] extra, needed for this conversion alone
    except ImportError:
        raise SystemExit('error: converting the official feature networks needs PyTorch (pip install torch); '
                         'the metrics themselves do not') from None
    try:
        return torch.jit.load(path, map_location='cpu')
    except Exception:
        with open(path, 'rb') as f:
            return pickle.load(f)       # the official .pkl: a pickled TorchScript module


def convert(src, dest_dir, kind=None):
    kind = kind or guess_kind(src)
    module = load_torch_module(src)
    state_dict = {k: v.detach().cpu().numpy() for k, v in module.state_dict().items()}
    params = map_state_dict(state_dict, kind)
    code = None
    try:
        code = module.code + ''.join(f'\n# --- {n}\n{m.code}' for n, m in module.named_children())
    except Exception:
        pass
    dest = os.path.join(dest_dir, detectors.NPZ_NAMES[kind])
    detectors.save_npz(dest, kind, params, torchscript_code=code)
    return dest


def main(argv=None):
    p = argparse.ArgumentParser(prog='python -m sg3jax.convert_feature_nets', description=__doc__.split('\n\n')[0])
    p.add_argument('--src', required=True, help="NVIDIA's inception-2015-12-05.pkl or vgg16.pkl (or .pt)")
    p.add_argument('--dest', required=True, help='output directory (the metrics\' --detector-dir)')
    p.add_argument('--kind', choices=sorted(detectors.MODULES), help='default: from the file name')
    args = p.parse_args(argv)
    if not os.path.isfile(args.src):
        p.error(f'--src: {args.src} is not a file')
    print(f'wrote {convert(args.src, args.dest, args.kind)}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
