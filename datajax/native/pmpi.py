"""Build and read the PMPI interposer that counts every byte sent via MPI.

``pmpi_count.c`` wraps the MPI calls that move data (point-to-point,
collectives, their nonblocking, persistent and large-count ``_c`` forms).
Preloaded into each rank, it sees what the job, mpi4py and Bodo's own
shuffles hand to MPI and counts logical bytes to and from other ranks,
by the same rule as :class:`datajax.mpi.Comm`.

The library must be in the process from the start, so it is preloaded::

    python -m jobs.launch -n 2 -- datajax-export-wavespec ...
    srun --mpi=pmi2 --export=ALL,LD_PRELOAD="$(python -m jobs.launch \\
        --print-preload)" ...

:func:`build_interposer` compiles it with the environment's ``mpicc``
into a cache folder; :func:`read_counters` reads this process's counters
and says plainly when there are none to read.  Nothing here imports
mpi4py or starts MPI.
"""

from __future__ import annotations

import ctypes
import hashlib
import logging
import os
import re
import secrets
import shlex
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = [
    "BuildResult",
    "PmpiCounters",
    "build_interposer",
    "cache_root",
    "find_mpicc",
    "interposer_path",
    "read_counters",
    "reset_counters",
    "summarize_ranks",
]

SOURCE = "pmpi_count.c"
# The reader functions this module knows how to call; pmpi_count.c's
# DJ_READER_VERSION.
READER_VERSION = 1
COMPILE_FLAGS = ("-O2", "-fPIC", "-shared", "-pthread")
LINK_FLAGS = ("-ldl",)
BUILD_TIMEOUT = 120.0

HOW_TO_PRELOAD = (
    "start the job with 'python -m jobs.launch -n N -- CMD ...', or set "
    "LD_PRELOAD to the path 'python -m jobs.launch --print-preload' "
    "prints"
)


# ---------------------------------------------------------------------------
# building


@dataclass(frozen=True)
class BuildResult:
    """Where the interposer is, or why there is none.

    ``path`` is None when the build failed; ``reason`` then says why.
    """

    path: Path | None
    reason: str | None = None
    cached: bool = False


def cache_root(environ: Mapping[str, str] | None = None) -> Path:
    """The project's cache folder.

    ``$DATAJAX_CACHE_DIR`` if set, else ``$XDG_CACHE_HOME/datajax``, else
    ``~/.cache/datajax``.
    """
    env = os.environ if environ is None else environ
    if env.get("DATAJAX_CACHE_DIR"):
        return Path(env["DATAJAX_CACHE_DIR"]).expanduser()
    if env.get("XDG_CACHE_HOME"):
        return Path(env["XDG_CACHE_HOME"]).expanduser() / "datajax"
    return Path.home() / ".cache" / "datajax"


def find_mpicc(
    mpicc: str | os.PathLike | None = None,
    environ: Mapping[str, str] | None = None,
) -> tuple[Path | None, str | None]:
    """Find the ``mpicc`` of the MPI this Python uses.

    Looks at ``mpicc`` if given, else ``$DATAJAX_MPICC``, else beside
    ``sys.executable``, else ``$VIRTUAL_ENV/bin``.  ``PATH`` is not
    searched: an ``mpicc`` of another MPI would build a library for the
    wrong ``libmpi``.

    Returns:
        ``(path, None)``, or ``(None, reason)`` if there is none.
    """
    env = os.environ if environ is None else environ
    if mpicc is not None or env.get("DATAJAX_MPICC"):
        given = Path(mpicc if mpicc is not None else env["DATAJAX_MPICC"])
        if given.is_file() and os.access(given, os.X_OK):
            return given, None
        return None, f"mpicc {str(given)!r} is not an executable file"

    candidates = [Path(sys.executable).parent / "mpicc"]
    if env.get("VIRTUAL_ENV"):
        candidates.append(Path(env["VIRTUAL_ENV"]) / "bin" / "mpicc")
    for candidate in candidates:
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return candidate, None
    looked = ", ".join(str(c) for c in candidates)
    return None, (
        f"no mpicc found (looked at {looked}); install the MPI this "
        "Python uses with its compiler wrapper (pip install bodo brings "
        "one) or set DATAJAX_MPICC"
    )


@dataclass(frozen=True)
class _Fingerprint:
    version: str
    material: bytes


def _mpi_version(header: str) -> str:
    """A short name for the MPI library that ``mpi.h`` belongs to."""
    mpich = re.search(r'#define\s+MPICH_VERSION\s+"([^"]+)"', header)
    if mpich:
        return f"mpich{mpich.group(1)}"
    parts = [
        re.search(rf"#define\s+OMPI_{name}_VERSION\s+(\d+)", header)
        for name in ("MAJOR", "MINOR", "RELEASE")
    ]
    if all(parts):
        return "openmpi" + ".".join(p.group(1) for p in parts)
    return "mpi"


