r"""The README's plan table: every preset (StyleGAN3-T/R, StyleGAN2 at 256/512/1024 px) planned for one TPU slice
by `sg3jax.planning.plan`, as a Markdown table with the date and library versions.

    python -m sg3jax.planning.plan_table --topology v5e:2x4 --cache_dir benchmarks/plan_cache \
        --out README.md [--rows t256+remat,r256+remat,sg2-256,...]

Rows are the configurations the official docs/configs.md times, so each sits beside its official 8-GPU figure:
StyleGAN3-T/R at batch 32 with the recommended gamma (its "Recommended configurations"), StyleGAN2 as paper256,
paper512 and the 1024 px `stylegan2` repro row (paper256/512 without their ADA, which changes the step's cost
little: bgc augmentation is about 4 % of a D forward, benchmarks/bench_augment.py). The table is rewritten after
every row, so a long generation leaves what it has done; where the file has the markers `<!-- plan_table: begin -->`
and `<!-- plan_table: end -->` only the text between them is replaced.

Full-size TPU compiles are slow on a small host (StyleGAN3-T 256 px: about 25 min per phase on 2 CPU cores, with
up to 11 GiB of host memory), so with `--cache_dir` every compiled phase is saved there as it finishes and reused
by the next invocation: an interrupted generation resumes phase by phase. A cache entry is keyed by the phase's
program as lowered (its StableHLO: under 20 s to trace a full-size step, against 25+ min to compile), the slice
and the jax/libtpu versions: a change to the config or to the code that makes a step compiles afresh, and a
change that leaves every program as it was (a refactor, the training loop, a comment) keeps the committed
entries.

As in plan.py, jax and what imports it are imported inside the functions, after `__main__` chooses JAX_PLATFORMS.
"""

import dataclasses
import datetime
import hashlib
import importlib.metadata
import json
import os
import sys

from sg3jax import utils

ROWS = {
    't256': ('stylegan3-t', 'res=256', {}), 'r256': ('stylegan3-r', 'res=256', {}),
    'sg2-256': ('stylegan2', 'preset=paper256', {'aug': 'noaug'}),
    't512': ('stylegan3-t', 'res=512', {}), 'r512': ('stylegan3-r', 'res=512', {}),
    'sg2-512': ('stylegan2', 'preset=paper512', {'aug': 'noaug'}),
    't1024': ('stylegan3-t', 'preset=ffhq1024', {}), 'r1024': ('stylegan3-r', 'preset=ffhq1024', {}),
    'sg2-1024': ('stylegan2', 'preset=ffhq1024', {}),
}


# A row may carry the plan's remedies as suffixes (`t256+remat`, `r512+bf16+remat`): on 16 GiB chips the
# StyleGAN3 rows fit only with them, and a rematerialised step also compiles in about half the time. The
# `remat_masks` and `remat_convs` suffixes rematerialise with a StyleGAN3 layer policy (config.remat_policy).
VARIANTS = {'remat': {'remat': True}, 'bf16': {'precision': 'bfloat16', 'fp32': False},
            'remat_masks': {'remat': True, 'remat_policy': 'masks'},
            'remat_convs': {'remat': True, 'remat_policy': 'masks_and_convs'}}


def parse_row(name):
    """('t256', ['remat']) for 't256+remat'; a clear error for an unknown row or suffix."""
    base, *suffixes = name.split('+')
    if base not in ROWS:
        raise ValueError(f'--rows: unknown row {base!r} in {name!r}; known: {list(ROWS)}')
    unknown = [s for s in suffixes if s not in VARIANTS]
    if unknown:
        raise ValueError(f'--rows: unknown suffix {unknown} in {name!r}; known: {list(VARIANTS)}')
    return base, suffixes


def row_config(name):
    from sg3jax.training import config as config_lib
    base, suffixes = parse_row(name)
    cfg, arg, fields = ROWS[base]
    config = config_lib.get_config(cfg, arg)
    config.update(fields)
    for suffix in suffixes:
        config.update(VARIANTS[suffix])
    if config.gamma is None:
        config.gamma = config_lib.recommended_gamma(cfg, config.resolution, config.batch_size)
    return config


