"""Bad input at the command line (issue 14): one line on stderr, exit 2 (usage) or 1 (runtime), no traceback.

Every case runs the CLI in-process (``main([...])``) and checks the exit status, that stderr is exactly one line
``sifa-hub <command>: error: ...`` naming the problem, and that no traceback is printed (unless ``--debug`` or
``SIFA_HUB_DEBUG=1`` asks for one). Ctrl-C exits 130.
"""

from __future__ import annotations

import io
import json
import pickle
from pathlib import Path

import pytest
import timm
import torch

import sifa_hub.predict
from sifa_hub.cli import main
from sifa_hub.data import MotionDataset, write_video
from sifa_hub.publish import export_model


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def assert_one_line(err: str, command: str, *needles: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"sifa-hub {command}: error: "), lines[0]
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])
    return lines[0]


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A real 8-frame 32×32 mp4 (PyAV)."""
    path = tmp_path_factory.mktemp("clip") / "left.mp4"
    write_video(str(path), MotionDataset(1, num_frames=8, size=32, seed=3).clip_uint8(0), fps=8.0)
    return str(path)


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> str:
    """An exported 4-class c2d_resnet_pico directory (what `sifa-hub push` uploads)."""
    model = timm.create_model("c2d_resnet_pico", num_classes=4, num_frames=4, img_size=16)
    return export_model(model, tmp_path_factory.mktemp("export") / "c2d", labels=["a", "b", "c", "d"])


# ----------------------------------------------------------------------------------------------------------------
# usage errors: exit 2


USAGE_CASES = {
    "no command": ([], "", "COMMAND"),
    "unknown command": (["frobnicate"], "", "frobnicate"),
    "unknown option": (["predict", "a.mp4", "--model", "sifa_resnet_pico", "--bogus"], "", "--bogus"),
    "missing required option": (["predict", "a.mp4"], "predict", "--model"),
    "unknown model": (["predict", "a.mp4", "--model", "no_such_model"], "predict", "unknown model 'no_such_model'"),
    "negative eval batch size": (["eval", "--model", "m", "--data", "motion", "--batch-size", "-4"], "eval", "-4"),
    "negative train batch size": (["train", "--batch-size", "-3"], "train", "--batch-size must be >= 1"),
    "non-integer top-k": (["predict", "a.mp4", "--model", "m", "--top-k", "three"], "predict", "three"),
    "zero clips": (["predict", "a.mp4", "--model", "m", "--clips", "0"], "predict", "--clips"),
    "bad amp": (["predict", "a.mp4", "--model", "m", "--amp", "fp8"], "predict", "fp8"),
    "bad query": (["explain", "a.mp4", "--model", "m", "--query", "3"], "explain", "--query"),
    "one frame to explain": (["explain", "a.mp4", "--model", "m", "--frames", "1"], "explain", "--frames"),
    "unknown optimizer": (["train", "--optimizer", "lion"], "train", "--optimizer must be"),
    "bad demo classes": (["demo", "--classes", "5"], "demo", "classes"),
    "export without target": (["export", "--model", "sifa_resnet_pico"], "export", "--out"),
    "card without repo id": (["export", "--model", "m", "--card-only", "c.md"], "export", "--repo-id"),
    "push without repo id": (["push", "some_dir"], "push", "--repo-id"),
    "bench without benchmark": (["bench"], "bench", "BENCH"),
    "bad bench list": (["bench", "models", "--batch-sizes", "1,x"], "bench models", "--batch-sizes"),
    "zero bench rounds": (["bench", "op", "--rounds", "0"], "bench op", "--rounds"),
}


@pytest.mark.parametrize("case", sorted(USAGE_CASES))
def test_usage_errors_exit_2(case: str, capsys: pytest.CaptureFixture[str]) -> None:
    argv, command, needle = USAGE_CASES[case]
    code, out, err = run(argv, capsys)
    assert code == 2, err
    line = err.strip()
    assert len(line.splitlines()) == 1 and "Traceback" not in err, err
    assert line.startswith(f"sifa-hub {command}".rstrip() + ": error: ") and needle in line, line
    assert out == ""


# ----------------------------------------------------------------------------------------------------------------
# runtime errors: exit 1


def test_missing_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(["predict", str(tmp_path / "missing.mp4"), "--model", "sifa_resnet_pico"], capsys)
    assert code == 1 and out == ""
    assert_one_line(err, "predict", "missing.mp4")


@pytest.mark.parametrize("content", [b"", b"this is a text file, not a video\n" * 20], ids=["zero bytes", "text"])
def test_not_a_video(content: bytes, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(content)
    code, out, err = run(["predict", str(path), "--model", "sifa_resnet_pico", "--device", "cpu"], capsys)
    assert code == 1 and out == ""
    assert_one_line(err, "predict", "clip.mp4")


def test_folder_given_as_video(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    folder = tmp_path / "clips"
    folder.mkdir()
    code, out, err = run(["predict", str(folder), "--model", "sifa_resnet_pico", "--device", "cpu"], capsys)
    assert code == 1 and out == ""
    assert_one_line(err, "predict", str(folder))


def test_truncated_video(clip: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "truncated.mp4"
    path.write_bytes(Path(clip).read_bytes()[:200])  # the header only: no frame can be decoded
    code, out, err = run(["predict", str(path), "--model", "sifa_resnet_pico", "--device", "cpu"], capsys)
    assert code == 1 and out == ""
    assert_one_line(err, "predict", "truncated.mp4")


def test_bad_model_folders(clip: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = run(["predict", clip, "--model", str(empty)], capsys)
    assert code == 1
    assert_one_line(err, "predict", str(empty))
    code, _, err = run(["predict", clip, "--model", str(tmp_path / "nowhere")], capsys)
    assert code == 1
    assert_one_line(err, "predict", "nowhere", "does not exist")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "config.json").write_text("{not json")
    (broken / "model.safetensors").write_bytes(b"\x00" * 16)
    code, _, err = run(["predict", clip, "--model", str(broken), "--device", "cpu"], capsys)
    assert code == 1
    assert_one_line(err, "predict", "config.json")


def test_explain_needs_sifa(clip: str, exported: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["explain", clip, "--model", exported, "--out", "never.png"], capsys)
    assert code == 1
    assert_one_line(err, "explain", "no SIFA modules")
    assert not Path("never.png").exists()


class _Payload:
    """Unpickling this creates ``marker``: the proof that a loader ran code from the file."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple:
        return (open, (str(self.marker), "w"))


