"""The startup check for Bodo and pandas versions known not to work."""

from __future__ import annotations

import pytest

from datajax._compat import (
    IncompatibleVersionsError,
    check_bodo_pandas,
    installed_version,
    version_tuple,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("3.0.6", (3, 0, 6)),
        ("3.1.0rc1", (3, 1, 0)),
        ("2026.10", (2026, 10)),
        ("v2.2", (2, 2)),
    ],
)
def test_version_tuple(text, expected):
    assert version_tuple(text) == expected


def test_version_tuple_rejects_text_without_a_number():
    with pytest.raises(ValueError, match="'dev'"):
        version_tuple("dev")


@pytest.mark.parametrize("pandas_version", ["3.1.0", "3.1.1", "3.2.0", "4.0"])
def test_the_broken_pair_names_both_versions(pandas_version):
    with pytest.raises(IncompatibleVersionsError) as info:
        check_bodo_pandas("2026.10", pandas_version)

    message = str(info.value)
    assert "bodo 2026.10" in message
    assert f"pandas {pandas_version}" in message
    assert "pandas>=3.0,<3.1" in message


@pytest.mark.parametrize(
    ("bodo_version", "pandas_version"),
    [("2026.10", "3.0.6"), ("2026.10.1", "3.0.0"), ("2026.11", "3.1.1")],
)
def test_other_pairs_pass(bodo_version, pandas_version):
    check_bodo_pandas(bodo_version, pandas_version)


def test_the_installed_pair_passes():
    assert installed_version("bodo") is not None
    check_bodo_pandas()


def test_an_absent_package_has_no_version():
    assert installed_version("surely-not-installed-datajax-x") is None
