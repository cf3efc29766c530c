"""Promotion gates: may a candidate replace the champion? Pure: recorded metrics in, checks out.

Each check passes, fails, or is skipped (and says why). A candidate is promoted only when no
check fails. Checks relative to the champion are skipped while there is no champion; the
absolute check (beats copy-last-frame) always applies. A metric that is missing fails its check:
what cannot be verified does not pass.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from worldforge.evaluation.config import RegistryConfig

# The metrics a registered version carries as tags (`metric.<name>`): what gates and people read.
KEY_METRICS = (
    "psnr_mean",
    "ssim_mean",
    "baseline_psnr_mean",
    "psnr_gain_over_baseline",
    "agent_position_error",
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


def check_gates(
    candidate: dict[str, Any], champion: dict[str, Any] | None, config: RegistryConfig
) -> list[Check]:
    """The checks of `config` for `candidate`'s metrics against `champion`'s (None: no champion).

    Metrics are `{"psnr_mean": 24.1, "fps_e2e": 30.2, "device": "cpu", ...}` as recorded on the
    registered versions."""
    return [
        beats_baseline(candidate, config),
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
