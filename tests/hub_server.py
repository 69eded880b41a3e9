"""An offline stand-in for the Hugging Face Hub HTTP API, for tests.

It speaks the part of the Hub API that ``huggingface_hub`` 2.x uses to create a repo, commit files
(``create_commit`` / ``upload_folder``), create branches, read repo info, list refs, trees and commits, and
download files (``hf_hub_download`` / ``snapshot_download``, hence ``timm`` and ``transformers`` loads).
Requests and answers follow the client code in ``huggingface_hub/{hf_api,_commit_api,file_download}.py``:

* ``POST /api/repos/create``                     create a model repo (initial commit holds ``.gitattributes``)
* ``POST /api/validate-yaml``                    validate a README's YAML front matter
* ``GET  /api/whoami-v2``                        the token's user
* ``GET  /api/models/{repo}[/revision/{rev}]``   repo info: ``sha``, ``siblings``, ``cardData``, ...
* ``GET  /api/models/{repo}/refs``               branches
* ``GET  /api/models/{repo}/tree/{rev}[/{path}]`` file listing (``recursive`` supported)
* ``GET  /api/models/{repo}/commits/{rev}``      history
* ``POST /api/models/{repo}/preupload/{rev}``    upload modes: always ``"regular"`` so files travel inline,
  base64-encoded in the commit payload (no LFS/Xet transfer is needed)
* ``POST /api/models/{repo}/commit/{rev}``       NDJSON commit (``header``, ``file``, ``deletedFile``,
  ``deletedFolder``); ``lfsFile`` entries are rejected because no LFS object can exist here
* ``POST /api/models/{repo}/branch/{branch}``    create a branch
* ``HEAD|GET /{repo}/resolve/{rev}/{path}``      file metadata / content with ``X-Repo-Commit``, ``ETag``,
  ``Content-Length``; files matched by the repo's ``.gitattributes`` LFS rules are served like LFS objects
  (``ETag`` = sha256, ``X-Linked-Etag``, ``X-Linked-Size``)

It rejects what the Hub rejects in these calls: unknown repo -> 404 ``RepoNotFound``; unknown revision ->
404 ``RevisionNotFound``; missing file -> 404 ``EntryNotFound``; writes without a valid token -> 401, with a
token lacking rights on the namespace -> 403; private repo reads without a token -> 401, with a foreign
token -> 404 ``RepoNotFound``; stale ``parentCommit`` -> 412; existing repo/branch -> 409; malformed
payloads -> 400. Only model repos exist; anything else answers 404.

Commit ids are sha1 digests of the commit's content (tree, parent, author, date, message), like git's.
Blobs live on disk under the server's root folder, everything else in memory.

``huggingface_hub`` copies ``HF_ENDPOINT`` into module constants at import time, so pointing an already
imported client at this server needs :func:`patch_hub_client`; a subprocess gets :meth:`HubServer.env`.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import os
import re
import threading
from dataclasses import dataclass, field
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import yaml

__all__ = ["DEFAULT_GITATTRIBUTES", "HubError", "HubServer", "patch_hub_client"]

DEFAULT_GITATTRIBUTES = """\
*.bin filter=lfs diff=lfs merge=lfs -text
*.ckpt filter=lfs diff=lfs merge=lfs -text
*.h5 filter=lfs diff=lfs merge=lfs -text
*.msgpack filter=lfs diff=lfs merge=lfs -text
*.npz filter=lfs diff=lfs merge=lfs -text
*.onnx filter=lfs diff=lfs merge=lfs -text
*.pt filter=lfs diff=lfs merge=lfs -text
*.pth filter=lfs diff=lfs merge=lfs -text
*.safetensors filter=lfs diff=lfs merge=lfs -text
*.tar.gz filter=lfs diff=lfs merge=lfs -text
*.zip filter=lfs diff=lfs merge=lfs -text
"""

_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_BRANCH_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/-]{0,127}$")
_SHA1_RE = re.compile(r"^[0-9a-f]{40}$")


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: ``sha1(b"blob <size>\\0" + data)``."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="microseconds").replace("+00:00", "Z")


class HubError(Exception):
    """An HTTP error answer: status, message, ``X-Error-Code`` (may be None) and extra JSON body fields."""

    def __init__(self, status: int, message: str, code: str | None = None, **body: Any) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code
        self.body = {"error": message, **body}


@dataclass
class Commit:
    """One commit: ``files`` maps a path to the sha256 of its content (the blob key on disk)."""

    oid: str
    parent: str | None
    title: str
    message: str
    author: str
    date: str
    files: dict[str, str]


@dataclass
class Repo:
    """A model repo: visibility, branches (name -> commit oid) and every commit ever made."""

    repo_id: str
    private: bool
    created_at: str
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, Commit] = field(default_factory=dict)

    @property
    def namespace(self) -> str:
        return self.repo_id.split("/")[0]


def _front_matter(text: str) -> dict[str, Any]:
    """Parse a README's YAML front matter; raise :class:`HubError` 400 when it is not a mapping."""
    match = re.match(r"^\s*---\r?\n(.*?)\r?\n---\s*(\r?\n|$)", text, flags=re.DOTALL)
    if match is None:
        return {}
    try:
        data = yaml.safe_load(match.group(1))
    except yaml.YAMLError as e:
        raise HubError(400, f"Invalid YAML in README.md metadata: {e}") from e
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise HubError(400, "README.md metadata must be a YAML mapping")
    return data


