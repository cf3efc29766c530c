"""Promotion gates: may a candidate replace the champion? Pure: recorded metrics in, checks out.

Each check passes, fails, or is skipped (and says why). A candidate is promoted only when no
check fails. Checks relative to the champion are skipped while there is no champion; the
absolute checks (beats copy-last-frame in PSNR; places the agent and the balls better than
copy-last-frame) always apply. A compression stage, evaluated against its parent, may not place
them worse than the parent by more than `max_error_increase`. A metric that is missing fails its
check: what cannot be verified does not pass. (Position errors exist only on datasets with
ground-truth state: where the copy-last-frame error is absent too, those checks are skipped.)
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from worldforge.registry.config import RegistryConfig

# The metrics a registered version carries as tags (`metric.<name>`): what gates and people read.
KEY_METRICS = (
    "psnr_mean",
    "ssim_mean",
    "baseline_psnr_mean",
    "psnr_gain_over_baseline",
    "agent_position_error",
    "baseline_agent_position_error",
    "object_position_error",
    "baseline_object_position_error",
    "reference_agent_position_error",
    "reference_object_position_error",
    "fps_e2e",
    "fps_denoise",
    "latency_ms_median",
    "latency_ms_p95",
    "peak_memory_mb",
    "parameters",
    "flops_per_frame",
)


@dataclass
class Check:
    name: str
    status: Literal["pass", "fail", "skipped"]
    detail: str
    value: float | None = None
    threshold: float | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def _missing(name: str, metric: str, who: str) -> Check:
    return Check(
        name, "fail", f"{who} has no recorded {metric}: evaluate it (worldforge eval) and register it again"
    )


def beats_baseline(candidate: dict[str, Any], config: RegistryConfig) -> Check:
    name = "beats_copy_last_frame"
    if not config.require_beats_baseline:
        return Check(name, "skipped", "disabled (registry.require_beats_baseline=false)")
    for metric in ("psnr_mean", "baseline_psnr_mean"):
        if metric not in candidate:
            return _missing(name, metric, "candidate")
    gain = candidate["psnr_mean"] - candidate["baseline_psnr_mean"]
    status = "pass" if gain > 0 else "fail"
    detail = (
        f"psnr_mean {candidate['psnr_mean']:.3f} dB vs copy-last-frame "
        f"{candidate['baseline_psnr_mean']:.3f} dB ({gain:+.3f} dB)"
    )
    return Check(name, status, detail, value=gain, threshold=0.0)


def psnr_drop(candidate: dict[str, Any], champion: dict[str, Any] | None, config: RegistryConfig) -> Check:
    name = "psnr_drop_vs_champion"
    if champion is None:
        return Check(name, "skipped", "no champion yet", threshold=config.max_psnr_drop_db)
    if "psnr_mean" not in candidate:
        return _missing(name, "psnr_mean", "candidate")
    if "psnr_mean" not in champion:
        return _missing(name, "psnr_mean", "champion")
    drop = champion["psnr_mean"] - candidate["psnr_mean"]
    status = "pass" if drop <= config.max_psnr_drop_db else "fail"
    detail = (
        f"psnr_mean {candidate['psnr_mean']:.3f} dB vs champion {champion['psnr_mean']:.3f} dB: "
        f"drop {drop:.3f} dB (allowed {config.max_psnr_drop_db} dB)"
    )
    return Check(name, status, detail, value=drop, threshold=config.max_psnr_drop_db)


def fps_ratio(candidate: dict[str, Any], champion: dict[str, Any] | None, config: RegistryConfig) -> Check:
    metric = config.fps_metric
    name = f"{metric}_ratio_vs_champion"
    if champion is None:
        return Check(name, "skipped", "no champion yet", threshold=config.min_fps_ratio)
    if config.min_fps_ratio == 0:
        return Check(name, "skipped", "disabled (registry.min_fps_ratio=0)")
    if metric not in candidate:
        return _missing(name, metric, "candidate")
    if metric not in champion or not champion[metric]:
        return _missing(name, metric, "champion")
    mine, theirs = candidate.get("device"), champion.get("device")
    if mine and theirs and mine != theirs:
        return Check(
            name,
            "fail",
            f"measured on different devices ({mine} vs champion's {theirs}): speeds are not comparable; "
            "evaluate both on one device (worldforge eval MODEL --reference models:/FAMILY@champion)",
        )
    ratio = candidate[metric] / champion[metric]
    status = "pass" if ratio >= config.min_fps_ratio else "fail"
    detail = (
        f"{metric} {candidate[metric]:.2f} vs champion {champion[metric]:.2f}: {ratio:.3f}x "
        f"(required >= {config.min_fps_ratio}x)"
    )
    return Check(name, status, detail, value=ratio, threshold=config.min_fps_ratio)


POSITION_ERRORS = {"agent": "agent_position_error", "object": "object_position_error"}


def below_copy_last(candidate: dict[str, Any], what: str, config: RegistryConfig) -> Check:
    """The candidate places the agent (`what="agent"`) or the balls (`"object"`) closer to the
    simulator's truth than copy-last-frame does on the same episodes: it follows the actions and
    moves the world."""
    metric = POSITION_ERRORS[what]
    name = f"{what}_error_below_copy_last"
    if not config.require_action_following:
        return Check(name, "skipped", "disabled (registry.require_action_following=false)")
    baseline = f"baseline_{metric}"
    if baseline not in candidate:
        return Check(name, "skipped", f"no {baseline}: the dataset has no ground-truth {what} positions")
    if metric not in candidate:
        return _missing(name, metric, "candidate")
    mine, theirs = candidate[metric], candidate[baseline]
    ratio = mine / theirs if theirs else float("inf")
    status = "pass" if mine < theirs else "fail"
    detail = f"{metric} {mine:.4f} vs copy-last-frame {theirs:.4f} ({ratio:.2f}x, must be below 1x)"
    return Check(name, status, detail, value=ratio, threshold=1.0)


def error_vs_parent(candidate: dict[str, Any], what: str, config: RegistryConfig) -> Check:
    """A model evaluated against its parent (`reference_*` metrics: a compression stage) places the
    agent or the balls at most `max_error_increase` worse than the parent did on the same episodes."""
    metric = POSITION_ERRORS[what]
    name = f"{what}_error_vs_parent"
    limit = 1.0 + config.max_error_increase
    if not config.require_action_following:
        return Check(name, "skipped", "disabled (registry.require_action_following=false)")
    reference = f"reference_{metric}"
    if reference not in candidate:
        return Check(name, "skipped", "not evaluated against a parent", threshold=limit)
    if metric not in candidate:
        return _missing(name, metric, "candidate")
    mine, theirs = candidate[metric], candidate[reference]
    ratio = mine / theirs if theirs else float("inf")
    status = "pass" if ratio <= limit else "fail"
    detail = f"{metric} {mine:.4f} vs parent {theirs:.4f} ({ratio:.2f}x, allowed {limit:.2f}x)"
    return Check(name, status, detail, value=ratio, threshold=limit)


def check_gates(
    candidate: dict[str, Any], champion: dict[str, Any] | None, config: RegistryConfig
) -> list[Check]:
    """The checks of `config` for `candidate`'s metrics against `champion`'s (None: no champion).

    Metrics are `{"psnr_mean": 24.1, "fps_e2e": 30.2, "device": "cpu", ...}` as recorded on the
    registered versions."""
    return [
        beats_baseline(candidate, config),
        below_copy_last(candidate, "agent", config),
        below_copy_last(candidate, "object", config),
        error_vs_parent(candidate, "agent", config),
        error_vs_parent(candidate, "object", config),
        psnr_drop(candidate, champion, config),
        fps_ratio(candidate, champion, config),
    ]


def passed(checks: list[Check]) -> bool:
    return all(check.status != "fail" for check in checks)


Outcome = Literal["promoted", "rejected", "superseded", "unchanged", "rolled_back"]


@dataclass
class Decision:
    """A recorded promotion decision on one version: `promoted` (alias moved), `rejected` (a check
    failed), `superseded` (passed, but a concurrent promotion holds the alias), `unchanged`
    (already champion), `rolled_back` (was champion, rolled back)."""

    id: str
    family: str
    version: str
    outcome: Outcome
    champion_before: str | None
    champion_after: str | None
    checks: list[Check] = field(default_factory=list)
    gates: dict[str, Any] = field(default_factory=dict)
    decided_at: str = ""
    store: str = ""

    @property
    def promoted(self) -> bool:
        return self.outcome == "promoted"

    @property
    def failed_checks(self) -> list[str]:
        return [check.name for check in self.checks if check.status == "fail"]

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "promoted": self.promoted, "failed_checks": self.failed_checks}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Decision:
        fields = {k: v for k, v in data.items() if k not in ("promoted", "failed_checks")}
        return cls(**{**fields, "checks": [Check(**c) for c in data.get("checks", [])]})
