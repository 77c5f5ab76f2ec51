"""The strict run that CI makes (SG3JAX_STRICT=1): missing golden data, or any skipped test, fails it."""

import pathlib

TESTS = pathlib.Path(__file__).parent


def _run(pytester, monkeypatch, strict, source):
    """pytest, in a subprocess, on `source` with this suite's conftest.py and golden.py beside it."""
    pytester.makeconftest((TESTS / 'conftest.py').read_text())
    pytester.makepyfile(golden=(TESTS / 'golden.py').read_text(), test_cases=source)
    monkeypatch.setenv('SG3JAX_GOLDEN', str(pytester.path / 'no-golden-data-here'))
    if strict:
        monkeypatch.setenv('SG3JAX_STRICT', '1')
    else:
        monkeypatch.delenv('SG3JAX_STRICT', raising=False)
    return pytester.runpytest_subprocess('-p', 'no:xdist', '-p', 'no:cacheprovider', '-rs')


PARITY = '''
import golden, pytest

@pytest.mark.parametrize('name', golden.case_files('G'))
def test_generator_case(name):
    pass

def test_needs_the_data():
    golden.require_golden()
'''


def test_missing_golden_data_skips_outside_ci_and_fails_a_strict_run(pytester, monkeypatch):
    result = _run(pytester, monkeypatch, strict=False, source=PARITY)
    result.assert_outcomes(skipped=2)           # no cases discovered, and the data's own guard
    result = _run(pytester, monkeypatch, strict=True, source=PARITY)
    assert result.ret != 0
    result.stdout.fnmatch_lines(['*golden reference data not found*SG3JAX_STRICT=1 requires it*'])


def test_any_skip_fails_a_strict_run(pytester, monkeypatch):
    source = 'import pytest\n\ndef test_needs_a_tool():\n    pytest.importorskip("a_module_that_is_not_installed")\n'
    _run(pytester, monkeypatch, strict=False, source=source).assert_outcomes(skipped=1)
    result = _run(pytester, monkeypatch, strict=True, source=source)
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(['*skipped in a strict run*a_module_that_is_not_installed*'])