def remat_label(run):
    """' + remat', ' + remat (masks)' and so on: how a row's run rematerialises; '' when it does not."""
    if not run.remat:
        return ''
    return ' + remat' + (f' ({run.remat_policy})' if run.remat_policy != 'inputs' else '')


def versions():
    names = ('jax', 'jaxlib', 'libtpu')
    out = []
    for n in names:
        try:
            out.append(f'{n} {importlib.metadata.version(n)}')
        except importlib.metadata.PackageNotFoundError:
            out.append(f'{n} (absent)')
    return ', '.join(out)


# Bump when PhasePrograms.compile reads the compiler's figures differently: the entries hold those figures.
CACHE_FORMAT = 1


def cache_key(lowered, topology):
    """The cache key of one lowered phase: its StableHLO text (without source locations, so line numbers do not
    count), the slice, the library versions that compile it, and CACHE_FORMAT."""
    text = lowered.as_text()
    return hashlib.sha256(json.dumps([text, topology, versions(), CACHE_FORMAT]).encode()).hexdigest()[:16]


def plan_row(name, target, cache_dir='', log=None, compile=True):
    """The Plan of row `name` for `target`, compiling one phase at a time; with `cache_dir`, phases compiled by an
    earlier invocation (the same program as lowered, slice and library versions) are read back instead. With
    `compile=False`, None when a phase is not in the cache. After a phase the compiler refuses for memory the row
    does not fit whatever the others need, so they are not compiled (minutes each at full size); the Plan then
    has fewer phases than `phase_names(run)`."""
    from sg3jax.planning import plan as plan_lib
    run = plan_lib.resolve_for(row_config(name), target)
    programs = plan_lib.PhasePrograms(run, target.devices)
    phases = {}
    for phase in plan_lib.phase_names(run):
        lowered = programs.lower(phase)
        # No ':' in the name (v5e_2x4-...): the cache is committed beside the table, and checked out everywhere.
        path = (os.path.join(cache_dir, f"{target.topology.replace(':', '_')}-{name}-{phase}-"
                                        f"{cache_key(lowered, target.topology)}.json") if cache_dir else '')
        if path and os.path.exists(path):
            with open(path) as f:
                phases[phase] = plan_lib.PhaseCost(**json.load(f))
            if log:
                log(f'{name} {phase}: from {path}')
        elif not compile:
            return None
        else:
            phases[phase] = programs.compile(phase, lowered, log)
            if path:
                utils.write_text_atomic(path, json.dumps(dataclasses.asdict(phases[phase])))
        if phases[phase].oom:
            break
    return plan_lib.Plan(run, target, phases, plan_lib.DEFAULT_HBM_FRACTION)


def render(topology, rows, pending):
    from sg3jax.planning import plan as plan_lib
    lines = [f'Generated {datetime.date.today().isoformat()} by `python -m sg3jax.planning.plan_table --topology '
             f'{topology}` ({versions()}). Per chip; "peak" is the largest phase\'s arguments + outputs + '
             'temporaries + code from the TPU compiler\'s memory_analysis(); sec/kimg is the roofline lower bound '
             '(fp32 at bf16 peak / 6, Precision.HIGHEST) and the TPU cost model\'s estimate; official figures are '
             'NVlabs/stylegan3 docs/configs.md, 8 GPUs.', '',
             '| config | res | batch (per chip) | precision | peak memory per chip | fits | est. sec/kimg '
             '(roofline) | est. sec/kimg (XLA) | official 8xV100 | official 8xA100 | compile (min, all phases) |',
             '|---|---|---|---|---|---|---|---|---|---|---|']
    for name, result in rows:
        if isinstance(result, str):
            lines.append(f'| {name} | | | | {result} | | | | | | |')
            continue
        p = result
        off = plan_lib.official_figures(p.run)
        f = lambda v: '-' if v is None else f'{v:.2f}'
        gib = lambda n: f'{n / 2 ** 30:.2f}'
        others = ', '.join(f'{x.name} {gib(x.peak_bytes)}' for x in p.phases.values()
                           if x.name not in (p.binding_phase, 'ema'))
        mem = (f'{plan_lib.fmt_bytes(p.peak_bytes)} of {plan_lib.fmt_bytes(p.target.memory_bytes)} '
               f'({p.binding_phase}' + (f'; {others} GiB' if others else '') + ')' +
               (' (compiler: out of HBM)' if any(x.oom for x in p.phases.values()) else ''))
        skipped = [n for n in plan_lib.phase_names(p.run) if n not in p.phases and n != 'ema']
        if skipped:
            mem += f'; {", ".join(skipped)} not compiled'
        precision = p.run.precision + (f' (top {p.run.num_fp16_res} res)' if p.run.precision != 'float32' else '')
        lines.append(f'| {p.run.cfg}{remat_label(p.run)} | {p.run.resolution} | '
                     f'{p.run.batch_size} ({p.run.batch_per_device}) | {precision} | {mem} | '
                     f'{"yes" if p.fits else "**no**"} | {f(p.sec_per_kimg)} | {f(p.xla_sec_per_kimg)} | '
                     f'{f(off[0]) if off else "-"} | {f(off[1]) if off else "-"} | '
                     f'{sum(x.compile_seconds for x in p.phases.values()) / 60:.0f} |')
    if pending:
        lines.append(f'\nNot generated yet: {", ".join(pending)}.')
    return '\n'.join(lines) + '\n'


