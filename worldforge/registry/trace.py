"""Where a model came from: the chain of packages from a model back to its dataset, and restoring
that chain's exact inputs into another project root from the DVC remote alone.

`trace(source)` walks `lineage.json` from a package folder or `models:/` URI to its parent, and
the parent's parent, until a package without one (pretraining); each row holds the stage, the
registry version, the package md5 and DVC md5, the git sha, the stage's own parameters, headline
metrics and the MLflow run. `rebuild(chain)` rebuilds the dataset from the config its manifest
records and compares DVC md5s. `pull(chain, dest)` restores the dataset and every package of the
chain into an empty project root `dest` by their DVC md5s and checks each package's md5; when
anything is missing from the remote it names it, and leaves `dest` as it found it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import mlflow
from mlflow.exceptions import MlflowException
from pydantic import ValidationError

from worldforge.config import load_config
from worldforge.core import tracking
from worldforge.core.lineage import DataRepo, LineageError, tracked_md5
from worldforge.core.project import Project
from worldforge.core.schema import describe_errors
from worldforge.data.config import DataConfig
from worldforge.data.manifest import read_manifest
from worldforge.data.shards import build_dataset
from worldforge.errors import WorldforgeError
from worldforge.packages import ModelPackage, load_package, package_md5
from worldforge.packages.lineage import project_folder
from worldforge.registry.query import CACHE_DIR, resolve, resolve_version, version_of

HEADLINE = ("psnr_mean", "baseline_psnr_mean", "agent_position_error", "baseline_agent_position_error",
            "object_position_error", "baseline_object_position_error")


class TraceError(WorldforgeError, ValueError):
    """A chain that cannot be walked or restored; names the package or md5 at fault."""


@dataclass
class Ancestor:
    """One package of a chain."""

    stage: str
    path: str  # the package folder on this machine
    source: str  # as the child's lineage names it (or as given, for the first)
    package_md5: str
    dvc_md5: str | None  # the package folder's DVC md5: what `pull` restores it by
    version: str | None  # models:/family/N
    git_sha: str | None
    params: dict[str, Any]
    metrics: dict[str, float]
    mlflow_run_id: str | None
    dataset: str | None
    dataset_md5: str | None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Chain:
    """A model and its ancestors, newest first; the dataset the first of them was trained on."""

    ancestors: list[Ancestor] = field(default_factory=list)

    @property
    def dataset(self) -> tuple[str | None, str | None]:
        """(path, DVC md5) of the dataset at the root of the chain."""
        root = self.ancestors[-1]
        return root.dataset, root.dataset_md5

    def as_dict(self) -> dict[str, Any]:
        path, md5 = self.dataset
        return {"ancestors": [a.as_dict() for a in self.ancestors], "dataset": {"path": path, "dvc_md5": md5}}


def _run_tag(run_id: str | None, tag: str) -> str | None:
    if not run_id:
        return None
    with contextlib.suppress(MlflowException, OSError):
        return mlflow.MlflowClient(tracking.configure()).get_run(run_id).data.tags.get(tag)
    return None


def _ancestor(source: str, package: ModelPackage, family: str | None) -> Ancestor:
    folder, lineage = package.path, package.lineage
    md5 = package_md5(folder)
    run_id = lineage.mlflow_run_id if lineage else None
    dvc_md5 = tracked_md5(folder) or _run_tag(run_id, "package.dvc_md5")
    return Ancestor(
        stage=lineage.stage if lineage else "unknown",
        path=str(folder),
        source=source,
        package_md5=md5,
        dvc_md5=dvc_md5 if dvc_md5 != "untracked" else None,
        version=version_of(source, md5, family),
        git_sha=lineage.git_sha if lineage else None,
        params=dict(lineage.params) if lineage else {},
        metrics={k: package.metrics[k] for k in HEADLINE if isinstance(package.metrics.get(k), (int, float))},
        mlflow_run_id=run_id,
        dataset=lineage.dataset if lineage else None,
        dataset_md5=lineage.dataset_md5 if lineage else None,
    )


def trace(source: str | Path, family: str | None = None, limit: int = 32) -> Chain:
    """The chain from `source` (a package folder or `models:/` URI) back to the first package.

    `family`: the registry family to find versions of packages named by path (default: the
    family of a `models:/` source)."""
    source = str(source)
    if family is None and source.startswith("models:/"):
        family = resolve_version(source).name
    chain = Chain()
    seen: set[str] = set()
    current: str | None = source
    while current is not None:
        folder = resolve(current) if current.startswith("models:/") else project_folder(current)
        if not folder.is_dir():
            raise TraceError(
                f"{current}: the package named by "
                f"{chain.ancestors[-1].path + '/lineage.json' if chain.ancestors else 'the source'} is not here"
            )
        package = load_package(folder)
        ancestor = _ancestor(current, package, family)
        if ancestor.package_md5 in seen or len(chain.ancestors) >= limit:
            raise TraceError(f"{folder}: lineage loops back to a package already in the chain")
        seen.add(ancestor.package_md5)
        chain.ancestors.append(ancestor)
        current = package.lineage.parent if package.lineage and package.lineage.parent else None
    return chain


def pull(chain: Chain, dest: str | Path, remote: str | None = None) -> dict[str, str]:
    """Restore the chain's dataset and every package into the empty project root `dest` from the
    DVC remote (`remote`, default this project's), checking each package's md5. Returns
    {relative path: md5} of what was restored. On any failure `dest` is emptied again and the
    error names what is missing."""
    dest = Path(dest).resolve()
    if dest.exists() and any(dest.iterdir()):
        raise TraceError(f"{dest}: not empty; --pull restores into an empty project root")
    remote = remote or DataRepo().remote_url
    wanted: list[tuple[str, str, str | None]] = []  # (relative path, dvc md5, package md5 to check)
    dataset, dataset_md5 = chain.dataset
    if dataset and not dataset_md5:
        raise TraceError(f"dataset {dataset}: not DVC-tracked (no dataset_md5 in lineage.json); nothing to pull")
    if dataset:
        wanted.append((restore_path(dataset), dataset_md5, None))
    for ancestor in chain.ancestors:
        if not ancestor.dvc_md5:
            raise TraceError(
                f"{ancestor.path}: package ({ancestor.stage}) has no DVC md5 (not versioned in DVC); cannot pull it"
            )
        wanted.append((restore_path(ancestor.path, ancestor.version), ancestor.dvc_md5, ancestor.package_md5))
    created = not dest.exists()
    dest.mkdir(parents=True, exist_ok=True)
    repo = DataRepo(Project.current(dest), remote_url=remote)
    restored: dict[str, str] = {}
    try:
        for relative, dvc_md5, md5 in wanted:
            try:
                path = repo.restore(dest / relative, dvc_md5)
            except LineageError as error:
                raise TraceError(f"{relative} (DVC md5 {dvc_md5}) is missing from the remote {remote}: {error}") from None
            if md5 is not None and package_md5(path) != md5:
                raise TraceError(f"{relative}: restored package md5 {package_md5(path)}, lineage records {md5}")
            restored[relative] = dvc_md5
    except BaseException:
        for child in list(dest.iterdir()) if dest.exists() else []:
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        if created:
            shutil.rmtree(dest, ignore_errors=True)
        raise
    return restored


def restore_path(path: str, version: str | None = None) -> str:
    """Where a chain's package or dataset goes in the new project root: its path relative to this
    one; a registry download (`packages/.registry-cache/...`) goes to `packages/<family>-v<N>`."""
    candidate = Path(path)
    if CACHE_DIR in candidate.parts and version:
        family, number = version.removeprefix("models:/").split("/")
        return str(Path("packages") / f"{family}-v{number}")
    if not candidate.is_absolute():
        return str(candidate)
    root = Project.current().root.resolve()
    with contextlib.suppress(ValueError):
        return str(candidate.resolve().relative_to(root))
    return str(Path("packages") / candidate.name)


def rebuild(chain: Chain, dataset_folder: str | Path | None = None) -> tuple[str, str]:
    """Rebuild the chain's dataset from the config its manifest records, in a scratch project,
    and return (recorded DVC md5, rebuilt DVC md5): equal when the data is reproducible from its
    config alone. `dataset_folder`: where the manifest is read (default: the chain's dataset in
    this project, e.g. after `pull`)."""
    path, recorded = chain.dataset
    if not path or not recorded:
        raise TraceError("the chain's dataset is not DVC-tracked: nothing to compare a rebuild against")
    folder = Path(dataset_folder) if dataset_folder is not None else project_folder(path)
    manifest = read_manifest(folder)
    defaults = load_config(None, [])
    try:
        data = DataConfig.model_validate({**defaults.data.model_dump(), **manifest.config})
    except ValidationError as error:
        raise TraceError(describe_errors(error, f"{folder}/manifest.json field 'config'")) from None
    config = defaults.model_copy(update={"data": data})
    with tempfile.TemporaryDirectory(prefix="worldforge-rebuild-") as scratch:
        project = Project.current(Path(scratch) / "project")
        target = project.root / "datasets" / Path(path).name
        previous = os.environ.get("WORLDFORGE_ROOT")
        os.environ["WORLDFORGE_ROOT"] = str(project.root)
        try:
            build_dataset(config, target, track=False, progress=False)
            rebuilt = DataRepo(project, remote_url=str(Path(scratch) / "remote")).track(target)
        finally:
            if previous is None:
                os.environ.pop("WORLDFORGE_ROOT", None)
            else:
                os.environ["WORLDFORGE_ROOT"] = previous
    return recorded, rebuilt
