"""Building the fused CPU kernel: keyed folders, one build per machine, timeout fallback, messages, markers."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path
from subprocess import PIPE

import pytest
import torch

from sifa_hub.ops import build, build_kernels, cpu, selected_backend, sifa_attention
from sifa_hub.ops.build import COMPLETE_MARKER, ExtensionSpec, KernelBuildError, build_extension

REPO = Path(__file__).resolve().parents[1]


def make_spec(tmp_path: Path, source: str = "int f() { return 1; }", **kwargs: object) -> ExtensionSpec:
    src = tmp_path / "ext.cpp"
    src.write_text(source)
    return ExtensionSpec("fake_ext", (str(src),), **kwargs)  # type: ignore[arg-type]


def writer(spec: ExtensionSpec, root: Path, delay: float = 0.0, payload: str = "lib") -> list[str]:
    """A stand-in compiler: sleeps ``delay`` seconds, then writes the library file."""
    lib = os.path.join(spec.directory(str(root)), spec.name + build.LIBRARY_SUFFIX)
    code = f"import sys, time; time.sleep({delay}); open(sys.argv[1], 'w').write({payload!r})"
    return [sys.executable, "-c", code, lib]


FAILING = [sys.executable, "-c", "import sys; print('ext.cpp:3:1: error: this command must not run'); sys.exit(1)"]


def test_folder_is_keyed_by_source_flags_isa_and_torch(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spec = make_spec(tmp_path, cflags=("-O3",), isa="avx2")
    directory = spec.directory(str(tmp_path / "root"))
    assert Path(directory).parent == tmp_path / "root" / "sifa_hub"
    name, key = Path(directory).name.rsplit("_", 1)
    assert name == "fake_ext" and len(key) == 16 and int(key, 16) >= 0
    assert spec.key() == make_spec(tmp_path, cflags=("-O3",), isa="avx2").key()  # stable
    others = {
        make_spec(tmp_path, cflags=("-O2",), isa="avx2").key(),
        make_spec(tmp_path, cflags=("-O3",), isa="avx512").key(),
        make_spec(tmp_path, cflags=("-O3",), ldflags=("-fopenmp",), isa="avx2").key(),
    }
    make_spec(tmp_path, source="int f() { return 2; }", cflags=("-O3",), isa="avx2")
    others.add(spec.key())  # same spec object, edited source file
    monkeypatch.setattr(build.torch, "__version__", "0.0.1")
    others.add(spec.key())
    assert len(others | {key}) == 6


def test_root_is_torch_extensions_dir_or_torch_default(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path))
    assert build.build_root() == str(tmp_path)
    monkeypatch.delenv("TORCH_EXTENSIONS_DIR")
    from torch.utils.cpp_extension import get_default_build_root

    assert build.build_root() == get_default_build_root()


def test_timeout_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(build.BUILD_TIMEOUT_ENV, raising=False)
    assert build.build_timeout() == 300.0
    monkeypatch.setenv(build.BUILD_TIMEOUT_ENV, "12.5")
    assert build.build_timeout() == 12.5
    for bad in ("soon", "0", "-3"):
        monkeypatch.setenv(build.BUILD_TIMEOUT_ENV, bad)
        with pytest.raises(ValueError, match=build.BUILD_TIMEOUT_ENV):
            build.build_timeout()


def test_first_build_prints_one_line_and_marks_complete(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = make_spec(tmp_path)
    root = tmp_path / "root"
    path = build_extension(spec, root=str(root), timeout=60, command=writer(spec, root))
    directory = spec.directory(str(root))
    assert path == os.path.join(directory, "fake_ext.so") and Path(path).read_text() == "lib"
    assert (Path(directory) / COMPLETE_MARKER).is_file()
    assert oct((Path(directory) / COMPLETE_MARKER).stat().st_mode & 0o777) == oct(0o666 & ~_umask())
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"sifa_hub: building the fused SIFA CPU kernel (first use, ~40 s; cached in {directory})"]
    assert build_extension(spec, root=str(root), timeout=60, command=FAILING) == path  # cached: nothing runs
    assert capsys.readouterr().err == ""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_interrupted_build_is_rebuilt_from_scratch(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    root = tmp_path / "root"
    directory = Path(spec.directory(str(root)))
    directory.mkdir(parents=True)
    (directory / "fake_ext.so").write_text("half-linked")  # a build killed before the marker was written
    (directory / "fake_ext.o").write_text("stale object")
    assert not build.is_built(spec, str(root))
    path = build_extension(spec, root=str(root), timeout=60, command=writer(spec, root, payload="fresh"))
    assert Path(path).read_text() == "fresh" and not (directory / "fake_ext.o").exists()
    assert build.is_built(spec, str(root))


def test_failed_build_names_the_first_error_and_leaves_no_marker(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    with pytest.raises(KernelBuildError, match=r"status 1: ext\.cpp:3:1: error: this command must not run"):
        build_extension(spec, root=str(tmp_path), timeout=60, command=FAILING)
    assert not build.is_built(spec, str(tmp_path))


def test_timeout_kills_the_compiler_and_releases_the_lock(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    pid_file = tmp_path / "grandchild.pid"
    # The "compiler" starts a grandchild (as ninja starts g++); the timeout must stop the whole group.
    hang = [
        sys.executable,
        "-c",
        "import subprocess, sys, time; p = subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)']);"
        f" open({str(pid_file)!r}, 'w').write(str(p.pid)); time.sleep(60)",
    ]
    start = time.monotonic()
    with pytest.raises(KernelBuildError, match="timed out"):
        build_extension(spec, root=str(tmp_path), timeout=1.5, command=hang)
    assert time.monotonic() - start < 15
    assert not build.is_built(spec, str(tmp_path))
    if pid_file.exists():
        grandchild = int(pid_file.read_text())
        for _ in range(50):
            if not _alive(grandchild):
                break
            time.sleep(0.1)
        assert not _alive(grandchild)
    assert build_extension(spec, root=str(tmp_path), timeout=60, command=writer(spec, tmp_path))  # lock released


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie (killed, not yet reaped by init) counts as stopped
        return f.read().split(")")[-1].split()[0] != "Z"


def _start_slow_build(spec: ExtensionSpec, root: Path, delay: float, results: dict) -> threading.Thread:
    def run() -> None:
        try:
            results["builder"] = build_extension(spec, root=str(root), timeout=60, command=writer(spec, root, delay))
        except Exception as e:  # reported through results, asserted by the test
            results["builder"] = e

    thread = threading.Thread(target=run)
    thread.start()
    directory = Path(spec.directory(str(root)))
    for _ in range(200):  # the folder is created under the lock
        if directory.is_dir():
            break
        time.sleep(0.02)
    return thread


def test_second_builder_waits_then_loads_the_first_ones_build(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = make_spec(tmp_path)
    results: dict = {}
    thread = _start_slow_build(spec, tmp_path, 1.5, results)
    path = build_extension(spec, root=str(tmp_path), timeout=60, command=FAILING)  # must wait, never build
    thread.join()
    assert results["builder"] == path and Path(path).read_text() == "lib"
    err = capsys.readouterr().err
    assert err.count("waiting for another process to build the fused SIFA CPU kernel") == 1
    assert err.count("building the fused SIFA CPU kernel") == 1


def test_waiting_gives_up_at_the_timeout(tmp_path: Path) -> None:
    spec = make_spec(tmp_path)
    results: dict = {}
    thread = _start_slow_build(spec, tmp_path, 3.0, results)
    with pytest.raises(KernelBuildError, match="timed out waiting for another process"):
        build_extension(spec, root=str(tmp_path), timeout=0.5, command=FAILING)
    thread.join()
    assert build.is_built(spec, str(tmp_path))


def test_lock_holds_across_processes(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    spec = make_spec(tmp_path)
    script = textwrap.dedent(
        f"""
        import sys
        from sifa_hub.ops.build import ExtensionSpec, build_extension
        spec = ExtensionSpec("fake_ext", ({spec.sources[0]!r},))
        cmd = {writer(spec, tmp_path, delay=2.0, payload="from-child")!r}
        print(build_extension(spec, root={str(tmp_path)!r}, timeout=60, command=cmd))
        """
    )
    env = dict(os.environ, PYTHONPATH=str(REPO))
    child = subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
    lock = Path(spec.directory(str(tmp_path)) + ".lock")
    for _ in range(600):  # the child imports torch first
        if Path(spec.directory(str(tmp_path))).is_dir():
            break
        time.sleep(0.05)
    assert lock.exists()
    path = build_extension(spec, root=str(tmp_path), timeout=60, command=FAILING)
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0 and out.strip() == path
    assert Path(path).read_text() == "from-child"
    assert "waiting for another process" in capsys.readouterr().err


@pytest.fixture
def fresh_cpu_state(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The CPU backend as in a new process whose extension cache is an empty folder."""
    monkeypatch.setattr(cpu, "_STATE", cpu._BuildState())
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "ext"))
    return tmp_path / "ext"


