"""The MLflow model registry: one registered model per family, a version per registered package.

- `register_package` logs a package as an MLflow pyfunc model (the package folder is its
  artifact; `load_context` calls `load_package`; models-from-code, so nothing is pickled) and
  registers it under the family with tags: `stage`, `parent.model`, `dataset.dvc_md5`,
  `package.md5`, `git.sha`, `metric.<name>` for the key metrics of its `metrics.json`, `eval.device`.
  A version that was evaluated and beats copy-last-frame becomes the `candidate`.
- `promote` checks the gates of `RegistryConfig` against the champion's recorded metrics. Every
  decision, promoted or not, is recorded on the version as its own tag `decision.<id>` (JSON:
  outcome, every check, champion before and after), so no decision overwrites another; the
  latest is summarised in `promotion.last_outcome` / `promotion.failed_checks`.
- The champion's history is kept on the registered model as one tag per event
  (`champion.history.<id>`, JSON), again never overwritten; `rollback` replays it.

Consistency under concurrent promotions: with the embedded SQLite store, promotions and
rollbacks of a project hold an inter-process file lock (`<root>/.worldforge-registry.lock`), so
each sees the champion the previous one left. Against a remote server no lock is shared: a
promotion re-reads the alias after setting it and records `superseded` when another promotion won,
and because decisions and history events each get their own tag, both are kept either way.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from worldforge.errors import WorldforgeError
from worldforge.evaluation.config import RegistryConfig
from worldforge.evaluation.gates import KEY_METRICS, Decision, beats_baseline, check_gates, passed
from worldforge.platform import tracking
from worldforge.platform.project import Project

CHAMPION, CANDIDATE = "champion", "candidate"
MODEL_NAME = "world_model"  # the logged model's name inside its run
DECISION_TAG = "decision."
HISTORY_TAG = "champion.history."
CACHE_DIR = ".registry-cache"
PYFUNC_CODE = '''"""A worldforge model package as an MLflow pyfunc (models from code: nothing pickled)."""
from mlflow.models import set_model

from worldforge.platform.registry import WorldModelPyfunc

set_model(WorldModelPyfunc())
'''


class RegistryError(WorldforgeError, ValueError):
    """A registry request that cannot be served: unknown model or version, no champion, ..."""


class WorldModelPyfunc(mlflow.pyfunc.PythonModel):
    """`predict({"context_frames": (B, Tc, C, H, W) float32 in [-1, 1], "actions": (B, Ta[, A])},
    params={"horizon": 8, "steps": 0 (package default), "seed": 0})` -> (B, horizon, C, H, W) float32."""

    # The input is a dict of arrays checked against the tensor signature logged with the model;
    # MLflow's type-hint validation (and its warning that predict has no type hints) does not apply.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        from worldforge.platform.packages import load_package

        self.package = load_package(context.artifacts["package"])
        self.model = self.package.build("cpu")

    def predict(self, context, model_input, params=None):
        import torch

        from worldforge.models.streaming import rollout

        params = params or {}
        generator = torch.Generator().manual_seed(int(params.get("seed", 0)))
        result = rollout(
            self.model,
            torch.as_tensor(model_input["context_frames"]),
            torch.as_tensor(model_input["actions"]),
            int(params.get("horizon", 8)),
            steps=int(params.get("steps", 0)) or None,
            generator=generator,
        )
        return result.frames.numpy()


def client() -> mlflow.MlflowClient:
    uri = tracking.configure()
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def _event_id() -> str:
    """Sortable by time (nanoseconds), unique across processes and machines."""
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def _is_embedded() -> bool:
    return tracking.tracking_uri().startswith("sqlite:")


@contextlib.contextmanager
def registry_lock(timeout_s: float) -> Iterator[None]:
    """The project's promotion lock for the embedded store; a no-op against a remote server."""
    if not _is_embedded():
        yield
        return
    from filelock import FileLock, Timeout

    path = Project.current().root / ".worldforge-registry.lock"
    try:
        with FileLock(str(path), timeout=timeout_s):
            yield
    except Timeout:
        raise RegistryError(
            f"{path}: another promotion or rollback held the registry lock for over {timeout_s:.0f} s "
            "(registry.lock_timeout_s); retry, or remove the file if no worldforge process is running"
        ) from None


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


