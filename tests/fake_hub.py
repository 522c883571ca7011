"""A Hugging Face Hub stand-in for tests: a threaded stdlib HTTP server that answers the endpoints
`huggingface_hub` calls to pull a model (`HF_ENDPOINT=hub.url`), serving repositories from local folders.

- `GET /api/models/{repo}` and `/api/models/{repo}/revision/{rev}`: the model's info (id, sha, siblings)
- `GET /api/models/{repo}/tree/{rev}?recursive=...`: the file listing (snapshot_download asks for it)
- `HEAD` / `GET /{repo}/resolve/{rev}/{path}`: a file, with `X-Repo-Commit`, a quoted `ETag` (the sha256
  for weights, as the Hub does for LFS files; a git-blob-like sha1 otherwise) and `Content-Length`
- a 404 with `X-Error-Code` RepoNotFound / RevisionNotFound / EntryNotFound otherwise, as the Hub answers

Every request is recorded (`requests`), so a test can say which files were downloaded (`downloads`).
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".bin", ".onnx", ".msgpack", ".ckpt")


@dataclass
class Repo:
    repo_id: str
    folder: Path
    refs: dict[str, str]  # branch or tag -> commit sha
    files: dict[str, Path] = field(default_factory=dict)  # path in the repo -> file

    @property
    def sha(self) -> str:
        return self.refs["main"]


def _sha(data: bytes, kind: str) -> str:
    if kind == "lfs":
        return hashlib.sha256(data).hexdigest()
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


class FakeHub:
    """`with FakeHub() as hub: hub.add("org/name", folder)`; `hub.url` is the HF_ENDPOINT."""

    def __init__(self) -> None:
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []  # (method, path without the query)
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def add(self, repo_id: str, folder: Path, tags: tuple[str, ...] = ()) -> Repo:
        """Serve every file under `folder` as repository `repo_id`; its commit sha is a hash of the files."""
        files = {p.relative_to(folder).as_posix(): p for p in sorted(folder.rglob("*")) if p.is_file()}
        digest = hashlib.sha1()
        for path, file in files.items():
            digest.update(path.encode() + b"\0" + hashlib.sha1(file.read_bytes()).digest())
        sha = digest.hexdigest()
        repo = Repo(repo_id, folder, {"main": sha, **dict.fromkeys(tags, sha)}, files)
        self.repos[repo_id] = repo
        return repo

    def downloads(self, repo_id: str, since: int = 0) -> list[str]:
        """The paths of `repo_id` whose bytes were fetched (GET /resolve/), in order, from request number
        `since` on."""
        prefix = f"/{repo_id}/resolve/"
        found = [p for m, p in self.requests[since:] if m == "GET" and p.startswith(prefix)]
        return [p[len(prefix) :].split("/", 1)[1] for p in found]

    def start(self) -> FakeHub:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(10)

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def record(self, method: str, path: str) -> None:
        with self._lock:
            self.requests.append((method, path))


_API = re.compile(r"/api/models/(?P<repo>[^/]+(?:/[^/]+)?)(?:/(?P<kind>revision|tree)/(?P<rev>[^/]+))?/?")
_RESOLVE = re.compile(r"/(?P<repo>[^/]+(?:/[^/]+)?)/resolve/(?P<rev>[^/]+)/(?P<path>.+)")


def _handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            self._answer(body=True)

        def do_HEAD(self) -> None:
            self._answer(body=False)

        def _answer(self, body: bool) -> None:
            path = unquote(urlsplit(self.path).path)
            hub.record(self.command, path)
            if m := _API.fullmatch(path):
                if self.command != "GET":
                    return self._error(405, None, "method not allowed")
                return self._api(m["repo"], m["kind"], m["rev"])
            if m := _RESOLVE.fullmatch(path):
                return self._resolve(m["repo"], m["rev"], m["path"], body)
            self._error(404, None, "no such endpoint")

        def _repo_at(self, repo_id: str, rev: str | None) -> tuple[Repo, str] | None:
            repo = hub.repos.get(repo_id)
            if repo is None:
                self._error(404, "RepoNotFound", "Repository not found")
                return None
            rev = rev or "main"
            sha = repo.refs.get(rev) or (rev if rev == repo.sha else None)
            if sha is None:
                self._error(404, "RevisionNotFound", "Invalid rev id", commit=None)
                return None
            return repo, sha

        def _api(self, repo_id: str, kind: str | None, rev: str | None) -> None:
            found = self._repo_at(repo_id, rev)
            if found is None:
                return
            repo, sha = found
            if kind == "tree":
                listing = []
                for name, file in repo.files.items():
                    data = file.read_bytes()
                    entry: dict[str, Any] = {"type": "file", "path": name, "size": len(data)}
                    entry["oid"] = _sha(data, "git")
                    if name.endswith(LFS_SUFFIXES):
                        entry["lfs"] = {"oid": _sha(data, "lfs"), "size": len(data), "pointerSize": 134}
                    listing.append(entry)
                return self._json(listing)
            siblings = [{"rfilename": name} for name in repo.files]
            self._json(
                {
                    "id": repo.repo_id,
                    "modelId": repo.repo_id,
                    "sha": sha,
                    "private": False,
                    "siblings": siblings,
                }
            )

        def _resolve(self, repo_id: str, rev: str, name: str, body: bool) -> None:
            found = self._repo_at(repo_id, rev)
            if found is None:
                return
            repo, sha = found
            file = repo.files.get(name)
            if file is None:
                return self._error(404, "EntryNotFound", "Entry not found", commit=sha)
            data = file.read_bytes()
            self.send_response(200)
            self.send_header("X-Repo-Commit", sha)
            self.send_header("ETag", f'"{_sha(data, "lfs" if name.endswith(LFS_SUFFIXES) else "git")}"')
            self.send_header("Content-Length", str(len(data)))
            self.send_header("Content-Type", "application/octet-stream")
            self.end_headers()
            if body:
                self.wfile.write(data)

        def _json(self, value: Any) -> None:
            data = json.dumps(value).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _error(self, status: int, code: str | None, message: str, commit: str | None = None) -> None:
            data = json.dumps({"error": message}).encode()
            self.send_response(status)
            if code:
                self.send_header("X-Error-Code", code)
            self.send_header("X-Error-Message", message)
            if commit:
                self.send_header("X-Repo-Commit", commit)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(data)

    return Handler