def test_build_timeout_falls_back_to_pure_pytorch_with_one_warning(
    fresh_cpu_state: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv(build.BUILD_TIMEOUT_ENV, "0.5")  # the real compiler child cannot finish in time
    with caplog.at_level(logging.WARNING, logger="sifa_hub.ops.cpu"):
        name, why = selected_backend("cpu")
    assert name == "torch" and "timed out" in why
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warnings) == 1 and "using the pure-PyTorch backend" in warnings[0] and "\n" not in warnings[0]
    x = torch.randn(1, 4, 3, 4, 4)
    torch.testing.assert_close(sifa_attention(x), sifa_attention(x, backend="torch"))
    assert build_kernels()["cpu"].startswith("unavailable: the build timed out")
    spec = cpu.cpu_extension_spec()
    assert not build.is_built(spec)  # no marker: the next process builds again


def test_build_kernels_reports_the_cached_library() -> None:
    status = build_kernels()
    spec = cpu.cpu_extension_spec()
    assert status["cpu"] == f"C++ extension loaded from {spec.directory()}/sifa_cpu.so"
    assert (Path(spec.directory()) / COMPLETE_MARKER).is_file()
    assert set(status) == {"cpu", "triton"}
    # A new process finds the build: it loads without compiling and without a build message.
    code = "from sifa_hub.ops import build_kernels; print(build_kernels()['cpu'])"
    proc = subprocess.run(
        [sys.executable, "-c", code], env=dict(os.environ, PYTHONPATH=str(REPO)), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == status["cpu"] and "building" not in proc.stderr


@pytest.mark.slow
def test_two_processes_build_the_real_kernel_once(tmp_path: Path) -> None:
    code = (
        "import torch; from sifa_hub.ops import sifa_attention; "
        "print(sifa_attention(torch.ones(1, 2, 2, 3, 3), backend='cpu').sum().item())"
    )
    env = dict(os.environ, PYTHONPATH=str(REPO), TORCH_EXTENSIONS_DIR=str(tmp_path))
    procs = [
        subprocess.Popen([sys.executable, "-c", code], env=env, stdout=PIPE, stderr=PIPE, text=True) for _ in range(2)
    ]
    outputs = [p.communicate(timeout=600) for p in procs]
    assert all(p.returncode == 0 for p in procs), [err for _, err in outputs]
    errs = "".join(err for _, err in outputs)
    assert errs.count("building the fused SIFA CPU kernel") == 1
    assert errs.count("waiting for another process") == 1
    assert outputs[0][0] == outputs[1][0]
    assert len(list((tmp_path / "sifa_hub").glob("sifa_cpu_*/" + COMPLETE_MARKER))) == 1