def _ensure_registered_model(family: str) -> None:
    mlflow_client = client()
    try:
        mlflow_client.get_registered_model(family)
    except MlflowException:
        try:
            mlflow_client.create_registered_model(family, description="worldforge model family")
        except MlflowException as error:  # created concurrently
            if "already exists" not in str(error).lower():
                raise


def _signature(config: dict[str, Any]):
    import numpy as np
    from mlflow.models.signature import ModelSignature
    from mlflow.types.schema import ParamSchema, ParamSpec, Schema, TensorSpec

    tokenizer, model = config["tokenizer"], config["model"]
    frame = (tokenizer["frame_channels"], *tokenizer["frame_size"])
    if model["action_space"] == "discrete":
        actions = TensorSpec(np.dtype(np.int64), (-1, -1), "actions")
    else:
        actions = TensorSpec(np.dtype(np.float32), (-1, -1, model["action_dim"]), "actions")
    return ModelSignature(
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, *frame), "context_frames"), actions]),
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, -1, *frame), "frames")]),
        params=ParamSchema(
            [ParamSpec("horizon", "long", 8), ParamSpec("steps", "long", 0), ParamSpec("seed", "long", 0)]
        ),
    )


def _version_tags(package, stage: str, extra: dict[str, str] | None) -> dict[str, str]:
    from worldforge.platform.packages import package_md5

    lineage, metrics = package.lineage, package.metrics
    tags = {
        "stage": stage,
        "package.md5": package_md5(package.path),
        "git.sha": str(lineage.get("git_sha") or tracking.git_sha()),
        "parent.model": str(lineage.get("parent") or lineage.get("parent_package") or "none"),
    }
    if lineage.get("mlflow_run_id"):
        tags["lineage.mlflow_run_id"] = str(lineage["mlflow_run_id"])
    if lineage.get("dataset_md5"):
        tags["dataset.dvc_md5"] = str(lineage["dataset_md5"])
    for name in KEY_METRICS:
        if isinstance(metrics.get(name), (int, float)) and metrics[name] == metrics[name]:  # not NaN
            tags[f"metric.{name}"] = repr(float(metrics[name]))
    if metrics.get("device"):
        tags["eval.device"] = str(metrics["device"])
    tags.update({key: str(value) for key, value in (extra or {}).items() if value not in (None, "")})
    return tags


def register_package(
    package_path: str | Path,
    family: str,
    stage: str,
    tags: dict[str, str] | None = None,
    experiment: str = "worldforge",
) -> ModelVersion:
    """Register a package folder as a new version of `family` (created if new), logged by a stage
    run `register` in `experiment`. The version becomes `candidate` when its `metrics.json`
    shows it beats copy-last-frame. Returns the version, tags included."""
    import torch

    import worldforge
    from worldforge.platform.packages import load_package

    package = load_package(package_path)  # validated before anything is written
    version_tags = _version_tags(package, stage, tags)
    _ensure_registered_model(family)
    requirements = [
        f"worldforge=={worldforge.__version__}",
        f"torch=={torch.__version__.split('+')[0]}",
        f"mlflow=={mlflow.__version__}",
        "safetensors",
    ]
    # The run's own stage is `register`; the registered package's stage goes in `registry.stage`.
    run_tags = {key: value for key, value in version_tags.items() if key != "stage"}
    run_tags.update({"registry.family": family, "registry.stage": stage})
    with tempfile.TemporaryDirectory() as scratch, tracking.stage_run("register", experiment, tags=run_tags):
        code = Path(scratch) / "worldforge_pyfunc.py"
        code.write_text(PYFUNC_CODE)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "add type hints" / "no input example": by design
            info = mlflow.pyfunc.log_model(
                name=MODEL_NAME,
                python_model=str(code),
                artifacts={"package": str(Path(package.path).resolve())},
                signature=_signature(package.config),
                pip_requirements=requirements,
            )
        version = mlflow.register_model(info.model_uri, family, tags=version_tags)
    if beats_baseline(package.metrics, RegistryConfig()).status == "pass":
        client().set_registered_model_alias(family, CANDIDATE, version.version)
    return client().get_model_version(family, version.version)


def download_package(uri: str) -> Path:
    """The package folder of a `models:/` URI, downloaded once into
    `<root>/packages/.registry-cache/<name>/<version>` and checked against its `package.md5` tag."""
    from filelock import FileLock

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
    from mlflow.models import Model

    from worldforge.platform.packages import PackageError, package_md5

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


