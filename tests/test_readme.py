"""The README runs as written: its Python snippets (each in a fresh temporary working directory) and its
``sifa-hub`` command lines (see the section on command lines below)."""

from __future__ import annotations

import json
import re
import shlex
import shutil
from collections.abc import Sequence
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def _section(block: str) -> str:
    text = README.read_text(encoding="utf-8")
    headings = re.findall(r"^## (.+)$", text[: text.index(block)], flags=re.M)
    return headings[-1]


def test_readme_has_the_three_library_sections() -> None:
    sections = {_section(block) for block in _python_blocks()}
    assert {"Use with timm", "Use with torch.hub", "Use with transformers"} <= sections


def _snippet_params() -> list:
    """One parameter per python block; exports to ONNX take a minute here, so that block runs in the slow job."""
    slow = {"Compile and deploy"}
    return [
        pytest.param(b, id=_section(b), marks=[pytest.mark.slow] if _section(b) in slow else [])
        for b in _python_blocks()
    ]


@pytest.mark.parametrize("block", _snippet_params())
def test_readme_snippet_runs(
    block: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> None:
    if 'torch.hub.load("."' in block:  # torch.hub snippets run from a clone's root: give them one
        shutil.copy(ROOT / "hubconf.py", tmp_path / "hubconf.py")
    if _section(block) == "Weight tags":  # the tag's 2D source, served by the offline Hub under its real repo id
        from test_pretrained_tags import serve_2d

        serve_2d(request.getfixturevalue("hub_server"), tmp_path / "hub_files", "resnet50", "a1_in1k")
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "__readme__"}
    exec(compile(block, f"README.md ({_section(block)})", "exec"), namespace)
    CHECKS[_section(block)](namespace)


def _check_timm(ns: dict) -> None:
    assert ns["log_probs"].shape == (2, 5)
    assert ns["loss"].ndim == 0 and bool(ns["loss"].isfinite())


def _check_hub(ns: dict) -> None:
    assert ns["model"].num_classes == 5


def _check_transformers(ns: dict) -> None:
    assert ns["probs"].shape == (1, 2)
    assert type(ns["model"]).__name__ == "SifaForVideoClassification"
    assert Path("sifa-pico/model.safetensors").is_file() and Path("clip.mp4").is_file()


def _check_tags(ns: dict) -> None:
    model = ns["model"]
    head = model.to_timm().fc if hasattr(model, "to_timm") else model.fc
    assert head.out_features == 10
    # the trunk is the served ImageNet network's, inflated (not a random initialisation)
    trunk = model.to_timm() if hasattr(model, "to_timm") else model
    assert trunk.pretrained_cfg["hf_hub_id"] == "timm/resnet50.a1_in1k" and trunk.conv1.weight.shape[2] > 1


def _check_deploy(ns: dict) -> None:
    assert ns["onnx"].max_abs_error < 1e-4 and Path("model.onnx").is_file()
    assert ns["program"] is not None


CHECKS = {
    "Use with timm": _check_timm,
    "Use with torch.hub": _check_hub,
    "Use with transformers": _check_transformers,
    "Weight tags": _check_tags,
    "Compile and deploy": _check_deploy,
}


# ----------------------------------------------------------------------------------------------------------------
# The README's command lines (``sifa-hub ...`` and ``torchrun ... -m sifa_hub.cli ...`` in ```bash blocks).
#
# Every line must parse with the real parser. Beyond that, each line either runs as written (with the options
# below appended to keep it small, and ``ORG`` replaced by the offline Hub's organisation) or is parse-only for a
# stated reason. The inference lines (eval, predict, explain on ``sifa_demo_out/sifa_resnet_pico``) run in the
# default test run on a small exported model put where the demo writes it; the whole chain (demo, train, resume,
# export, push, then inference on the demo's own output) is slow (about a minute) and runs in the slow job.

TINY_OPTIONS = {  # appended to a line (argparse: the last value wins) so that it runs in seconds
    "demo": ["--train-samples", "48", "--val-samples", "16", "--epochs", "1", "--no-progress"],
    "train": ["--motion-train-samples", "32", "--motion-val-samples", "16", "--epochs", "1", "--no-progress"],
    "eval": ["--motion-samples", "32"],
}
FIRST_TRAIN_STOPS = ["--stop-after-steps", "2"]  # the first train line is "interrupted", so that --resume resumes


def _parse_only_reason(argv: list[str], launcher: str) -> str | None:
    """Why a README line cannot run here (it is only parsed), or None when it runs."""
    if launcher == "torchrun":
        return "needs torchrun with several processes (tests/test_train.py runs a 2-rank job)"
    if any(a.startswith("/data/") for a in argv):
        return "needs a real data set under /data"
    if "--from-official" in argv:
        return "no official SIFA weights were ever released to convert"
    return None


def _bash_lines() -> list[str]:
    """Logical lines (backslash continuations joined, comments dropped) of the README's ```bash blocks."""
    lines = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S):
        for line in block.replace("\\\n", " ").splitlines():
            line = re.sub(r"\s#\s.*$", "", line).strip()
            if line and not line.startswith("#"):
                lines.append(line)
    return lines


