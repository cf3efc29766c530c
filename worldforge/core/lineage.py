"""The one place that talks to DVC.

The project root is a DVC repo (with git when the root is a git work tree, `--no-scm` otherwise),
initialised on first use with a default remote: `<root>/dvc-remote`, or `WORLDFORGE_DVC_REMOTE`
(any DVC remote URL, e.g. `s3://bucket/worldforge`). Datasets and model packages are tracked as
folders; their md5 (`<hash>.dir`) is what MLflow runs cite, and `restore` brings a folder back
from the remote by that md5 alone.

DVC takes a repo-wide lock and fails when it is held, so every call here goes through one
inter-process file lock.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

import yaml
from filelock import FileLock

from worldforge.core.project import Project
from worldforge.errors import WorldforgeError

REMOTE_NAME = "worldforge"
LOCK_TIMEOUT_S = 600


class LineageError(WorldforgeError, RuntimeError):
    """A DVC operation failed; the message says which path and what to do."""


log = logging.getLogger(__name__)


class DataRepo:
    """DVC over the project root: track, push, restore folders by md5."""

    def __init__(self, project: Project | None = None, remote_url: str | None = None):
        self.project = project or Project.current()
        self.root = self.project.root
        self.remote_url = remote_url or os.environ.get("WORLDFORGE_DVC_REMOTE") or str(self.project.dvc_remote)
        self._lock = FileLock(str(self.root / ".worldforge-dvc.lock"), timeout=LOCK_TIMEOUT_S)

    @contextlib.contextmanager
    def _repo(self) -> Iterator[object]:
        from dvc.repo import Repo

        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if not (self.root / ".dvc").is_dir():
                Repo.init(str(self.root), no_scm=not (self.root / ".git").exists())
            repo = Repo(str(self.root))
            try:
                self._ensure_remote(repo)
                yield repo
            finally:
                repo.close()

    def _ensure_remote(self, repo) -> None:
        remotes = repo.config.get("remote", {})
        if remotes.get(REMOTE_NAME, {}).get("url") == self.remote_url:
            return
        if "://" not in self.remote_url:
            try:
                Path(self.remote_url).mkdir(parents=True, exist_ok=True)
            except OSError as error:
                raise LineageError(
                    f"DVC remote {self.remote_url} cannot be created ({error}); make it a writable folder "
                    "or set WORLDFORGE_DVC_REMOTE to another remote URL"
                ) from None
        with repo.config.edit() as conf:
            conf["remote"][REMOTE_NAME] = {"url": self.remote_url}
            conf["core"]["remote"] = REMOTE_NAME

    def _relative(self, path: Path) -> str:
        path = Path(path).resolve()
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            raise LineageError(
                f"{path} is outside the project root {self.root}; DVC can only track folders under it "
                "(set WORLDFORGE_ROOT or move the folder)"
            ) from None

    def dvc_file(self, path: Path) -> Path:
        path = Path(path).resolve()
        return path.with_name(path.name + ".dvc")

    def init(self) -> None:
        """Initialise the DVC repo and its remote if they do not exist yet."""
        with self._repo():
            pass

    def track(self, path: Path) -> str:
        """`dvc add` a folder or file; returns its md5 (`<hash>.dir` for folders)."""
        path = Path(path)
        if not path.exists():
            raise LineageError(f"{path}: nothing to track, the path does not exist")
        target = self._relative(path)
        with self._repo() as repo:
            try:
                repo.add(str(self.root / target))
            except Exception as error:
                raise LineageError(f"dvc add {target} failed: {error}") from error
        return self.md5(path)

    def md5(self, path: Path) -> str:
        """The md5 recorded for a tracked path (its `.dvc` file)."""
        dvc_file = self.dvc_file(path)
        if not dvc_file.is_file():
            raise LineageError(f"{path} is not tracked: {dvc_file} does not exist (run track first)")
        outs = (yaml.safe_load(dvc_file.read_text()) or {}).get("outs") or []
        if not outs or "md5" not in outs[0]:
            raise LineageError(f"{dvc_file}: no outs[0].md5 recorded")
        return outs[0]["md5"]

    def push(self, path: Path) -> None:
        """Push a tracked path's content to the remote."""
        target = str(self.dvc_file(path))
        with self._repo() as repo:
            try:
                repo.push(targets=[target], remote=REMOTE_NAME)
            except Exception as error:
                raise LineageError(
                    f"dvc push {target} to {self.remote_url} failed: {error}; check that the remote exists "
                    "and is writable (WORLDFORGE_DVC_REMOTE)"
                ) from error

    def track_and_push(self, path: Path) -> str:
        md5 = self.track(path)
        self.push(path)
        return md5

    def restore(self, path: Path, md5: str) -> Path:
        """Bring back the content recorded under `md5` at `path`, pulling from the remote.

        Works from the hash alone: the `.dvc` file is rewritten to name `md5` if it differs."""
        path = Path(path)
        target = self._relative(path)
        dvc_file = self.dvc_file(path)
        record = {"outs": [{"md5": md5, "path": path.name, "hash": "md5"}]}
        if not dvc_file.is_file() or self.md5(path) != md5:
            dvc_file.parent.mkdir(parents=True, exist_ok=True)
            dvc_file.write_text(yaml.safe_dump(record, sort_keys=False))
        with self._repo() as repo:
            try:
                repo.pull(targets=[str(dvc_file)], remote=REMOTE_NAME, force=True)
            except Exception as error:
                raise LineageError(
                    f"restoring {target} at md5 {md5} from {self.remote_url} failed: {error}"
                ) from error
        return path

    def status(self) -> dict:
        """`dvc status` of the repo against its cache (empty dict when everything is in sync)."""
        with self._repo() as repo:
            return repo.status()


def tracked_md5(path: Path, project: Project | None = None) -> str | None:
    """The DVC md5 of a tracked folder, None when it is not tracked (an untracked dataset or package
    is allowed; lineage then records its path alone)."""
    try:
        return DataRepo(project).md5(path)
    except LineageError:
        return None


def version_package(path: Path, project: Project | None = None) -> str | None:
    """Track a stage's output package in DVC and push it; its md5, or None (with a warning) when
    the folder lies outside the project root, where DVC cannot track it (a user's `--out`)."""
    repo = DataRepo(project)
    if not Path(path).resolve().is_relative_to(Path(repo.root).resolve()):
        log.warning("%s is outside the project root %s: not versioned in DVC", path, repo.root)
        return None
    return repo.track_and_push(Path(path))