def test_unsafe_pickle_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    marker = tmp_path / "PWNED"
    evil = tmp_path / "sifa_r50.pth"
    buffer = io.BytesIO()
    torch.save({"state_dict": {"conv1.weight": torch.zeros(1)}, "payload": _Payload(marker)}, buffer)
    evil.write_bytes(buffer.getvalue())
    argv = ["export", "--model", "sifa_resnet_pico", "--from-official", str(evil), "--out", str(tmp_path / "out")]
    code, out, err = run(argv, capsys)
    assert code == 1 and out == ""
    assert_one_line(err, "export", "sifa_r50.pth")
    assert not marker.exists(), "the pickle's payload ran"
    assert not (tmp_path / "out").exists()
    # a plain pickle (not even a torch file) is refused the same way
    evil.write_bytes(pickle.dumps(_Payload(marker)))
    code, _, err = run(argv, capsys)
    assert code == 1 and not marker.exists()
    assert_one_line(err, "export", "sifa_r50.pth")


def test_export_refuses_a_folder_with_foreign_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "target"
    target.mkdir()
    (target / "notes.txt").write_text("mine")
    code, _, err = run(["export", "--model", "sifa_resnet_pico", "--out", str(target), "--no-verify"], capsys)
    assert code == 1
    assert_one_line(err, "export", str(target))
    assert [p.name for p in target.iterdir()] == ["notes.txt"] and (target / "notes.txt").read_text() == "mine"


