"""Promotion and rollback of the `champion` alias: gates checked against the champion, every
decision and every champion change recorded as its own tag (never overwritten)."""

from __future__ import annotations

import json
from typing import Any

from mlflow.entities.model_registry import ModelVersion
from mlflow.exceptions import MlflowException

from worldforge.registry.config import RegistryConfig
from worldforge.registry.gates import Decision, check_gates, passed
from worldforge.registry.query import alias_version, get_version, recorded_metrics
from worldforge.registry.store import (
    CHAMPION,
    RegistryError,
    client,
    event_id,
    is_embedded,
    now,
    registry_lock,
)

DECISION_TAG = "decision."
HISTORY_TAG = "champion.history."


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
    event = {"action": action, "version": version, "previous": previous, "decision": decision, "at": now()}
    client().set_registered_model_tag(
        family, f"{HISTORY_TAG}{event_id()}", json.dumps(event, separators=(",", ":"))
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
            id=event_id(),
            family=family,
            version=version,
            outcome="rejected",
            champion_before=before,
            champion_after=before,
            gates=config.model_dump(mode="json"),
            decided_at=now(),
            store="embedded, locked" if is_embedded() else "remote",
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
        decision_id = event_id()
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
                decided_at=now(),
                store="embedded, locked" if is_embedded() else "remote",
            )
        )
    return previous
