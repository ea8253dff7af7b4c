"""A Python interpreter with the real Datumaro 1.11.1, for interoperability tests.

Datumaro 1.11.1 pins old numpy/PyYAML, so it must never be imported into the project's venv.
It lives in its own venv, ``<repo>/.venv-datumaro``, created on first use (2-3 minutes),
and the tests talk to it through subprocesses (:func:`run_datumaro`).

Set ``OTX_NLD_DATUMARO_PYTHON`` to use an existing interpreter instead.
``python -m tests.datumaro_env`` creates the venv ahead of a test run and prints its Python.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ENV_VAR = "OTX_NLD_DATUMARO_PYTHON"
DATUMARO_VERSION = "1.11.1"
VENV_DIR = REPO / ".venv-datumaro"
# Written after a complete install, so a half-made venv (interrupted pip) is rebuilt.
STAMP = VENV_DIR / f".datumaro-{DATUMARO_VERSION}-installed"
_CHECK = f"import datumaro, sys; sys.exit(0 if datumaro.__version__ == {DATUMARO_VERSION!r} else 1)"


def _clean_env() -> dict[str, str]:
    """The environment without this venv's Python settings, so the other venv stays isolated."""
    env = dict(os.environ)
    for key in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP"):
        env.pop(key, None)
    return env


def _has_datumaro(python: Path) -> bool:
    if not python.exists():
        return False
    proc = subprocess.run([str(python), "-c", _CHECK], capture_output=True, env=_clean_env(),
                          cwd=tempfile.gettempdir())
    return proc.returncode == 0


def _base_python() -> str:
    if sys.version_info[:2] == (3, 11):
        return sys.executable
    found = shutil.which("python3.11")
    if not found:
        raise RuntimeError("python3.11 is needed to create the Datumaro venv; "
                           f"or set {ENV_VAR} to a Python with datumaro=={DATUMARO_VERSION}")
    return found


def _create_venv(python: Path) -> None:
    shutil.rmtree(VENV_DIR, ignore_errors=True)
    print(f"creating {VENV_DIR} with datumaro=={DATUMARO_VERSION} (first time: 2-3 minutes)", file=sys.stderr)
    try:
        for cmd in ([_base_python(), "-m", "venv", str(VENV_DIR)],
                    [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q",
                     f"datumaro=={DATUMARO_VERSION}"]):
            proc = subprocess.run(cmd, capture_output=True, text=True, env=_clean_env())
            if proc.returncode != 0:
                raise RuntimeError(f"{' '.join(cmd)} failed (exit {proc.returncode}):\n"
                                   f"{proc.stdout}{proc.stderr}")
        if not _has_datumaro(python):
            raise RuntimeError(f"datumaro=={DATUMARO_VERSION} is not importable in {python} "
                               "after installing it")
    except BaseException:
        shutil.rmtree(VENV_DIR, ignore_errors=True)
        raise
    STAMP.touch()


@functools.lru_cache(maxsize=1)
def datumaro_python() -> Path:
    """A Python executable that can ``import datumaro`` (version 1.11.1).

    ``$OTX_NLD_DATUMARO_PYTHON`` if set, else ``<repo>/.venv-datumaro/bin/python``, created
    when missing or broken. A file lock makes parallel test workers wait for one install.
    """
    override = os.environ.get(ENV_VAR)
    if override:
        python = Path(override)
        if not _has_datumaro(python):
            raise RuntimeError(f"{ENV_VAR}={override} cannot import datumaro=={DATUMARO_VERSION}")
        return python
    python = VENV_DIR / "bin" / "python"
    if STAMP.is_file() and python.exists():
        return python
    # The lock lives outside the repo (and outside the venv, which may be deleted and rebuilt).
    key = hashlib.sha1(str(REPO).encode()).hexdigest()[:12]
    lock_path = Path(tempfile.gettempdir()) / f"otx-nld-datumaro-venv-{key}.lock"
    with open(lock_path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            # Another worker may have finished the install while this one waited.
            if not (STAMP.is_file() and _has_datumaro(python)):
                _create_venv(python)
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)
    return python


def run_datumaro(script: str, *args: object, check: bool = True,
                 timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run ``script`` (Python source) with Datumaro's interpreter; ``args`` become ``sys.argv[1:]``.

    Raises:
        AssertionError: with the script's stderr, when ``check`` and it exits non-zero.
    """
    proc = subprocess.run([str(datumaro_python()), "-c", script, *map(str, args)], capture_output=True,
                          text=True, env=_clean_env(), cwd=tempfile.gettempdir(), timeout=timeout)
    if check and proc.returncode != 0:
        raise AssertionError(f"Datumaro script failed (exit {proc.returncode}):\n{proc.stderr[-5000:]}")
    return proc


if __name__ == "__main__":
    print(datumaro_python())
