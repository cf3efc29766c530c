"""Reading the registry: versions by number, alias or `models:/` URI, their recorded metrics, and
`resolve` from a package folder or URI to a local package folder (downloaded once, md5-checked)."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import mlflow
from filelock import FileLock
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException
from mlflow.models import Model

from worldforge.core.project import Project
from worldforge.errors import WorldforgeError
from worldforge.packages import PackageError, package_md5
from worldforge.registry.store import RegistryError, client

CACHE_DIR = ".registry-cache"


def parse_models_uri(uri: str) -> tuple[str, str]:
    """`models:/name@alias` -> (name, "@alias"); `models:/name/3` -> (name, "3")."""
    body = uri.removeprefix("models:/")
    if "@" in body and "/" not in body:
        name, alias = body.split("@", 1)
        return name, f"@{alias}"
    if body.count("/") == 1 and body.split("/")[1].isdigit():
        name, version = body.split("/")
        return name, version
    raise RegistryError(f"{uri!r}: expected models:/NAME@ALIAS or models:/NAME/VERSION")


def get_version(family: str, version_or_alias: str) -> ModelVersion:
    """A version by number (`3`) or alias (`@champion` / `champion`); RegistryError if absent."""
    mlflow_client = client()
    try:
        if version_or_alias.isdigit():
            return mlflow_client.get_model_version(family, version_or_alias)
        return mlflow_client.get_model_version_by_alias(family, version_or_alias.removeprefix("@"))
    except MlflowException as error:
        raise RegistryError(
            f"models:/{family}: no version or alias {version_or_alias!r} ({error.message})"
        ) from None


def resolve_version(uri: str) -> ModelVersion:
    return get_version(*parse_models_uri(uri))


def families() -> list:
    """Every registered model (RegisteredModel, with `.aliases`), by name."""
    return sorted(client().search_registered_models(), key=lambda model: model.name)


def versions(family: str) -> list[tuple[ModelVersion, list[str]]]:
    """Every version of `family` with its aliases, newest first; RegistryError if there is no such
    model. (Searched versions come without their aliases; the registered model has them all.)"""
    mlflow_client = client()
    try:
        model = mlflow_client.get_registered_model(family)
    except MlflowException as error:
        raise RegistryError(f"no registered model {family!r} ({error.message})") from None
    aliases: dict[str, list[str]] = {}
    for alias, number in (model.aliases or {}).items():
        aliases.setdefault(str(number), []).append(alias)
    found = mlflow_client.search_model_versions(f"name = '{family}'")
    ordered = sorted(found, key=lambda version: int(version.version), reverse=True)
    return [(version, sorted(aliases.get(str(version.version), []))) for version in ordered]


def alias_version(family: str, alias: str) -> str | None:
    try:
        return str(client().get_model_version_by_alias(family, alias).version)
    except MlflowException:
        return None


def recorded_metrics(version: ModelVersion) -> dict[str, Any]:
    """The metrics a version was registered with: `{"psnr_mean": 24.1, ..., "device": "cpu"}`."""
    metrics: dict[str, Any] = {}
    for key, value in version.tags.items():
        if key.startswith("metric."):
            with contextlib.suppress(ValueError):  # a hand-set tag that is not a number is no metric
                metrics[key.removeprefix("metric.")] = float(value)
    if "eval.device" in version.tags:
        metrics["device"] = version.tags["eval.device"]
    return metrics


def resolve(source: str | Path) -> Path:
    """A package folder for `source`: a folder as given, a `models:/name@alias` or
    `models:/name/version` URI downloaded (`download_package`)."""
    if str(source).startswith("models:/"):
        return download_package(str(source))
    return Path(source)


def download_package(uri: str) -> Path:
    """The package folder of a `models:/` URI, downloaded once into
    `<root>/packages/.registry-cache/<name>/<version>` and checked against its `package.md5` tag."""
    version = resolve_version(uri)
    target = Project.current().packages / CACHE_DIR / version.name / str(version.version)
    done = target.with_name(f"{target.name}.complete")  # beside the package: not part of its md5
    expected = version.tags.get("package.md5", "")
    target.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(target.with_name(f"{target.name}.lock"))):  # one download per version at a time
        if not (target.is_dir() and done.is_file() and done.read_text() == expected):
            _download(version, target, expected)
            done.write_text(expected)
    return target


def _download(version: ModelVersion, target: Path, expected: str) -> None:
    uri = f"models:/{version.name}/{version.version}"
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=str(staging)))
        artifacts = Model.load(str(local)).flavors["python_function"].get("artifacts", {})
        if "package" not in artifacts:
            raise RegistryError(
                f"{uri}: not a worldforge model package (its MLmodel has no 'package' artifact)"
            )
        package = local / artifacts["package"]["path"]
        if expected and package_md5(package) != expected:
            raise PackageError(
                f"{uri}: downloaded package has md5 {package_md5(package)}, tag package.md5 says {expected}"
            )
        shutil.rmtree(target, ignore_errors=True)
        os.replace(package, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def version_of(source: str, md5: str, family: str | None) -> str | None:
    """The registry version (`models:/family/N`) of a package: the URI's own version (an alias
    resolved), else the version of `family` registered with package md5 `md5` (also one registered
    earlier in the same pipeline run). None without a registry, a family or a match."""
    if source.startswith("models:/"):
        version = resolve_version(source)
        return f"models:/{version.name}/{version.version}"
    if family:
        with contextlib.suppress(RegistryError, WorldforgeError, MlflowException, OSError):
            for candidate, _ in versions(family):
                if candidate.tags.get("package.md5") == md5:
                    return f"models:/{family}/{candidate.version}"
    return None