def _cli_commands() -> list[tuple[str, list[str], str]]:
    """``(line as written, sifa-hub argv, launcher)`` for every CLI invocation in the README."""
    found = []
    for line in _bash_lines():
        for part in (p.strip() for p in line.split("&&")):
            words = shlex.split(part)
            if words[:1] == ["sifa-hub"]:
                found.append((part, words[1:], "sifa-hub"))
            elif words[:1] == ["torchrun"] and "-m" in words:
                module_at = words.index("-m") + 1
                assert words[module_at] in ("sifa_hub", "sifa_hub.cli"), part
                found.append((part, words[module_at + 1 :], "torchrun"))
    return found


COMMANDS_IN_README = _cli_commands()


def test_readme_has_cli_lines() -> None:
    commands = {argv[0] for _, argv, _ in COMMANDS_IN_README}
    assert {"demo", "train", "eval", "predict", "explain", "export", "push"} <= commands


@pytest.mark.parametrize(("line", "argv", "launcher"), COMMANDS_IN_README, ids=[c[0] for c in COMMANDS_IN_README])
def test_readme_cli_line_parses(line: str, argv: list[str], launcher: str) -> None:
    from sifa_hub.cli import build_parser

    args = build_parser().parse_args(argv)  # a bad option raises UsageError naming it
    assert args.command == argv[0] and callable(args.func), line


def _run_line(argv: list[str], capsys: pytest.CaptureFixture[str], extra: Sequence[str] = ()) -> str:
    from sifa_hub.cli import main

    full = [*argv, *TINY_OPTIONS.get(argv[0], []), *extra]
    code = main(full)
    out, err = capsys.readouterr()
    assert code == 0, f"sifa-hub {shlex.join(full)} exited {code}: {err.strip()[-500:]}"
    return out


def _check_inference_outputs(argv: list[str], out: str) -> None:
    if argv[0] == "eval":
        assert "top-1" in out and "top-5" in out
    elif argv[0] == "predict":
        (result,) = json.loads(out)
        assert result["video"] == "clip.mp4" and len(result["predictions"]) == 3
    elif argv[0] == "explain":
        assert Path("sampling.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _write_clip() -> None:
    from sifa_hub.data import MotionDataset, write_video

    write_video("clip.mp4", MotionDataset(1, num_frames=16, size=64, seed=5).clip_uint8(0), fps=8.0)


INFERENCE = [c for c in COMMANDS_IN_README if c[1][0] in ("eval", "predict", "explain")]


def test_readme_inference_lines_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    import timm

    from sifa_hub.data import MotionDataset
    from sifa_hub.publish import export_model

    monkeypatch.chdir(tmp_path)
    _write_clip()
    classes = list(MotionDataset(1, classes=4).classes)  # what `sifa-hub demo` trains on by default
    model = timm.create_model("sifa_resnet_pico", num_classes=len(classes))
    export_model(model, "sifa_demo_out/sifa_resnet_pico", labels=classes, verify=False)
    assert INFERENCE and all(argv[argv.index("--model") + 1].startswith("sifa_demo_out/") for _, argv, _ in INFERENCE)
    for _, argv, _ in INFERENCE:
        _check_inference_outputs(argv, _run_line(argv, capsys))


@pytest.mark.slow
def test_readme_cli_chain_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, hub_server, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    _write_clip()
    ran, parse_only, trained = [], [], False
    for line, argv, launcher in COMMANDS_IN_README:
        reason = _parse_only_reason(argv, launcher)
        if reason is not None:
            parse_only.append((line, reason))
            continue
        argv = [a.replace("ORG/", f"{hub_server.org}/", 1) if a.startswith("ORG/") else a for a in argv]
        stop = FIRST_TRAIN_STOPS if argv[0] == "train" and "--resume" not in argv and not trained else []
        out = _run_line(argv, capsys, stop)
        trained |= argv[0] == "train"
        _check_chain_outputs(argv, out, hub_server)
        ran.append(line)
    assert {"demo", "train", "export", "push", "eval", "predict", "explain"} <= {shlex.split(r)[1] for r in ran}
    assert all(reason for _, reason in parse_only)


def _check_chain_outputs(argv: list[str], out: str, hub_server) -> None:
    if argv[0] == "demo":
        assert Path("sifa_demo_out/sifa_resnet_pico/config.json").is_file()
    elif argv[0] == "train":
        run = Path(argv[argv.index("--output-dir") + 1])
        assert (run / "metrics.json").is_file()
        if "--resume" in argv:
            assert json.loads((run / "metrics.json").read_text())["completed"]
    elif argv[0] == "export":
        assert (Path(argv[argv.index("--out") + 1]) / "model.safetensors").is_file()
    elif argv[0] == "push":
        repo = argv[argv.index("--repo-id") + 1]
        assert hub_server.commit_history(repo) and out.strip().startswith(hub_server.url)
    else:
        _check_inference_outputs(argv, out)
