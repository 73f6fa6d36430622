"""docs/errors.md cannot drift: each row names a test that exists, and that test fails unless it
produces the row's message (tests/conftest.py's ErrorsDocCheck, tried here on a made-up table)."""

from __future__ import annotations

import re

import pytest

from conftest import ERRORS_DOC, ErrorRow, ErrorsDocCheck, error_rows, project_errors

pytest_plugins = ["pytester"]

ROOT = ERRORS_DOC.parent.parent
ROWS = error_rows(ERRORS_DOC.read_text())


def test_the_table_lists_every_kind_of_failure():
    assert len(ROWS) >= 40
    text = " ".join(row.failure for row in ROWS)
    for kind in ("missing", "truncated", "magic", "gzip", "checksum", "pickle", "npz", "TOML"):
        assert kind in text, kind


@pytest.mark.parametrize("row", ROWS, ids=[row.failure for row in ROWS])
def test_each_row_names_a_test_that_exists(row):
    """A row naming no test would never be checked."""
    path, _, name = row.test.partition("::")
    assert path.startswith("tests/test_") and name.startswith("test_"), row.test
    assert (ROOT / path).is_file(), row.test
    assert re.search(rf"^def {re.escape(name)}\(", (ROOT / path).read_text(), re.M), row.test
    # Fixed text to match: a pattern of placeholders alone would match any message.
    assert any(len(part.strip()) >= 3 for part in re.split(r"\{[^}]*\}", row.pattern)), row


def test_a_pattern_matches_its_message_with_any_values_and_nothing_else():
    row = ErrorRow("x", "{path}: cannot read ({reason}); {}delete it", "tests/test_x.py::test_y")
    assert row.regex().search("vanishing data: error: a/b: cannot read (EACCES); delete it")
    assert row.regex().search("a: cannot read (); delete it")  # a break in the source: nothing
    assert not row.regex().search("a/b: cannot write (EACCES); delete it")
    assert not row.regex().search("a/b: cannot read EACCES; delete it")  # brackets are text


FAKE_DOC = """\
| area | failure | message pattern | test |
| --- | --- | --- | --- |
| t | raised and caught | `no {thing} here` | `tests/test_fake.py::test_raises` |
| t | printed, read by the test | `bad {value}; try {other}` | `tests/test_fake.py::test_reads` |
| t | printed, not read | `said {n} once` | `tests/test_fake.py::test_prints` |
| t | a child process's | `child says {n}` | `tests/test_fake.py::test_child` |
| t | one case of two | `case {n} of 2` | `tests/test_fake.py::test_cases` |
| t | never produced | `never {made}` | `tests/test_fake.py::test_silent` |
"""

FAKE_TESTS = """
import subprocess
import sys

import pytest

from vanishing.errors import DataError, UsageError


def test_raises():
    with pytest.raises(DataError):
        raise DataError("no data set here")


def test_reads(capsys):
    print("bad 3; try 4", file=sys.stderr)
    assert capsys.readouterr().err


def test_prints():
    print("said 1 once")


def test_child():
    code = "import sys; sys.exit('child says 2')"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 1


@pytest.mark.parametrize("n", [1, 2])
def test_cases(n):
    if n == 2:
        UsageError(f"case {n} of 2")  # made, not raised: its text is what the user would read


def test_silent():
    pass
"""


@pytest.fixture(scope="module")
def package_imported() -> None:
    """The package's modules imported once: pytester forgets those its runs import."""
    project_errors()


@pytest.fixture
def fake(package_imported, pytester, monkeypatch):
    """A project with FAKE_DOC's table and the tests it names; runs pytest on them in-process."""
    monkeypatch.setenv("PYTEST_DISABLE_PLUGIN_AUTOLOAD", "1")  # hypothesis etc.: not needed
    pytester.makeini("[pytest]\n")  # its directory is the root: node ids as in FAKE_DOC
    (pytester.path / "errors.md").write_text(FAKE_DOC)
    (pytester.path / "tests").mkdir()
    (pytester.path / "tests" / "test_fake.py").write_text(FAKE_TESTS)

    def run(*args: str) -> pytest.RunResult:
        check = ErrorsDocCheck(pytester.path / "errors.md")
        return pytester.runpytest_inprocess("-p", "no:cacheprovider", *args, plugins=[check])

    return run


def test_a_named_test_fails_unless_it_produces_its_rows_messages(fake):
    result = fake("tests")
    result.assert_outcomes(passed=6, failed=1)
    result.stdout.fnmatch_lines([
        "*tests/test_fake.py::test_silent passed, but docs/errors.md says it produces messages*",
        "  never produced: `never {made}`",
    ])  # fmt: skip
    assert "5 of the 6 rows whose tests ran were produced by their test" in result.stdout.str()


def test_a_test_run_in_part_is_not_checked(fake):
    """Case 1 alone produces nothing, but the row is case 2's: a part of a test proves nothing."""
    fake("tests/test_fake.py::test_cases[1]").assert_outcomes(passed=1)
    fake("tests", "-k", "test_cases and 1").assert_outcomes(passed=1)
    fake("tests/test_fake.py::test_cases").assert_outcomes(passed=2)  # whole: checked, and true
