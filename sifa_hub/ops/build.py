"""Building C++ extensions once per machine: keyed build folders, a cross-process lock, a timeout.

A build folder is ``<TORCH_EXTENSIONS_DIR or torch's default root>/sifa_hub/<name>_<key>`` where ``key`` hashes
the sources, the compiler flags, the compiler, the torch and Python versions and the CPU's instruction set: every
environment that would compile something different gets its own folder, so environments sharing a cache never
rebuild each other's kernel. A folder is used only when it holds the ``complete`` marker, written after the
library was linked: an interrupted build is detected and rebuilt from scratch, never half-used.

One process per machine builds (an ``fcntl`` lock on ``<folder>.lock``, held for the whole build); the others
print one line, wait and then load the finished library. The compiler runs in a child process so that the
timeout (``SIFA_HUB_BUILD_TIMEOUT`` seconds, default 300, waiting included) can stop it; a timeout or a failed
build raises :class:`KernelBuildError` and the caller falls back to another backend.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import hashlib
import importlib.util
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from types import ModuleType

import torch

__all__ = [
    "BUILD_TIMEOUT_ENV",
    "COMPLETE_MARKER",
    "DEFAULT_BUILD_TIMEOUT",
    "ExtensionSpec",
    "KernelBuildError",
    "build_extension",
    "build_root",
    "build_timeout",
    "import_extension",
    "is_built",
]

BUILD_TIMEOUT_ENV = "SIFA_HUB_BUILD_TIMEOUT"
DEFAULT_BUILD_TIMEOUT = 300.0
COMPLETE_MARKER = "complete"
LIBRARY_SUFFIX = ".so"
_POLL_S = 0.2


class KernelBuildError(RuntimeError):
    """A kernel could not be built or loaded (compiler error, timeout); the message says why in one line."""


@dataclasses.dataclass(frozen=True)
class ExtensionSpec:
    """What is compiled: everything that makes two builds differ is part of :meth:`key`.

    Args:
        name: extension (and Python module) name.
        sources: C++ source files.
        cflags: extra compiler flags.
        ldflags: extra linker flags.
        isa: instruction set the flags target (e.g. ``"avx512"``), part of the key.
    """

    name: str
    sources: tuple[str, ...]
    cflags: tuple[str, ...] = ()
    ldflags: tuple[str, ...] = ()
    isa: str = "generic"

    def key(self) -> str:
        """16 hex digits of SHA-256 over sources, flags, compiler, ISA, torch and Python versions."""
        h = hashlib.sha256()
        for path in self.sources:
            with open(path, "rb") as f:
                h.update(f.read())
        meta = {
            "cflags": self.cflags,
            "ldflags": self.ldflags,
            "isa": self.isa,
            "cxx": os.environ.get("CXX", "c++"),
            "torch": torch.__version__,
            "python": sys.version_info[:2],
        }
        h.update(json.dumps(meta, sort_keys=True).encode())
        return h.hexdigest()[:16]

    def directory(self, root: str | None = None) -> str:
        """The build folder ``<root>/sifa_hub/<name>_<key>`` (root: :func:`build_root` by default)."""
        return os.path.join(root or build_root(), "sifa_hub", f"{self.name}_{self.key()}")


def build_root() -> str:
    """``$TORCH_EXTENSIONS_DIR``, else torch's default extension root (a per-user cache folder)."""
    root = os.environ.get("TORCH_EXTENSIONS_DIR")
    if root:
        return root
    from torch.utils.cpp_extension import get_default_build_root  # logs a CUDA_HOME line on import: only here

    return get_default_build_root()


def build_timeout() -> float:
    """Seconds a build (waiting included) may take: ``$SIFA_HUB_BUILD_TIMEOUT``, default 300."""
    raw = os.environ.get(BUILD_TIMEOUT_ENV, "")
    if not raw:
        return DEFAULT_BUILD_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"{BUILD_TIMEOUT_ENV} must be a number of seconds, got {raw!r}") from None
    if value <= 0:
        raise ValueError(f"{BUILD_TIMEOUT_ENV} must be positive, got {raw!r}")
    return value


def _library(spec: ExtensionSpec, directory: str) -> str:
    return os.path.join(directory, spec.name + LIBRARY_SUFFIX)


def _is_complete(spec: ExtensionSpec, directory: str) -> bool:
    return os.path.isfile(os.path.join(directory, COMPLETE_MARKER)) and os.path.isfile(_library(spec, directory))


def is_built(spec: ExtensionSpec, root: str | None = None) -> bool:
    """Whether a complete build of ``spec`` is in the cache (no compiler needed to load it)."""
    return _is_complete(spec, spec.directory(root))