def _fingerprint(mpicc: Path, timeout: float) -> _Fingerprint:
    """What the library depends on besides its source.

    The wrapper's command line, the ``mpi.h`` it compiles against and the
    ``libmpi`` it links, so that an upgraded or different MPI gets a
    fresh build.
    """
    show = ""
    for flag in ("-show", "--showme"):
        done = subprocess.run(
            [str(mpicc), flag], capture_output=True, text=True,
            timeout=timeout, stdin=subprocess.DEVNULL,
        )
        if done.returncode == 0 and done.stdout.strip():
            show = done.stdout.strip()
            break

    material = [str(mpicc.resolve()).encode(), show.encode()]
    version = "mpi"
    words = shlex.split(show)
    for folder in (w[2:] for w in words if w.startswith("-I")):
        header = Path(folder) / "mpi.h"
        if header.is_file():
            text = header.read_bytes()
            material.append(text)
            version = _mpi_version(text.decode("utf-8", "replace"))
            break
    for folder in (w[2:] for w in words if w.startswith("-L")):
        library = Path(folder) / "libmpi.so"
        if library.exists():
            real = library.resolve()
            stat = real.stat()
            material.append(
                f"{real}:{stat.st_size}:{stat.st_mtime_ns}".encode()
            )
            break
    return _Fingerprint(version, b"\0".join(material))


def _source_bytes() -> bytes:
    return resources.files(__package__).joinpath(SOURCE).read_bytes()


def build_interposer(
    cache_dir: str | os.PathLike | None = None,
    mpicc: str | os.PathLike | None = None,
    timeout: float = BUILD_TIMEOUT,
) -> BuildResult:
    """Compile ``pmpi_count.c`` once per source and MPI; return its path.

    The shared object lands in ``cache_dir`` (default: ``pmpi`` under
    :func:`cache_root`), named after the MPI version and a hash of the
    source, the compiler wrapper, ``mpi.h`` and ``libmpi``.  It is
    written under a temporary name and renamed into place, so ranks that
    build at the same time each see a whole file.

    Never raises for a missing ``mpicc``, a missing C compiler or a
    failed compile: the result's ``path`` is then None and ``reason``
    says why.
    """
    found, why = find_mpicc(mpicc)
    if found is None:
        return BuildResult(None, why)

    # what the library depends on
    try:
        source = _source_bytes()
        fingerprint = _fingerprint(found, timeout)
    except (OSError, subprocess.SubprocessError) as error:
        return BuildResult(
            None, f"cannot ask {str(found)!r} about its MPI: {error}"
        )
    flags = " ".join(COMPILE_FLAGS + LINK_FLAGS).encode()
    key = hashlib.sha256(
        b"\0".join([source, fingerprint.material, flags])
    ).hexdigest()[:16]
    folder = Path(cache_dir) if cache_dir else cache_root() / "pmpi"
    target = folder / f"pmpi_count-{fingerprint.version}-{key}.so"
    if target.is_file():
        return BuildResult(target, cached=True)

    # compile under a private name, then rename into place
    stem = f".{target.stem}.{os.getpid()}.{secrets.token_hex(4)}"
    source_copy = folder / f"{stem}.c"
    partial = folder / f"{stem}.so"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        source_copy.write_bytes(source)
        command = [
            str(found), *COMPILE_FLAGS, "-o", str(partial),
            str(source_copy), *LINK_FLAGS,
        ]
        done = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout,
            stdin=subprocess.DEVNULL, cwd=folder,
        )
        if done.returncode != 0 or not partial.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-5:]
            return BuildResult(None, (
                f"{found} could not compile {SOURCE} (exit "
                f"{done.returncode}): " + " | ".join(tail)
            ))
        os.replace(partial, target)
    except subprocess.TimeoutExpired:
        return BuildResult(
            None, f"{found} took over {timeout:g} s to compile {SOURCE}"
        )
    except OSError as error:
        return BuildResult(
            None, f"cannot build {SOURCE} into {str(folder)!r}: {error}"
        )
    finally:
        for leftover in (source_copy, partial):
            try:
                leftover.unlink()
            except OSError:
                pass  # never created, or already renamed into place
    log.debug("built %s", target)
    return BuildResult(target)


def interposer_path(**kwargs: Any) -> Path | None:
    """The built interposer's path, or None (the reason is logged)."""
    result = build_interposer(**kwargs)
    if result.path is None:
        log.warning("no PMPI interposer: %s", result.reason)
    return result.path


# ---------------------------------------------------------------------------
# reading this process's counters