def _check_model_index(meta: dict[str, Any]) -> None:
    """The structural rules the Hub enforces on ``model-index`` (raise :class:`HubError` 400)."""
    index = meta.get("model-index")
    if index is None:
        return
    if not isinstance(index, list):
        raise HubError(400, '"model-index" must be an array')
    for entry in index:
        if not isinstance(entry, dict) or not isinstance(entry.get("name"), str):
            raise HubError(400, '"model-index[].name" is required and must be a string')
        for result in entry.get("results", []):
            if not isinstance(result, dict):
                raise HubError(400, '"model-index[].results[]" must be an object')
            task, dataset, metrics = result.get("task"), result.get("dataset"), result.get("metrics")
            if not isinstance(task, dict) or not isinstance(task.get("type"), str):
                raise HubError(400, '"model-index[].results[].task.type" is required')
            if not isinstance(dataset, dict) or not all(isinstance(dataset.get(k), str) for k in ("name", "type")):
                raise HubError(400, '"model-index[].results[].dataset" needs "name" and "type"')
            if not isinstance(metrics, list) or not metrics:
                raise HubError(400, '"model-index[].results[].metrics" must be a non-empty array')
            for metric in metrics:
                if not isinstance(metric, dict) or not isinstance(metric.get("type"), str) or "value" not in metric:
                    raise HubError(400, '"model-index[].results[].metrics[]" needs "type" and "value"')