def _record_decision(decision: Decision) -> None:
    mlflow_client = client()
    summary = {
        f"{DECISION_TAG}{decision.id}": json.dumps(decision.as_dict(), separators=(",", ":"), default=str),
        "promotion.last_decision": decision.id,
        "promotion.last_outcome": decision.outcome,
        "promotion.failed_checks": ",".join(decision.failed_checks) or "none",
    }
    for key, value in summary.items():
        mlflow_client.set_model_version_tag(decision.family, decision.version, key, value)


def _record_history(family: str, action: str, version: str, previous: str | None, decision: str) -> None:
    event = {"action": action, "version": version, "previous": previous, "decision": decision, "at": _now()}
    client().set_registered_model_tag(
        family, f"{HISTORY_TAG}{_event_id()}", json.dumps(event, separators=(",", ":"))
    )


def champion_history(family: str) -> list[dict[str, Any]]:
    """Every champion change of `family`, oldest first: {action, version, previous, decision, at}."""
    try:
        tags = client().get_registered_model(family).tags
    except MlflowException as error:
        raise RegistryError(f"no registered model {family!r} ({error.message})") from None
    return [json.loads(tags[key]) for key in sorted(k for k in tags if k.startswith(HISTORY_TAG))]


def decisions(version: ModelVersion) -> list[Decision]:
    """The decisions recorded on a version, oldest first."""
    keys = sorted(k for k in version.tags if k.startswith(DECISION_TAG))
    return [Decision.from_dict(json.loads(version.tags[k])) for k in keys]


def promote(family: str, version: str | int, config: RegistryConfig | None = None) -> Decision:
    """Move `champion` to `version` if every gate passes; record the decision either way."""
    config = config or RegistryConfig()
    version = str(version)
    with registry_lock(config.lock_timeout_s):
        candidate = get_version(family, version)
        before = alias_version(family, CHAMPION)
        decision = Decision(
            id=_event_id(),
            family=family,
            version=version,
            outcome="rejected",
            champion_before=before,
            champion_after=before,
            gates=config.model_dump(mode="json"),
            decided_at=_now(),
            store="embedded, locked" if _is_embedded() else "remote",
        )
        if before == version:
            decision.outcome = "unchanged"
        else:
            champion = recorded_metrics(get_version(family, before)) if before else None
            decision.checks = check_gates(recorded_metrics(candidate), champion, config)
            if passed(decision.checks):
                client().set_registered_model_alias(family, CHAMPION, version)
                _record_history(family, "promote", version, before, decision.id)
                decision.champion_after = alias_version(family, CHAMPION)  # re-read: a remote race shows here
                decision.outcome = "promoted" if decision.champion_after == version else "superseded"
            else:
                decision.champion_after = alias_version(family, CHAMPION)
        _record_decision(decision)
    return decision


def champion_stack(family: str) -> list[str]:
    """The champions in order, replayed from the history: a promotion pushes, a rollback pops."""
    stack: list[str] = []
    for event in champion_history(family):
        if event["action"] == "promote":
            stack.append(event["version"])
        elif stack and stack[-1] == event["previous"]:
            stack.pop()
    return stack


def rollback(family: str, config: RegistryConfig | None = None) -> str:
    """Move `champion` back to the champion before it; returns that version. The history keeps
    both events, so a second rollback goes one further back."""
    config = config or RegistryConfig()
    with registry_lock(config.lock_timeout_s):
        current = alias_version(family, CHAMPION)
        if current is None:
            raise RegistryError(f"{family}: no champion to roll back")
        stack = champion_stack(family)
        if not stack or stack[-1] != current:
            raise RegistryError(
                f"{family}: champion is version {current}, but the recorded history ends at "
                f"{stack[-1] if stack else 'nothing'} (the alias was moved outside worldforge); "
                "promote the intended version with `worldforge registry promote`"
            )
        if len(stack) < 2:
            raise RegistryError(
                f"{family}: version {current} is the first champion; there is none to roll back to"
            )
        previous = stack[-2]
        decision_id = _event_id()
        client().set_registered_model_alias(family, CHAMPION, previous)
        _record_history(family, "rollback", previous, current, decision_id)
        _record_decision(
            Decision(
                id=decision_id,
                family=family,
                version=current,
                outcome="rolled_back",
                champion_before=current,
                champion_after=alias_version(family, CHAMPION),
                decided_at=_now(),
                store="embedded, locked" if _is_embedded() else "remote",
            )
        )
    return previous
