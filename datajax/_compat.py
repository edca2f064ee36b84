"""Version pairs of Bodo and pandas that are known not to work together.

Bodo pins itself to pandas internals, so a pandas release can break an
installed Bodo before either project says so. A broken pair fails deep
inside ``import bodo`` with an error about a private pandas name;
``check_bodo_pandas`` turns that into one message naming both versions,
checked from the installed metadata before Bodo is imported.
"""

from __future__ import annotations

import re
from importlib import metadata

__all__ = [
    "BROKEN_PAIRS",
    "IncompatibleVersionsError",
    "check_bodo_pandas",
    "installed_version",
    "version_tuple",
]


class IncompatibleVersionsError(ImportError):
    """The installed Bodo does not work with the installed pandas."""


# (bodo release prefix, first pandas release it breaks with, what breaks)
BROKEN_PAIRS: tuple[tuple[tuple[int, ...], tuple[int, ...], str], ...] = (
    (
        (2026, 10),
        (3, 1),
        "import bodo fails with an ImportError about _is_string_view "
        "from pandas.core.arrays.string_arrow",
    ),
)

# the pandas range DataJAX is tested with, for the message
TESTED_PANDAS = "pandas>=3.0,<3.1"


def version_tuple(text: str) -> tuple[int, ...]:
    """Read the leading numeric release of a version string.

    ``"3.0.6"`` gives ``(3, 0, 6)``, ``"3.1.0rc1"`` gives ``(3, 1, 0)``
    and ``"2026.10"`` gives ``(2026, 10)``.

    Raises:
        ValueError: the text does not start with a number.
    """
    found = re.match(r"\s*v?(\d+(?:\.\d+)*)", str(text))
    if found is None:
        raise ValueError(f"cannot read a version number from {text!r}")
    return tuple(int(part) for part in found.group(1).split("."))


def installed_version(package: str) -> str | None:
    """The installed version of a distribution, or None if absent."""
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


def check_bodo_pandas(
    bodo_version: str | None = None, pandas_version: str | None = None
) -> None:
    """Fail if the Bodo and pandas versions are a known broken pair.

    Args:
        bodo_version: default: the installed ``bodo`` distribution;
            nothing is checked if Bodo is not installed.
        pandas_version: default: the imported pandas.

    Raises:
        IncompatibleVersionsError: the pair is known not to work; the
            message names both versions and the tested range.
    """
    if bodo_version is None:
        bodo_version = installed_version("bodo")
        if bodo_version is None:
            return
    if pandas_version is None:
        import pandas

        pandas_version = pandas.__version__

    bodo_release = version_tuple(bodo_version)
    pandas_release = version_tuple(pandas_version)
    for prefix, first_bad, symptom in BROKEN_PAIRS:
        if (
            bodo_release[: len(prefix)] == prefix
            and pandas_release >= first_bad
        ):
            raise IncompatibleVersionsError(
                f"bodo {bodo_version} does not work with pandas "
                f"{pandas_version} ({symptom}); install {TESTED_PANDAS} "
                f"(pip install 'pandas>=3.0,<3.1'), or choose the pandas "
                "executor (DATAJAX_EXECUTOR=pandas)"
            )