@dataclass(frozen=True)
class PmpiCounters:
    """This process's interposer counters, or why there are none.

    ``status`` is ``"ok"`` or ``"unavailable: <why>"``; the numbers are
    None when unavailable, never a zero standing in for a measurement.
    ``by_call`` maps an MPI entry point to ``(calls, sent, received)``.
    """

    status: str
    bytes_sent: int | None = None
    bytes_received: int | None = None
    calls: int | None = None
    uncounted_calls: int | None = None
    by_call: Mapping[str, tuple[int, int, int]] = field(
        default_factory=dict
    )

    @property
    def available(self) -> bool:
        return self.status == "ok"

    def snapshot(self) -> dict[str, Any]:
        """Return the JSON-safe ``pmpi_*`` entries of a metrics record."""
        return {
            "pmpi_status": self.status,
            "pmpi_bytes_sent": self.bytes_sent,
            "pmpi_bytes_received": self.bytes_received,
            "pmpi_uncounted_calls": self.uncounted_calls,
            "pmpi_calls": {
                name: calls
                for name, (calls, _, _) in sorted(self.by_call.items())
            },
        }


def _unavailable(why: str) -> PmpiCounters:
    return PmpiCounters(status=f"unavailable: {why}")


def _library() -> tuple[ctypes.CDLL | None, str | None]:
    """The process's own symbol table, if it holds a working interposer."""
    try:
        process = ctypes.CDLL(None)
    except OSError as error:
        return None, f"cannot look up symbols in this process ({error})"
    try:
        version = process.datajax_pmpi_reader_version
    except AttributeError:
        preload = os.environ.get("LD_PRELOAD", "")
        if "pmpi_count" in preload:
            return None, (
                f"LD_PRELOAD={preload!r} names the interposer but this "
                "process did not load it (set after start, or the file "
                f"could not be loaded); {HOW_TO_PRELOAD}"
            )
        return None, (
            f"the PMPI interposer is not loaded in this process; "
            f"{HOW_TO_PRELOAD}"
        )

    version.restype = ctypes.c_int
    if version() != READER_VERSION:
        return None, (
            f"the loaded interposer has reader version {version()}, this "
            f"module reads version {READER_VERSION}; rebuild it"
        )
    process.datajax_pmpi_interposing.restype = ctypes.c_int
    interposing = process.datajax_pmpi_interposing()
    if interposing == 0:
        return None, (
            "the interposer is loaded but MPI calls do not reach it (it "
            f"was not preloaded); {HOW_TO_PRELOAD}"
        )
    if interposing < 0:
        return None, (
            "the interposer was loaded after the MPI library, so calls "
            f"bound before it are not counted; {HOW_TO_PRELOAD}"
        )
    for name in ("sent", "received", "calls", "uncounted"):
        for reader in (f"datajax_pmpi_{name}", f"datajax_pmpi_op_{name}"):
            getattr(process, reader).restype = ctypes.c_ulonglong
    process.datajax_pmpi_op_name.restype = ctypes.c_char_p
    return process, None


def read_counters() -> PmpiCounters:
    """Read this process's counters (since start or the last reset)."""
    lib, why = _library()
    if lib is None:
        return _unavailable(why)

    by_call = {}
    for op in range(lib.datajax_pmpi_op_count()):
        calls = lib.datajax_pmpi_op_calls(op)
        if calls:
            name = lib.datajax_pmpi_op_name(op).decode()
            by_call[name] = (
                calls,
                lib.datajax_pmpi_op_sent(op),
                lib.datajax_pmpi_op_received(op),
            )
    return PmpiCounters(
        status="ok",
        bytes_sent=lib.datajax_pmpi_sent(),
        bytes_received=lib.datajax_pmpi_received(),
        calls=lib.datajax_pmpi_calls(),
        uncounted_calls=lib.datajax_pmpi_uncounted(),
        by_call=by_call,
    )


def reset_counters() -> bool:
    """Zero this process's counters; False if there are none."""
    lib, _ = _library()
    if lib is None:
        return False
    lib.datajax_pmpi_reset()
    return True


def summarize_ranks(
    per_rank: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """Totals over the ``snapshot()`` records of every rank.

    The totals are None unless every rank measured; ``pmpi_status`` then
    says which ranks did not and why the first of them did not.
    """
    missing = [
        (entry.get("rank", index), entry.get("pmpi_status"))
        for index, entry in enumerate(per_rank)
        if entry.get("pmpi_status") != "ok"
    ]
    if not per_rank or missing:
        if not per_rank:
            status = "unavailable: no rank reported"
        else:
            ranks = ", ".join(str(rank) for rank, _ in missing)
            why = missing[0][1] or "unavailable: not recorded"
            why = why.removeprefix("unavailable: ")
            status = f"unavailable on rank(s) {ranks}: {why}"
        return {
            "pmpi_status": status,
            "pmpi_bytes_sent": None,
            "pmpi_bytes_received": None,
        }
    return {
        "pmpi_status": "ok",
        "pmpi_bytes_sent": sum(e["pmpi_bytes_sent"] for e in per_rank),
        "pmpi_bytes_received": sum(
            e["pmpi_bytes_received"] for e in per_rank
        ),
    }
