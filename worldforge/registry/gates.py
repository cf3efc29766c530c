"""Promotion gates: may a candidate replace the champion? Pure: recorded metrics in, checks out.

Each check passes, fails, or is skipped (and says why). A candidate is promoted only when no
check fails. A metric that is missing fails its check: what cannot be verified does not pass.

Absolute checks, on the candidate's own evaluation:
- beats copy-last-frame in PSNR, and places the agent and the balls closer to the simulator's
  truth than copy-last-frame (position errors exist only on datasets with simulator state: where
  copy-last-frame's error is absent too, those checks are skipped);
- action sensitivity, on a dataset without that state: `action_sensitivity_db_mean` >=
  `min_action_sensitivity_db` (`evaluation/sensitivity.py`): a model that ignores its actions
  scores 0 there, whatever its PSNR;
- realism: gap = `truth_realism_psnr_h{H} - realism_psnr_h{H}` <= `max_realism_gap_db` at
  H = `realism_horizon`. Realism is scored against the simulator's state, so on a dataset without
  it (no `baseline_agent_position_error`, e.g. a video folder) the check is skipped; a simulator
  model without realism metrics fails;
- sharpness: `sharpness_range[0] <= sharpness_mean <= sharpness_range[1]`. PSNR rewards blur
  (the mean of the possible futures scores well): this is the check that refuses a blur.

A compressed model, evaluated against its parent on the same episodes (`reference_*` metrics),
may not lose more than m = `max_error_increase` of what the parent had:
- agent / ball position error <= parent's * (1 + m);
- realism gap <= gap_parent + m * max(gap_parent, 0) + `realism_slack_db` (the truth's realism is
  the same for both: same episodes);
- sharpness between the parent's and the truth's 1.0, widened by the factor 1 + m:
  min(s_parent, 1) / (1 + m) <= s <= max(s_parent, 1) * (1 + m). It may get closer to the truth
  freely; blurrier or noisier than the parent only within the margin.

Checks relative to the champion are skipped while there is no champion: PSNR drop, and frames/s
(see `fps_ratio` for how it tells a slowdown from timing noise).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Literal, get_args

from worldforge.registry.config import RealismHorizon, RegistryConfig

REALISM_HORIZONS = get_args(RealismHorizon)

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
    "reference_psnr_mean",
    "reference_agent_position_error",
    "reference_object_position_error",
    "sharpness_mean",
    "reference_sharpness_mean",
    "action_sensitivity_db_mean",
    "action_sensitivity_db_h8",
    *(
        f"{prefix}realism_psnr_h{h}"
        for h in REALISM_HORIZONS
        for prefix in ("", "truth_", "baseline_", "reference_")
    ),
    *(f"{prefix}object_survival_h{h}" for h in REALISM_HORIZONS for prefix in ("", "baseline_")),
    "fps_e2e",
    "fps_denoise",
    "fps_e2e_spread",
    "fps_denoise_spread",
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
    if metric.startswith("reference_"):
        how = "evaluate it against its parent (worldforge eval MODEL --reference PARENT)"
    else:
        how = "evaluate it (worldforge eval)"
    return Check(name, "fail", f"{who} has no recorded {metric}: {how} and register it again")


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
    """Candidate frames/s over the champion's >= `min_fps_ratio`, unless the shortfall is timing noise.

    Each measurement is the median of several timed runs and records its spread (`fps_*_spread`:
    half the runs' range over the median, `evaluation/cost.py`). noise = candidate's spread +
    champion's, capped at `max_fps_noise` (a version without a recorded spread adds 0). Then:
    ratio >= min_fps_ratio passes; ratio < min_fps_ratio * (1 - noise) fails (clearly slower);
    in between the wall clock cannot tell, and the deterministic cost decides: the check passes
    when champion flops_per_frame / candidate flops_per_frame >= min_fps_ratio."""
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
    required = config.min_fps_ratio
    spreads = candidate.get(f"{metric}_spread", 0.0), champion.get(f"{metric}_spread", 0.0)
    noise = min(sum(spreads), config.max_fps_noise)
    floor = required * (1.0 - noise)
    ratio = candidate[metric] / champion[metric]
    detail = (
        f"{metric} {candidate[metric]:.2f} vs champion {champion[metric]:.2f}: {ratio:.3f}x (required >= "
        f"{required}x; timing noise {noise:.1%} = spreads {spreads[0]:.1%} + champion's {spreads[1]:.1%}, "
        f"capped at {config.max_fps_noise:.0%}, so >= {floor:.3f}x is within noise)"
    )
    if ratio >= required:
        return Check(name, "pass", detail, value=ratio, threshold=floor)
    if ratio < floor:
        return Check(name, "fail", f"{detail}: clearly slower", value=ratio, threshold=floor)
    flops = candidate.get("flops_per_frame"), champion.get("flops_per_frame")
    if not all(flops):
        detail += ": within noise, and without flops_per_frame on both nothing can tell; evaluate both again"
        return Check(name, "fail", detail, value=ratio, threshold=floor)
    saving = flops[1] / flops[0]
    status = "pass" if saving >= required else "fail"
    detail += (
        f": within noise, so FLOPs decide: {flops[0]:.3g} per frame vs champion's {flops[1]:.3g} "
        f"({saving:.3f}x, required >= {required}x)"
    )
    return Check(name, status, detail, value=ratio, threshold=floor)


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


def action_sensitivity(candidate: dict[str, Any], config: RegistryConfig) -> Check:
    """On a dataset without ground-truth state, the candidate's future depends on its actions:
    `action_sensitivity_db_mean` >= `min_action_sensitivity_db`. Where the state exists, the agent
    error check judges action-following instead."""
    name = "action_sensitivity"
    limit = config.min_action_sensitivity_db
    if limit is None:
        return Check(name, "skipped", "disabled (registry.min_action_sensitivity_db=null)")
    if "baseline_agent_position_error" in candidate:
        return Check(name, "skipped", "the dataset has ground-truth state: agent_error_below_copy_last judges it")
    metric = "action_sensitivity_db_mean"
    if metric not in candidate:
        return _missing(name, metric, "candidate")
    value = candidate[metric]
    status = "pass" if value >= limit else "fail"
    detail = (
        f"{metric} {value:.3f} dB (rollouts under the recorded actions vs another episode's; 0 = ignores "
        f"its actions; required >= {limit} dB)"
    )
    return Check(name, status, detail, value=value, threshold=limit)


def realism_expected(candidate: dict[str, Any], horizon: int) -> bool:
    """Realism is scored against the simulator's state: expected where it is recorded, or where
    copy-last-frame's position error (scored against that state too) is."""
    keys = (f"realism_psnr_h{horizon}", f"truth_realism_psnr_h{horizon}", "baseline_agent_position_error")
    return any(key in candidate for key in keys)


NO_REALISM = "no realism_psnr_h{}: the dataset has no simulator state to score realism against"


def realism_gap(candidate: dict[str, Any], config: RegistryConfig) -> Check:
    """How much less like the simulator's own frames the candidate's frames are than the recorded
    ones, at step `realism_horizon`: at most `max_realism_gap_db`."""
    name = "realism_gap"
    if config.max_realism_gap_db is None:
        return Check(name, "skipped", "disabled (registry.max_realism_gap_db=null)")
    horizon, limit = config.realism_horizon, config.max_realism_gap_db
    mine, truth = f"realism_psnr_h{horizon}", f"truth_realism_psnr_h{horizon}"
    if not realism_expected(candidate, horizon):
        return Check(name, "skipped", NO_REALISM.format(horizon))
    for metric in (mine, truth):
        if metric not in candidate:
            return Check(
                name,
                "fail",
                f"candidate has no recorded {metric} on a dataset with simulator state: evaluate it "
                f"(worldforge eval, with a rollout of at least {horizon} frames: eval.horizon or "
                "eval.long_horizon) and register it again",
            )
    gap = candidate[truth] - candidate[mine]
    status = "pass" if gap <= limit else "fail"
    detail = (
        f"{mine} {candidate[mine]:.2f} dB vs the recorded frames' {candidate[truth]:.2f} dB: "
        f"gap {gap:.2f} dB (allowed {limit} dB)"
    )
    return Check(name, status, detail, value=gap, threshold=limit)


def sharpness_in_range(candidate: dict[str, Any], config: RegistryConfig) -> Check:
    """sharpness_mean (1.0: as sharp as the truth) within `sharpness_range`."""
    name = "sharpness_in_range"
    if config.sharpness_range is None:
        return Check(name, "skipped", "disabled (registry.sharpness_range=null)")
    if "sharpness_mean" not in candidate:
        return _missing(name, "sharpness_mean", "candidate")
    low, high = config.sharpness_range
    sharpness = candidate["sharpness_mean"]
    status = "pass" if low <= sharpness <= high else "fail"
    verdict = (
        "blurrier than allowed" if sharpness < low else "noisier than allowed" if sharpness > high else "ok"
    )
    detail = f"sharpness_mean {sharpness:.3f} (1 = as sharp as the truth; allowed [{low}, {high}]): {verdict}"
    return Check(name, status, detail, value=sharpness, threshold=low if sharpness < 1 else high)


def realism_vs_parent(candidate: dict[str, Any], config: RegistryConfig) -> Check:
    """A model evaluated against its parent: realism gap <= the parent's + `max_error_increase` of
    it + `realism_slack_db` (both gaps against the same recorded frames)."""
    name = "realism_gap_vs_parent"
    if config.max_realism_gap_db is None:
        return Check(name, "skipped", "disabled (registry.max_realism_gap_db=null)")
    horizon = config.realism_horizon
    mine, truth, reference = (f"{p}realism_psnr_h{horizon}" for p in ("", "truth_", "reference_"))
    if "reference_psnr_mean" not in candidate:
        return Check(name, "skipped", "not evaluated against a parent")
    if not realism_expected(candidate, horizon):
        return Check(name, "skipped", NO_REALISM.format(horizon))
    for metric in (mine, truth, reference):
        if metric not in candidate:
            return _missing(name, metric, "candidate")
    gap, parent_gap = candidate[truth] - candidate[mine], candidate[truth] - candidate[reference]
    allowed = parent_gap + config.max_error_increase * max(parent_gap, 0.0) + config.realism_slack_db
    status = "pass" if gap <= allowed else "fail"
    detail = (
        f"realism gap at h{horizon} {gap:.2f} dB vs parent {parent_gap:.2f} dB (allowed {allowed:.2f} dB: "
        f"parent's + {config.max_error_increase:.0%} of it + {config.realism_slack_db} dB)"
    )
    return Check(name, status, detail, value=gap, threshold=allowed)


def sharpness_vs_parent(candidate: dict[str, Any], config: RegistryConfig) -> Check:
    """A model evaluated against its parent: sharpness between the parent's and the truth's 1.0,
    widened by the factor 1 + `max_error_increase`."""
    name = "sharpness_vs_parent"
    if config.sharpness_range is None:
        return Check(name, "skipped", "disabled (registry.sharpness_range=null)")
    if "reference_psnr_mean" not in candidate:
        return Check(name, "skipped", "not evaluated against a parent")
    for metric in ("sharpness_mean", "reference_sharpness_mean"):
        if metric not in candidate:
            return _missing(name, metric, "candidate")
    mine, parent = candidate["sharpness_mean"], candidate["reference_sharpness_mean"]
    widen = 1.0 + config.max_error_increase
    low, high = min(parent, 1.0) / widen, max(parent, 1.0) * widen
    status = "pass" if low <= mine <= high else "fail"
    detail = f"sharpness_mean {mine:.3f} vs parent {parent:.3f} (allowed [{low:.3f}, {high:.3f}])"
    return Check(name, status, detail, value=mine, threshold=low if mine < 1 else high)


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
        action_sensitivity(candidate, config),
        realism_gap(candidate, config),
        sharpness_in_range(candidate, config),
        error_vs_parent(candidate, "agent", config),
        error_vs_parent(candidate, "object", config),
        realism_vs_parent(candidate, config),
        sharpness_vs_parent(candidate, config),
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
