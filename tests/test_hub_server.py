"""The offline Hub (tests/hub_server.py) against the real huggingface_hub client: round trip and rejections."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest
from hub_server import HubServer, git_blob_sha1
from huggingface_hub import (
    CommitOperationAdd,
    CommitOperationDelete,
    HfApi,
    get_hf_file_metadata,
    hf_hub_download,
    hf_hub_url,
    model_info,
    snapshot_download,
)
from huggingface_hub.errors import (
    EntryNotFoundError,
    HfHubHTTPError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)

REPO = "sifa-org/tiny"


def _folder(root: Path, weights: bytes = b"\x00\x01" * 512) -> Path:
    root.mkdir()
    (root / "README.md").write_text("---\nlicense: apache-2.0\ntags: [video-classification]\n---\n# Tiny\n")
    (root / "model.safetensors").write_bytes(weights)
    (root / "config.json").write_text('{"architecture": "x"}')
    (root / "code").mkdir()
    (root / "code" / "a.py").write_text("A = 1\n")
    return root


def test_create_upload_download_info(hub_server: HubServer, tmp_path: Path) -> None:
    api = HfApi()
    url = api.create_repo(REPO)
    assert url == f"{hub_server.url}/{REPO}"
    folder = _folder(tmp_path / "f")
    commit = api.upload_folder(repo_id=REPO, folder_path=folder, commit_message="add model")

    history = hub_server.commit_history(REPO)
    assert [c.title for c in history] == ["add model", "initial commit"]
    assert commit.oid == history[0].oid and len(commit.oid) == 40 and int(commit.oid, 16) >= 0

    # single file: content and the headers hf_hub_download relies on
    path = hf_hub_download(REPO, "model.safetensors")
    assert Path(path).read_bytes() == (folder / "model.safetensors").read_bytes()
    lfs = get_hf_file_metadata(hf_hub_url(REPO, "model.safetensors"))
    assert lfs.commit_hash == commit.oid
    assert lfs.etag == hashlib.sha256((folder / "model.safetensors").read_bytes()).hexdigest()  # LFS-like
    assert lfs.size == 1024
    regular = get_hf_file_metadata(hf_hub_url(REPO, "config.json"))
    assert regular.etag == git_blob_sha1((folder / "config.json").read_bytes())  # plain git blob

    # whole snapshot, at main and at the commit id
    snap = Path(snapshot_download(REPO))
    assert sorted(p.relative_to(snap).as_posix() for p in snap.rglob("*") if p.is_file()) == [
        ".gitattributes",
        "README.md",
        "code/a.py",
        "config.json",
        "model.safetensors",
    ]
    assert Path(snapshot_download(REPO, revision=commit.oid)).name == commit.oid

    info = model_info(REPO, files_metadata=True)
    assert info.sha == commit.oid and info.private is False
    assert {s.rfilename for s in info.siblings} == {
        ".gitattributes",
        "README.md",
        "code/a.py",
        "config.json",
        "model.safetensors",
    }
    assert info.card_data.license == "apache-2.0" and info.tags == ["video-classification"]
    assert next(s for s in info.siblings if s.rfilename == "model.safetensors").lfs.size == 1024
    refs = api.list_repo_refs(REPO)
    assert [(b.name, b.target_commit) for b in refs.branches] == [("main", commit.oid)]


def test_branches_revisions_and_deletes(hub_server: HubServer, tmp_path: Path) -> None:
    api = HfApi()
    api.create_repo(REPO)
    first = api.upload_folder(repo_id=REPO, folder_path=_folder(tmp_path / "f"))
    api.create_branch(REPO, branch="dev")
    dev = api.create_commit(
        REPO,
        [CommitOperationAdd("extra.txt", b"dev only"), CommitOperationDelete("code/")],
        commit_message="dev work",
        revision="dev",
    )
    assert api.model_info(REPO, revision="dev").sha == dev.oid
    assert api.model_info(REPO).sha == first.oid  # main untouched
    assert {s.rfilename for s in api.model_info(REPO, revision="dev").siblings} == {
        ".gitattributes",
        "README.md",
        "config.json",
        "model.safetensors",
        "extra.txt",
    }
    assert Path(hf_hub_download(REPO, "extra.txt", revision="dev")).read_bytes() == b"dev only"
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "extra.txt")  # not on main
    assert {b.name: b.target_commit for b in api.list_repo_refs(REPO).branches} == {"main": first.oid, "dev": dev.oid}
    assert [c.commit_id for c in api.list_repo_commits(REPO, revision="dev")][:2] == [dev.oid, first.oid]
    api.create_branch(REPO, branch="dev", exist_ok=True)
    with pytest.raises(HfHubHTTPError) as err:
        api.create_branch(REPO, branch="dev")
    assert err.value.response.status_code == 409
    # unchanged files are skipped client-side thanks to the preupload "oid": no empty commit
    again = api.upload_folder(repo_id=REPO, folder_path=tmp_path / "f")
    assert again.oid == first.oid and len(hub_server.commit_history(REPO)) == 2


def test_rejections(hub_server: HubServer, tmp_path: Path) -> None:
    api = HfApi()
    api.create_repo(REPO)
    api.create_repo(f"{HubServer.org}/secret", private=True)
    api.upload_file(path_or_fileobj=b"s", path_in_repo="s.txt", repo_id=f"{HubServer.org}/secret")

    with pytest.raises(RepositoryNotFoundError) as err:
        model_info("sifa-org/missing")
    assert err.value.response.status_code == 404
    with pytest.raises(RepositoryNotFoundError):
        hf_hub_download("sifa-org/missing", "config.json")
    with pytest.raises(RevisionNotFoundError):
        model_info(REPO, revision="nope")
    with pytest.raises(RevisionNotFoundError):
        hf_hub_download(REPO, ".gitattributes", revision="nope")
    with pytest.raises(RevisionNotFoundError):  # commits go to existing branches only
        api.create_commit(REPO, [CommitOperationAdd("a", b"a")], commit_message="m", revision="nope")
    with pytest.raises(EntryNotFoundError):
        hf_hub_download(REPO, "missing.bin")

    # writes need a valid token with rights on the namespace
    for token, status in ((False, 401), ("hf_not_a_token", 401), (HubServer.other_token, 403)):
        with pytest.raises(HfHubHTTPError) as err:
            HfApi(token=token).create_repo("sifa-org/other")
        assert err.value.response.status_code == status
        with pytest.raises(HfHubHTTPError) as err:
            HfApi(token=token).create_commit(REPO, [CommitOperationAdd("a", b"a")], commit_message="m")
        assert err.value.response.status_code == status
    with pytest.raises(HfHubHTTPError) as err:
        api.create_repo(REPO)
    assert err.value.response.status_code == 409
    assert api.create_repo(REPO, exist_ok=True) == f"{hub_server.url}/{REPO}"

    # private repos: no token -> 401, someone else's token -> 404; both read as "repo not found"
    assert HfApi().model_info(f"{HubServer.org}/secret").private is True
    for token, status in ((False, 401), (HubServer.other_token, 404)):
        with pytest.raises(RepositoryNotFoundError) as err:
            HfApi(token=token).model_info(f"{HubServer.org}/secret")
        assert err.value.response.status_code == status
        with pytest.raises(RepositoryNotFoundError):
            hf_hub_download(f"{HubServer.org}/secret", "s.txt", token=token, cache_dir=tmp_path / "c")

    # stale parent commit -> 412; invalid model-index in a README -> rejected before upload
    head = api.model_info(REPO).sha
    api.create_commit(REPO, [CommitOperationAdd("b", b"b")], commit_message="b")
    with pytest.raises(HfHubHTTPError) as err:
        api.create_commit(REPO, [CommitOperationAdd("c", b"c")], commit_message="c", parent_commit=head)
    assert err.value.response.status_code == 412
    bad_card = b"---\nmodel-index:\n- name: x\n  results:\n  - task: {type: video-classification}\n---\n"
    with pytest.raises(ValueError, match="dataset"):
        api.create_commit(REPO, [CommitOperationAdd("README.md", bad_card)], commit_message="bad card")