def _write_marker(directory: str, text: str) -> None:
    """Write ``<directory>/complete`` atomically (temporary sibling, fsync, rename), mode 0644 under umask 022.

    (``sifa_hub.utils.io`` is a higher layer than the operator package, hence this small local writer.)
    """
    fd, tmp = tempfile.mkstemp(prefix=f".{COMPLETE_MARKER}.tmp-", dir=directory)
    try:
        with os.fdopen(fd, "w") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o666 & ~mask)
        os.replace(tmp, os.path.join(directory, COMPLETE_MARKER))
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def compile_command(spec: ExtensionSpec, directory: str) -> list[str]:
    """The child process that compiles ``spec`` into ``directory`` with ``torch.utils.cpp_extension.load``."""
    args = {
        "name": spec.name,
        "sources": list(spec.sources),
        "extra_cflags": list(spec.cflags),
        "extra_ldflags": list(spec.ldflags),
        "build_directory": directory,
    }
    code = (
        "import json, sys\nfrom torch.utils.cpp_extension import load\n"
        f"load(**json.loads({json.dumps(args)!r}), verbose=False)\n"
    )
    return [sys.executable, "-c", code]


@contextlib.contextmanager
def _machine_lock(path: str, deadline: float, directory: str) -> Iterator[None]:
    """Hold an exclusive ``fcntl`` lock on ``path``; wait (one stderr line) until ``deadline``."""
    with open(path, "a") as handle:
        waited = False
        while True:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if not waited:
                    waited = True
                    print(
                        f"sifa_hub: waiting for another process to build the fused SIFA CPU kernel in {directory}",
                        file=sys.stderr,
                        flush=True,
                    )
                if time.monotonic() >= deadline:
                    raise KernelBuildError(
                        f"timed out waiting for another process building {directory} ({BUILD_TIMEOUT_ENV})"
                    ) from None
                time.sleep(_POLL_S)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _run_compiler(command: Sequence[str], directory: str, deadline: float) -> None:
    """Run the compiler child in its own process group; kill the whole group at ``deadline``."""
    log_path = os.path.join(directory, "build.log")
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(list(command), stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            rc = proc.wait(timeout=max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise KernelBuildError(
                f"the build timed out (set {BUILD_TIMEOUT_ENV} to allow more than its current limit)"
            ) from None
        except BaseException:  # Ctrl-C: stop the compiler too, the folder stays incomplete
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            raise
    if rc != 0:
        with open(log_path, errors="replace") as f:
            lines = [line.strip() for line in f if line.strip()]
        first_error = next((line for line in lines if "error" in line.lower()), lines[-1] if lines else "")
        raise KernelBuildError(f"compiler exited with status {rc}: {first_error[:300]} (log: {log_path})")


def build_extension(
    spec: ExtensionSpec,
    *,
    root: str | None = None,
    timeout: float | None = None,
    command: Sequence[str] | None = None,
) -> str:
    """Build ``spec`` unless a complete build exists; return the library's path.

    Args:
        spec: what to compile.
        root: extension root (default :func:`build_root`).
        timeout: seconds for waiting plus building (default :func:`build_timeout`).
        command: the compiler child process (default :func:`compile_command`); it must write
            ``<folder>/<name>.so``.

    Raises:
        KernelBuildError: the build failed or did not finish within ``timeout``.
    """
    directory = spec.directory(root)
    if _is_complete(spec, directory):
        return _library(spec, directory)
    deadline = time.monotonic() + (build_timeout() if timeout is None else timeout)
    os.makedirs(os.path.dirname(directory), exist_ok=True)
    with _machine_lock(directory + ".lock", deadline, directory):
        if _is_complete(spec, directory):  # another process finished it while this one waited
            return _library(spec, directory)
        shutil.rmtree(directory, ignore_errors=True)  # leftovers of an interrupted build are never reused
        os.makedirs(directory)
        print(
            f"sifa_hub: building the fused SIFA CPU kernel (first use, ~40 s; cached in {directory})",
            file=sys.stderr,
            flush=True,
        )
        _run_compiler(command or compile_command(spec, directory), directory, deadline)
        if not os.path.isfile(_library(spec, directory)):
            raise KernelBuildError(f"the build finished without writing {_library(spec, directory)}")
        _write_marker(directory, json.dumps({"key": spec.key(), "torch": torch.__version__}) + "\n")
    return _library(spec, directory)


def import_extension(name: str, path: str) -> ModuleType:
    """Import the compiled Python extension module ``name`` from the library at ``path``."""
    module_spec = importlib.util.spec_from_file_location(name, path)
    if module_spec is None or module_spec.loader is None:
        raise KernelBuildError(f"cannot import the extension {name} from {path}")
    module = importlib.util.module_from_spec(module_spec)
    module_spec.loader.exec_module(module)
    return module