BEGIN, END = '<!-- plan_table: begin -->', '<!-- plan_table: end -->'


def write_table(path, table):
    """Write `table` to `path` (atomically): between the BEGIN/END markers when the file has them, so the text
    around a generated table (the rest of the README) survives regeneration; a new file holds just the table."""
    text = f'{BEGIN}\n{table}{END}\n'
    if os.path.exists(path):
        with open(path) as f:
            old = f.read()
        if BEGIN not in old or END not in old:   # never overwrite a README that has no place for the table
            raise ValueError(f'{path} exists without the lines {BEGIN} and {END}: add them where the table '
                             'goes, or give --out a new file')
        head, rest = old.split(BEGIN, 1)
        tail = rest.split(END, 1)[1]
        text = head + text + tail[tail.startswith('\n'):]    # the lines after the table as they were
    utils.write_text_atomic(path, text)


def main(argv):
    del argv
    from absl import flags
    from sg3jax.planning import plan as plan_lib
    FLAGS = flags.FLAGS
    names = FLAGS.rows.split(',') if FLAGS.rows else list(ROWS)
    for name in names:
        parse_row(name)
    target = plan_lib.make_target(FLAGS.topology)
    if FLAGS.cache_dir:
        os.makedirs(FLAGS.cache_dir, exist_ok=True)
    done, uncached = [], []
    for i, name in enumerate(names):
        try:
            result = plan_row(name, target, FLAGS.cache_dir, log=plan_lib.log_to_stderr,
                              compile=not FLAGS.cached_only)
            if result is None:
                uncached.append(name)
                continue
            print(plan_lib.format_plan(result), flush=True)
        except ValueError as e:     # the config does not suit the slice (batch divisibility)
            result = f'not planned: {e}'
            print(f'{name}: {result}', flush=True)
        done.append((name, result))
        write_table(FLAGS.out, render(FLAGS.topology, done, uncached + names[i + 1:]))
    if uncached:
        write_table(FLAGS.out, render(FLAGS.topology, done, uncached))


if __name__ == '__main__':
    os.environ.setdefault('JAX_PLATFORMS', 'cpu')
    from absl import app, flags
    flags.DEFINE_string('topology', 'v5e:2x4', 'TPU slice to plan for.')
    flags.DEFINE_string('out', 'README.md', 'Markdown file to (re)write after every row (between the markers '
                        'where it has them).')
    flags.DEFINE_string('rows', '', f'Comma-separated rows (default all): {",".join(ROWS)}; a suffix '
                        f'{"/".join("+" + v for v in VARIANTS)} plans the row with that remedy.')
    flags.DEFINE_bool('cached_only', False, 'Compile nothing: render the rows whose phases are all in --cache_dir '
                      'and list the others as not generated.')
    flags.DEFINE_string('cache_dir', '', 'Save each compiled phase here and reuse it on the next invocation '
                        '(resume an interrupted generation).')
    app.run(main)
    sys.exit(0)