def test_export_labels_file_missing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["export", "--model", "sifa_resnet_pico", "--out", str(tmp_path / "o"), "--labels", str(tmp_path / "l.txt")]
    code, _, err = run(argv, capsys)
    assert code == 1
    assert_one_line(err, "export", "l.txt")
    assert not (tmp_path / "o").exists()


def test_push_without_token(exported: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]):
    import huggingface_hub

    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.setattr(huggingface_hub, "get_token", lambda: None)
    code, out, err = run(["push", exported, "--repo-id", "sifa-org/c2d"], capsys)
    assert code == 1 and out == ""
    assert_one_line(err, "push", "token")


def test_push_with_an_invalid_token(exported: str, hub_server, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    monkeypatch.setenv("HF_TOKEN", "hf_not_a_valid_token")
    code, out, err = run(["push", exported, "--repo-id", "sifa-org/c2d"], capsys)
    assert code == 1 and out == ""
    assert_one_line(err, "push", "401")
    assert "sifa-org/c2d" not in hub_server.repos  # refused before anything was created


def test_push_of_a_folder_that_is_not_an_export(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(["push", str(tmp_path), "--repo-id", "sifa-org/c2d"], capsys)
    assert code == 1
    assert_one_line(err, "push", str(tmp_path))


def test_eval_on_missing_data(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    argv = ["eval", "--model", "sifa_resnet_pico", "--data", str(tmp_path / "no_data"), "--device", "cpu"]
    code, _, err = run(argv, capsys)
    assert code == 1
    assert_one_line(err, "eval", "no_data")


def test_unavailable_device(clip: str, capsys: pytest.CaptureFixture[str]) -> None:
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the refusal of --device cuda cannot be observed")
    code, _, err = run(["predict", clip, "--model", "sifa_resnet_pico", "--device", "cuda"], capsys)
    assert code == 1
    assert_one_line(err, "predict", "CUDA")


# ----------------------------------------------------------------------------------------------------------------
# unexpected errors, --debug, Ctrl-C


def _raise(error: BaseException):
    def fake(*args, **kwargs):
        raise error

    return fake


def test_unexpected_error_is_one_line(clip: str, monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sifa_hub.predict, "predict", _raise(RuntimeError("boom\nsecond line")))
    code, out, err = run(["predict", clip, "--model", "sifa_resnet_pico"], capsys)
    assert code == 1 and out == ""
    line = assert_one_line(err, "predict", "RuntimeError: boom second line", "--debug")
    assert line.endswith("(unexpected; rerun with --debug for the traceback)")


@pytest.mark.parametrize("how", ["option", "option after the command", "environment"])
def test_debug_shows_the_traceback(how: str, clip: str, monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sifa_hub.predict, "predict", _raise(ValueError("bad clip")))
    argv = ["predict", clip, "--model", "sifa_resnet_pico"]
    if how == "option":
        argv = ["--debug", *argv]
    elif how == "option after the command":
        argv = [*argv, "--debug"]
    else:
        monkeypatch.setenv("SIFA_HUB_DEBUG", "1")
    code, _, err = run(argv, capsys)
    assert code == 1
    assert "Traceback (most recent call last)" in err and "ValueError: bad clip" in err
    assert err.strip().splitlines()[-1] == "sifa-hub predict: error: bad clip"


def test_ctrl_c_exits_130(clip: str, monkeypatch, capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setattr(sifa_hub.predict, "predict", _raise(KeyboardInterrupt()))
    code, out, err = run(["predict", clip, "--model", "sifa_resnet_pico"], capsys)
    assert code == 130 and out == ""
    assert err.strip() == "sifa-hub predict: interrupted"


def test_success_prints_no_error(clip: str, capsys: pytest.CaptureFixture[str]) -> None:
    # the same door with good input: exit 0, JSON on stdout (the error cases above are not a broken command)
    code, out, err = run(["predict", clip, "--model", "sifa_resnet_pico", "--top-k", "2", "--json"], capsys)
    assert code == 0 and "error" not in err
    assert len(json.loads(out)[0]["predictions"]) == 2