class HubServer:
    """A local Hub: ``with HubServer(root) as hub: ...`` serves on ``hub.url`` from a background thread.

    Args:
        root: folder for blobs (created if missing).
        tokens: token -> user name. Default: :attr:`write_token` for :attr:`user` and :attr:`other_token` for a
            user ``"other"`` who belongs to no organisation.
        orgs: organisation -> member names. Default: ``{"sifa-org": {"sifa-tester"}}``.
    """

    write_token = "hf_sifa_write"
    other_token = "hf_sifa_other"
    user = "sifa-tester"
    org = "sifa-org"

    def __init__(
        self,
        root: str | os.PathLike[str],
        tokens: dict[str, str] | None = None,
        orgs: dict[str, set[str]] | None = None,
    ) -> None:
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        self.tokens = dict(tokens) if tokens is not None else {self.write_token: self.user, self.other_token: "other"}
        self.orgs = {k: set(v) for k, v in (orgs if orgs is not None else {self.org: {self.user}}).items()}
        self.repos: dict[str, Repo] = {}
        self.log: list[tuple[str, str, int]] = []  # (method, path, status) of every request
        self._blob_meta: dict[str, tuple[str, int]] = {}  # sha256 -> (git sha1, size)
        self._lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("HubServer is not started")
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def start(self) -> HubServer:
        """Bind a free port on 127.0.0.1 and serve from a daemon thread."""
        handler = type("_BoundHandler", (_Handler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="hub-server", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Shut the server down and join its thread."""
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
            self._httpd = None
        if self._thread is not None:
            self._thread.join(timeout=10)
            self._thread = None

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def env(self, cache_dir: str | os.PathLike[str], token: str | None = None) -> dict[str, str]:
        """Environment variables that point a fresh process's ``huggingface_hub`` at this server."""
        return {
            "HF_ENDPOINT": self.url,
            "HF_TOKEN": token if token is not None else self.write_token,
            "HF_HUB_CACHE": os.fspath(cache_dir),
            "HF_HUB_OFFLINE": "0",
            "HF_HUB_DISABLE_TELEMETRY": "1",
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        }

    # ------------------------------------------------------------------ inspection helpers for tests
    def commit_history(self, repo_id: str, revision: str = "main") -> list[Commit]:
        """Commits reachable from ``revision``, newest first."""
        with self._lock:
            repo = self.repos[repo_id]
            commit: Commit | None = self._resolve(repo, revision)
            out = []
            while commit is not None:
                out.append(commit)
                commit = repo.commits.get(commit.parent) if commit.parent else None
            return out

    def read_file(self, repo_id: str, path: str, revision: str = "main") -> bytes:
        """Content of ``path`` at ``revision`` (KeyError if absent)."""
        with self._lock:
            commit = self._resolve(self.repos[repo_id], revision)
            if commit is None or path not in commit.files:
                raise KeyError(f"{repo_id}@{revision}: {path}")
            return self._blob_path(commit.files[path]).read_bytes()

    # ------------------------------------------------------------------ storage
    def _blob_path(self, sha256: str) -> Path:
        return self.root / "blobs" / sha256

    def _store_blob(self, data: bytes) -> str:
        sha256 = hashlib.sha256(data).hexdigest()
        path = self._blob_path(sha256)
        if not path.exists():
            tmp = path.with_suffix(f".tmp{threading.get_ident()}")
            tmp.write_bytes(data)
            os.replace(tmp, path)
        self._blob_meta[sha256] = (git_blob_sha1(data), len(data))
        return sha256

    def _meta(self, sha256: str) -> tuple[str, int]:
        if sha256 not in self._blob_meta:
            self._store_blob(self._blob_path(sha256).read_bytes())
        return self._blob_meta[sha256]

    def _lfs_patterns(self, commit: Commit) -> list[str]:
        if ".gitattributes" not in commit.files:
            return []
        text = self._blob_path(commit.files[".gitattributes"]).read_text(encoding="utf-8", errors="replace")
        patterns = []
        for line in text.splitlines():
            parts = line.split()
            if len(parts) >= 2 and not parts[0].startswith("#") and "filter=lfs" in parts[1:]:
                patterns.append(parts[0])
        return patterns

    def _is_lfs(self, commit: Commit, path: str) -> bool:
        name = path.rsplit("/", 1)[-1]
        return any(
            fnmatch.fnmatchcase(path if "/" in pat else name, pat.lstrip("/")) for pat in self._lfs_patterns(commit)
        )

    def _new_commit(
        self, repo: Repo, parent: Commit | None, files: dict[str, str], summary: str, description: str, author: str
    ) -> Commit:
        date = _now()
        tree = "\n".join(f"{p} {self._meta(files[p])[0]}" for p in sorted(files))
        tree_oid = hashlib.sha1(tree.encode()).hexdigest()
        message = summary + (f"\n\n{description}" if description else "")
        body = f"tree {tree_oid}\nparent {parent.oid if parent else ''}\nauthor {author} {date}\n\n{message}"
        commit = Commit(
            hashlib.sha1(body.encode()).hexdigest(),
            parent.oid if parent else None,
            summary,
            description,
            author,
            date,
            dict(files),
        )
        repo.commits[commit.oid] = commit
        return commit

    @staticmethod
    def _resolve(repo: Repo, revision: str) -> Commit | None:
        if revision.startswith("refs/heads/"):
            revision = revision[len("refs/heads/") :]
        if revision in repo.branches:
            return repo.commits[repo.branches[revision]]
        if _SHA1_RE.match(revision) and revision in repo.commits:
            return repo.commits[revision]
        return None

    # ------------------------------------------------------------------ auth
    def _user(self, headers: Any) -> str | None:
        auth = headers.get("Authorization")
        if auth is None:
            return None
        token = auth[len("Bearer ") :] if auth.startswith("Bearer ") else ""
        if token not in self.tokens:
            raise HubError(401, "Invalid credentials in Authorization header")
        return self.tokens[token]

    def _can_write(self, user: str, namespace: str) -> bool:
        return user == namespace or user in self.orgs.get(namespace, set())

    def _repo_for_read(self, repo_id: str, user: str | None) -> Repo:
        repo = self.repos.get(repo_id)
        if repo is None:
            raise HubError(404, "Repository not found", "RepoNotFound")
        if repo.private and (user is None or not self._can_write(user, repo.namespace)):
            raise HubError(401 if user is None else 404, "Repository not found", "RepoNotFound")
        return repo

    def _repo_for_write(self, repo_id: str, user: str | None) -> Repo:
        if user is None:
            raise HubError(401, "You must be authenticated to write to a repository")
        repo = self._repo_for_read(repo_id, user)
        if not self._can_write(user, repo.namespace):
            raise HubError(403, f"You don't have the rights to write to {repo_id}")
        return repo

    def _commit_for(self, repo: Repo, revision: str) -> Commit:
        commit = self._resolve(repo, revision)
        if commit is None:
            raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
        return commit

    # ------------------------------------------------------------------ endpoints
    def create_repo(self, user: str | None, body: dict[str, Any], base_url: str) -> dict[str, Any]:
        if user is None:
            raise HubError(401, "You must be authenticated to create a repository")
        name, namespace = body.get("name"), body.get("organization") or user
        repo_type = body.get("type") or "model"
        if repo_type != "model":
            raise HubError(400, f"this test Hub only hosts model repos, not {repo_type!r}")
        if not isinstance(name, str) or not _NAME_RE.match(name) or "--" in name or ".." in name:
            raise HubError(400, f"Invalid repo name: {name!r}")
        if not self._can_write(user, namespace):
            raise HubError(403, f"You don't have the rights to create a model under the namespace {namespace!r}")
        visibility = body.get("visibility", "public")
        if visibility not in ("public", "private"):
            raise HubError(400, f"Invalid visibility: {visibility!r}")
        repo_id = f"{namespace}/{name}"
        url = f"{base_url}/{repo_id}"
        with self._lock:
            if repo_id in self.repos:
                raise HubError(409, "You already created this model repo", url=url)
            repo = Repo(repo_id, visibility == "private", _now())
            files = {".gitattributes": self._store_blob(DEFAULT_GITATTRIBUTES.encode())}
            commit = self._new_commit(repo, None, files, "initial commit", "", "system")
            repo.branches["main"] = commit.oid
            self.repos[repo_id] = repo
        return {"url": url, "name": repo_id, "id": hashlib.sha1(repo_id.encode()).hexdigest()[:24]}

    def repo_info(self, user: str | None, repo_id: str, revision: str, blobs: bool) -> dict[str, Any]:
        with self._lock:
            repo = self._repo_for_read(repo_id, user)
            commit = self._commit_for(repo, revision)
            siblings = []
            for path in sorted(commit.files):
                entry: dict[str, Any] = {"rfilename": path}
                if blobs:
                    oid, size = self._meta(commit.files[path])
                    entry.update(size=size, blobId=oid)
                    if self._is_lfs(commit, path):
                        entry["lfs"] = {"size": size, "sha256": commit.files[path], "pointerSize": 134}
                siblings.append(entry)
            meta: dict[str, Any] = {}
            if "README.md" in commit.files:
                meta = _front_matter(self._blob_path(commit.files["README.md"]).read_text(encoding="utf-8"))
            info: dict[str, Any] = {
                "_id": hashlib.sha1(repo_id.encode()).hexdigest()[:24],
                "id": repo_id,
                "modelId": repo_id,
                "author": repo.namespace,
                "sha": commit.oid,
                "lastModified": commit.date,
                "createdAt": repo.created_at,
                "private": repo.private,
                "disabled": False,
                "gated": False,
                "downloads": 0,
                "likes": 0,
                "tags": list(meta.get("tags") or []),
                "siblings": siblings,
            }
            if meta:
                info["cardData"] = meta
                for key in ("pipeline_tag", "library_name"):
                    if key in meta:
                        info[key] = meta[key]
                if "model-index" in meta:
                    info["model-index"] = meta["model-index"]
            return info

    def refs(self, user: str | None, repo_id: str, include_prs: bool) -> dict[str, Any]:
        with self._lock:
            repo = self._repo_for_read(repo_id, user)
            branches = [{"name": b, "ref": f"refs/heads/{b}", "targetCommit": c} for b, c in repo.branches.items()]
        out: dict[str, Any] = {"branches": branches, "converts": [], "tags": []}
        if include_prs:
            out["pullRequests"] = []
        return out

    def tree(self, user: str | None, repo_id: str, revision: str, path: str, recursive: bool) -> list[dict]:
        with self._lock:
            commit = self._commit_for(self._repo_for_read(repo_id, user), revision)
            prefix = f"{path.strip('/')}/" if path.strip("/") else ""
            if prefix and not any(p.startswith(prefix) for p in commit.files):
                raise HubError(404, f"{path} does not exist on {revision}", "EntryNotFound")
            entries: dict[str, dict[str, Any]] = {}
            for p in sorted(commit.files):
                if not p.startswith(prefix):
                    continue
                rest = p[len(prefix) :].split("/")
                for depth in range(1, len(rest)):  # folders on the way
                    folder = prefix + "/".join(rest[:depth])
                    if recursive or depth == 1:
                        oid = hashlib.sha1(folder.encode()).hexdigest()
                        entries.setdefault(folder, {"type": "directory", "oid": oid, "size": 0, "path": folder})
                if recursive or len(rest) == 1:
                    oid, size = self._meta(commit.files[p])
                    entry: dict[str, Any] = {"type": "file", "oid": oid, "size": size, "path": p}
                    if self._is_lfs(commit, p):
                        entry["lfs"] = {"oid": commit.files[p], "size": size, "pointerSize": 134}
                    entries[p] = entry
            return list(entries.values())

    def commits(self, user: str | None, repo_id: str, revision: str) -> list[dict[str, Any]]:
        with self._lock:
            repo = self._repo_for_read(repo_id, user)
            self._commit_for(repo, revision)
            return [
                {"id": c.oid, "title": c.title, "message": c.message, "authors": [{"user": c.author}], "date": c.date}
                for c in self.commit_history(repo_id, revision)
            ]

    def preupload(self, user: str | None, repo_id: str, revision: str, body: dict[str, Any]) -> dict[str, Any]:
        files = body.get("files")
        if not isinstance(files, list) or not all(
            isinstance(f, dict) and isinstance(f.get("path"), str) for f in files
        ):
            raise HubError(400, '"files" must be a list of {"path", "sample", "size"}')
        with self._lock:
            commit = self._commit_for(self._repo_for_write(repo_id, user), revision)
            out = []
            for f in files:
                sha256 = commit.files.get(f["path"])
                oid = self._meta(sha256)[0] if sha256 is not None else None
                out.append({"path": f["path"], "uploadMode": "regular", "shouldIgnore": False, "oid": oid})
            return {"files": out, "commitOid": commit.oid}

    def commit(
        self,
        user: str | None,
        repo_id: str,
        revision: str,
        lines: list[dict[str, Any]],
        create_pr: bool,
        base_url: str,
    ) -> dict[str, Any]:
        if create_pr:
            raise HubError(400, "pull requests are not supported by this test Hub")
        if not lines or lines[0].get("key") != "header" or not isinstance(lines[0].get("value"), dict):
            raise HubError(400, "the first line of a commit payload must be its header")
        header = lines[0]["value"]
        summary = header.get("summary")
        if not isinstance(summary, str) or not summary.strip():
            raise HubError(400, "commit summary is required")
        with self._lock:
            repo = self._repo_for_write(repo_id, user)
            branch = revision[len("refs/heads/") :] if revision.startswith("refs/heads/") else revision
            if branch not in repo.branches:
                if self._resolve(repo, revision) is not None:
                    raise HubError(400, f"can only commit to a branch, not to {revision}")
                raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")
            head = repo.commits[repo.branches[branch]]
            parent = header.get("parentCommit")
            if parent is not None and parent != head.oid:
                raise HubError(412, "A commit has happened since. Please refresh and try again.")
            files = dict(head.files)
            for line in lines[1:]:
                key, value = line.get("key"), line.get("value")
                if not isinstance(value, dict) or not isinstance(value.get("path"), str):
                    raise HubError(400, f"malformed commit operation: {line!r}"[:300])
                path = value["path"].rstrip("/") if key == "deletedFolder" else value["path"]
                if not path or path.startswith("/") or any(part in ("", ".", "..") for part in path.split("/")):
                    raise HubError(400, f"Invalid path in repo: {path!r}")
                if key == "file":
                    if value.get("encoding") != "base64" or not isinstance(value.get("content"), str):
                        raise HubError(400, f"file {path!r}: content must be base64-encoded")
                    try:
                        data = base64.b64decode(value["content"], validate=True)
                    except ValueError as e:
                        raise HubError(400, f"file {path!r}: invalid base64 content") from e
                    if path == "README.md":
                        _check_model_index(_front_matter(data.decode("utf-8", errors="replace")))
                    files[path] = self._store_blob(data)
                elif key == "lfsFile":
                    raise HubError(400, f"LFS object {value.get('oid')} for {path!r} was never uploaded")
                elif key == "deletedFile":
                    if path not in files:
                        raise HubError(404, f"A file with this name doesn't exist: {path}", "EntryNotFound")
                    del files[path]
                elif key == "deletedFolder":
                    kept = {p: s for p, s in files.items() if not p.startswith(path + "/")}
                    if len(kept) == len(files):
                        raise HubError(404, f"A folder with this name doesn't exist: {path}", "EntryNotFound")
                    files = kept
                else:
                    raise HubError(400, f"unknown commit operation {key!r}")
            commit = self._new_commit(repo, head, files, summary, header.get("description") or "", user or "")
            repo.branches[branch] = commit.oid
        return {
            "success": True,
            "commitOid": commit.oid,
            "commitUrl": f"{base_url}/{repo_id}/commit/{commit.oid}",
            "hookOutput": "",
        }

    def create_branch(self, user: str | None, repo_id: str, branch: str, body: dict[str, Any]) -> dict[str, Any]:
        if not _BRANCH_RE.match(branch) or branch.startswith("refs/") or ".." in branch or branch.endswith("/"):
            raise HubError(400, f"Invalid reference for a branch: {branch}")
        with self._lock:
            repo = self._repo_for_write(repo_id, user)
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            start = self._commit_for(repo, body.get("startingPoint") or "main")
            repo.branches[branch] = start.oid
        return {}

    def resolve(self, user: str | None, repo_id: str, revision: str, path: str) -> tuple[bytes, dict[str, str]]:
        with self._lock:
            commit = self._commit_for(self._repo_for_read(repo_id, user), revision)
            if path not in commit.files:
                raise _EntryNotFound(commit.oid, path)
            sha256 = commit.files[path]
            oid, size = self._meta(sha256)
            headers = {"X-Repo-Commit": commit.oid, "Content-Type": "application/octet-stream"}
            if self._is_lfs(commit, path):
                headers.update({"ETag": f'"{sha256}"', "X-Linked-Etag": f'"{sha256}"', "X-Linked-Size": str(size)})
            else:
                headers["ETag"] = f'"{oid}"'
            return self._blob_path(sha256).read_bytes(), headers


class _EntryNotFound(HubError):
    def __init__(self, commit_oid: str, path: str) -> None:
        super().__init__(404, f"Entry not found: {path}", "EntryNotFound")
        self.commit_oid = commit_oid


class _Handler(BaseHTTPRequestHandler):
    """Routes requests to the :class:`HubServer` bound as the class attribute ``hub``."""

    hub: HubServer
    protocol_version = "HTTP/1.1"
    _raw: bytes = b""

    def log_message(self, format: str, *args: Any) -> None:
        """Silence the default stderr access log; requests are recorded in ``hub.log`` instead."""

    def do_GET(self) -> None:
        self._dispatch("GET")

    def do_HEAD(self) -> None:
        self._dispatch("HEAD")

    def do_POST(self) -> None:
        self._dispatch("POST")

    def do_PUT(self) -> None:
        self._dispatch("PUT")

    def do_DELETE(self) -> None:
        self._dispatch("DELETE")

    # ------------------------------------------------------------------ plumbing
    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks: list[bytes] = []
            while True:
                size = int(self.rfile.readline().strip().split(b";")[0], 16)
                if size == 0:
                    self.rfile.readline()
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _json_body(self) -> dict[str, Any]:
        try:
            data = json.loads(self._raw or b"{}")
        except json.JSONDecodeError as e:
            raise HubError(400, f"invalid JSON body: {e}") from e
        if not isinstance(data, dict):
            raise HubError(400, "JSON body must be an object")
        return data

    def _send(self, method: str, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if method != "HEAD":
            self.wfile.write(body)
        self.hub.log.append((method, self.path, status))

    def _send_json(self, method: str, data: Any, status: int = 200) -> None:
        self._send(method, status, json.dumps(data).encode(), {"Content-Type": "application/json"})

    def _dispatch(self, method: str) -> None:
        split = urlsplit(self.path)
        query = parse_qs(split.query)
        parts = [unquote(p) for p in split.path.strip("/").split("/")]
        base_url = f"http://{self.headers.get('Host')}"
        extra: dict[str, str] = {}
        try:
            self._raw = self._body()  # read it all first: an early error must not leave it in the socket
            user = self.hub._user(self.headers)
            self._route(method, parts, query, user, base_url)
        except HubError as e:
            if isinstance(e, _EntryNotFound):
                extra["X-Repo-Commit"] = e.commit_oid
            headers = {"Content-Type": "application/json", "X-Error-Message": e.message, **extra}
            if e.code:
                headers["X-Error-Code"] = e.code
            self._send(method, e.status, json.dumps(e.body).encode(), headers)
        except Exception as e:  # a bug in the test server must surface as a 500, not a hung client
            self._send(
                method,
                500,
                json.dumps({"error": f"test Hub crashed: {e!r}"}).encode(),
                {"Content-Type": "application/json"},
            )

    def _route(
        self, method: str, parts: list[str], query: dict[str, list[str]], user: str | None, base_url: str
    ) -> None:
        hub = self.hub
        if parts[0] == "api":
            if method == "POST" and parts[1:] == ["repos", "create"]:
                return self._send_json(method, hub.create_repo(user, self._json_body(), base_url))
            if method == "POST" and parts[1:] == ["validate-yaml"]:
                body = self._json_body()
                try:
                    _check_model_index(_front_matter(str(body.get("content", ""))))
                except HubError as e:
                    return self._send_json(method, {"errors": [{"message": e.message}], "warnings": []}, 400)
                return self._send_json(method, {"errors": [], "warnings": []})
            if method == "GET" and parts[1:] == ["whoami-v2"]:
                if user is None:
                    raise HubError(401, "Invalid credentials in Authorization header")
                orgs = [{"name": o, "type": "org"} for o, members in hub.orgs.items() if user in members]
                return self._send_json(
                    method,
                    {
                        "type": "user",
                        "name": user,
                        "orgs": orgs,
                        "auth": {"type": "access_token", "accessToken": {"role": "write"}},
                    },
                )
            if len(parts) >= 4 and parts[1] in ("models", "datasets", "spaces"):
                if parts[1] != "models":
                    raise HubError(404, "Repository not found", "RepoNotFound")
                return self._route_model_api(method, f"{parts[2]}/{parts[3]}", parts[4:], query, user, base_url)
            raise HubError(404, f"unknown API route {'/'.join(parts)}")
        if len(parts) >= 5 and parts[2] == "resolve" and method in ("GET", "HEAD"):
            data, headers = hub.resolve(user, f"{parts[0]}/{parts[1]}", parts[3], "/".join(parts[4:]))
            return self._send(method, 200, data, headers)
        raise HubError(404, f"not found: /{'/'.join(parts)}")

    def _route_model_api(
        self, method: str, repo_id: str, rest: list[str], query: dict[str, list[str]], user: str | None, base_url: str
    ) -> None:
        hub = self.hub
        flag = {k: v[-1].lower() in ("1", "true") for k, v in query.items()}
        if method == "GET" and not rest:
            return self._send_json(method, hub.repo_info(user, repo_id, "main", flag.get("blobs", False)))
        if method == "GET" and len(rest) == 2 and rest[0] == "revision":
            return self._send_json(method, hub.repo_info(user, repo_id, rest[1], flag.get("blobs", False)))
        if method == "GET" and rest == ["refs"]:
            return self._send_json(method, hub.refs(user, repo_id, flag.get("include_prs", False)))
        if method == "GET" and len(rest) >= 2 and rest[0] == "tree":
            listing = hub.tree(user, repo_id, rest[1], "/".join(rest[2:]), flag.get("recursive", False))
            return self._send_json(method, listing)
        if method == "GET" and len(rest) == 2 and rest[0] == "commits":
            return self._send_json(method, hub.commits(user, repo_id, rest[1]))
        if method == "POST" and len(rest) == 2 and rest[0] == "preupload":
            return self._send_json(method, hub.preupload(user, repo_id, rest[1], self._json_body()))
        if method == "POST" and len(rest) == 2 and rest[0] == "commit":
            try:
                lines = [json.loads(line) for line in self._raw.splitlines() if line.strip()]
            except json.JSONDecodeError as e:
                raise HubError(400, f"commit payload is not valid NDJSON: {e}") from e
            if not all(isinstance(line, dict) for line in lines):
                raise HubError(400, "every NDJSON line of a commit must be an object")
            return self._send_json(
                method, hub.commit(user, repo_id, rest[1], lines, flag.get("create_pr", False), base_url)
            )
        if method == "POST" and len(rest) == 2 and rest[0] == "branch":
            return self._send_json(method, hub.create_branch(user, repo_id, rest[1], self._json_body()))
        hub._repo_for_read(repo_id, user)  # unknown repo first, like the Hub
        raise HubError(404, f"unknown model API route {method} {'/'.join(rest)}")


def patch_hub_client(monkeypatch: Any, endpoint: str, cache_dir: str | os.PathLike[str]) -> None:
    """Point the already imported ``huggingface_hub`` (and so timm / transformers) at ``endpoint``.

    ``huggingface_hub`` reads ``HF_ENDPOINT`` and ``HF_HUB_CACHE`` once, at import, into
    ``huggingface_hub.constants`` (``ENDPOINT``, ``HUGGINGFACE_CO_URL_TEMPLATE`` used by ``hf_hub_url``,
    ``HF_HUB_CACHE``, ``HF_HUB_OFFLINE``), and builds the module-level ``HfApi`` behind
    ``huggingface_hub.model_info`` etc. with that endpoint. timm and transformers call through these, so
    patching them here is enough; everything is undone by ``monkeypatch``.
    """
    from huggingface_hub import constants, hf_api

    monkeypatch.setenv("HF_ENDPOINT", endpoint)
    monkeypatch.setenv("HF_HUB_CACHE", os.fspath(cache_dir))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "0")
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "ENDPOINT", endpoint)
    monkeypatch.setattr(
        constants, "HUGGINGFACE_CO_URL_TEMPLATE", endpoint + "/{repo_id}/resolve/{revision}/{filename}"
    )
    monkeypatch.setattr(constants, "HF_HUB_CACHE", os.fspath(cache_dir))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setattr(constants, "HF_HUB_DISABLE_TELEMETRY", True)
    monkeypatch.setattr(hf_api.api, "endpoint", endpoint)
