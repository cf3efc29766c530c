"""Which heads, MLP channels and blocks the pruned DiT keeps, chosen from importance scores.

Explicit parts of the target go first: `depth` drops the lowest-scoring blocks, `heads` and
`mlp_hidden` keep the top-scoring heads and channels of every block. A `params` or `flops` budget
then removes units greedily, cheapest loss per unit of cost first (score / cost, the greedy
answer to "lose the least score while removing this much"), until the DiT is within budget, and
not more than `prune.tolerance` under it (a whole block goes only when that does not overshoot):

- heads and MLP channel groups (`mlp_multiple` channels, least important first) have a fixed cost;
- a block's cost is what is left of it, so removing width from a block makes dropping it dearer;
- every kept block keeps at least one head and one channel, and the DiT at least one block.

Costs are exact, not estimated: parameters and FLOPs of this DiT are linear in each block's heads
and MLP width and in its number of blocks, so the cost of one head, one channel and one block's
fixed part (AdaLN, biases, norms) is measured once by building variants on the meta device.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, NamedTuple

import torch

from worldforge.compression.prune.config import BUDGETS, PruneConfig
from worldforge.compression.prune.importance import ImportanceScores
from worldforge.errors import WorldforgeError
from worldforge.models.flops import count_parameters, rollout_flops
from worldforge.models.world_model import WorldModel, build_world_model, package_config


class PrunePlanError(WorldforgeError, ValueError):
    """A pruning target this model cannot meet; says which prune.target key and what is reachable."""


@dataclass
class BlockPlan:
    source: int  # index of this block in the unpruned DiT
    heads: list[int]  # kept heads, ascending source indices
    channels: list[int]  # kept MLP channels, ascending source indices


@dataclass
class PrunePlan:
    blocks: list[BlockPlan]
    source_heads: list[int]  # heads per block of the unpruned DiT
    source_channels: list[int]  # MLP width per block of the unpruned DiT

    def model_fields(self) -> dict[str, Any]:
        """The `model` config fields that describe the pruned DiT."""
        return {
            "depth": len(self.blocks),
            "heads_per_block": [len(b.heads) for b in self.blocks],
            "mlp_hidden_per_block": [len(b.channels) for b in self.blocks],
        }

    @property
    def is_identity(self) -> bool:
        return len(self.blocks) == len(self.source_heads) and all(
            len(b.heads) == self.source_heads[b.source] and len(b.channels) == self.source_channels[b.source]
            for b in self.blocks
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "source_heads": self.source_heads,
            "source_channels": self.source_channels,
            "blocks": [{"source": b.source, "heads": b.heads, "channels": b.channels} for b in self.blocks],
        }


@dataclass
class UnitCosts:
    """Cost of one unit in one measure (parameters or FLOPs per frame) of a DiT."""

    measure: str
    head: float
    channel: float
    block_fixed: float  # what a block costs beyond its heads and channels
    other: float  # everything outside the blocks (embeddings, final layer)

    def block(self, heads: int, channels: int) -> float:
        return self.block_fixed + heads * self.head + channels * self.channel


def dit_cost(model: WorldModel, measure: str) -> float:
    """params: parameters of the DiT. flops: DiT FLOPs per generated frame in a KV-cached rollout
    (every solver step + committing the frame to the cache; the tokenizer's decode left out)."""
    if measure == "params":
        return float(count_parameters(model.dit))
    return dit_flops(rollout_flops(model))


def dit_flops(rollout_costs: dict[str, int]) -> float:
    """The DiT's share of `rollout_flops`: solver steps + committing the frame (no decode)."""
    return float(rollout_costs["denoise"] + rollout_costs["commit"])


def _variant_cost(config: dict[str, Any], measure: str, **fields: Any) -> float:
    variant = {**config, "model": {**config["model"], **fields}}
    with torch.device("meta"):
        return dit_cost(build_world_model(variant), measure)


def unit_costs(model: WorldModel, measure: str) -> UnitCosts:
    """Exact per-unit costs from four meta-device builds: as is, block 0 with one more head, with
    one more channel, and one more block shaped like block 0."""
    config = package_config(model)
    fields = model.model_cfg
    heads, channels = list(fields.heads_per_block), list(fields.mlp_hidden_per_block)
    base = _variant_cost(config, measure)
    head = _variant_cost(config, measure, heads_per_block=[heads[0] + 1] + heads[1:]) - base
    channel = _variant_cost(config, measure, mlp_hidden_per_block=[channels[0] + 1] + channels[1:]) - base
    block = (
        _variant_cost(
            config,
            measure,
            depth=fields.depth + 1,
            heads_per_block=heads + heads[:1],
            mlp_hidden_per_block=channels + channels[:1],
        )
        - base
    )
    fixed = block - heads[0] * head - channels[0] * channel
    other = base - sum(fixed + h * head + c * channel for h, c in zip(heads, channels))
    return UnitCosts(measure, head, channel, fixed, other)


class Candidate(NamedTuple):
    """A head or a group of MLP channels of one block that the budget may remove."""

    ratio: float  # score per unit of cost: lowest goes first
    kind: str  # "head" | "mlp"
    block: int
    members: list[int]  # head index, or channel indices

    def cost(self, costs: UnitCosts) -> float:
        return len(self.members) * (costs.head if self.kind == "head" else costs.channel)


def _ascending(scores: torch.Tensor, keep: list[int]) -> list[int]:
    """`keep` ordered by score, lowest first; ties broken by index (stable)."""
    order = torch.argsort(scores[keep], stable=True).tolist()
    return [keep[i] for i in order]


def _top(scores: torch.Tensor, keep: list[int], count: int) -> list[int]:
    return sorted(_ascending(scores, keep)[len(keep) - count :])


class _Pruning:
    """The units still kept while a plan is being chosen."""

    def __init__(self, scores: ImportanceScores):
        self.scores = scores
        self.heads = [list(range(s.numel())) for s in scores.heads]
        self.channels = [list(range(s.numel())) for s in scores.channels]
        self.alive = list(range(len(scores.heads)))

    def explicit(self, target: dict[str, float]) -> None:
        if "depth" in target:
            depth = int(target["depth"])
            if depth > len(self.alive):
                raise PrunePlanError(
                    f"prune.target depth={depth}: the model has only {len(self.alive)} blocks"
                )
            self.alive = _top(self.scores.blocks, self.alive, depth)
        for key, kept, scores in (
            ("heads", self.heads, self.scores.heads),
            ("mlp_hidden", self.channels, self.scores.channels),
        ):
            if key not in target:
                continue
            count = int(target[key])
            for i in self.alive:
                if count > len(kept[i]):
                    raise PrunePlanError(f"prune.target {key}={count}: block {i} has only {len(kept[i])}")
                kept[i] = _top(scores[i], kept[i], count)

    def cost(self, costs: UnitCosts) -> float:
        return costs.other + sum(self._block_cost(i, costs) for i in self.alive)

    def _block_cost(self, i: int, costs: UnitCosts) -> float:
        return costs.block(len(self.heads[i]), len(self.channels[i]))

    def _kept(self, kind: str, i: int) -> list[int]:
        return self.heads[i] if kind == "head" else self.channels[i]

    def width_candidates(self, units: list[str], costs: UnitCosts, multiple: int) -> list[Candidate]:
        """Every removable head and channel group of the kept blocks, cheapest (score / cost) first."""
        candidates = []
        for i in self.alive:
            if "heads" in units:
                for h in _ascending(self.scores.heads[i], self.heads[i])[:-1]:
                    candidates.append(Candidate(float(self.scores.heads[i][h]) / costs.head, "head", i, [h]))
            if "mlp" in units:
                ordered = _ascending(self.scores.channels[i], self.channels[i])
                for g in range((len(ordered) - 1) // multiple):
                    group = ordered[g * multiple : (g + 1) * multiple]
                    ratio = float(self.scores.channels[i][group].sum()) / (len(group) * costs.channel)
                    candidates.append(Candidate(ratio, "mlp", i, group))
        return sorted(candidates, key=lambda c: (c.ratio, c.kind != "head", c.block))

    def _cheapest_block(self, costs: UnitCosts) -> tuple[int | None, float]:
        """The kept block with the lowest score / cost (None while only one is left)."""
        if len(self.alive) < 2:
            return None, float("inf")
        ratios = {i: float(self.scores.blocks[i]) / self._block_cost(i, costs) for i in self.alive}
        block = min(ratios, key=ratios.get)
        return block, ratios[block]

    def meet_budget(self, config: PruneConfig, costs: UnitCosts, total: float, fraction: float) -> None:
        limit = fraction * total * (1 + 1e-9)  # float slack: a plan exactly on budget meets it
        floor = (fraction - config.tolerance) * total
        current = self.cost(costs)
        candidates = iter(self.width_candidates(config.units, costs, config.mlp_multiple))
        width = next(candidates, None)
        removed: list[Candidate] = []
        while current > limit:
            while width is not None and width.block not in self.alive:
                width = next(candidates, None)
            block, block_ratio = (
                self._cheapest_block(costs) if "blocks" in config.units else (None, float("inf"))
            )
            if block is not None and width is not None and current - self._block_cost(block, costs) < floor:
                block, block_ratio = None, float("inf")  # a whole block would overshoot the budget's floor
            if width is None and block is None:
                raise PrunePlanError(
                    f"prune.target {costs.measure}={fraction}: removing {', '.join(config.units)} reaches at "
                    f"best {current / total:.3f} of the DiT's {costs.measure} (every block keeps a head and "
                    "a channel); raise the target or add units (prune.units: heads, mlp, blocks)"
                )
            if width is not None and width.ratio <= block_ratio:
                kept = self._kept(width.kind, width.block)
                kept[:] = [u for u in kept if u not in width.members]
                current -= width.cost(costs)
                removed.append(width)
                width = next(candidates, None)
            else:
                current -= self._block_cost(block, costs)
                self.alive.remove(block)
        # The last removal (a whole block, often) may overshoot: give back the most valuable width
        # that still fits, so the model ends as close under the budget as the units allow.
        for candidate in sorted(removed, key=lambda c: -c.ratio):
            if candidate.block in self.alive and current + candidate.cost(costs) <= limit:
                self._kept(candidate.kind, candidate.block).extend(candidate.members)
                current += candidate.cost(costs)

    def plan(self) -> PrunePlan:
        return PrunePlan(
            blocks=[
                BlockPlan(i, sorted(self.heads[i]), sorted(self.channels[i])) for i in sorted(self.alive)
            ],
            source_heads=[s.numel() for s in self.scores.heads],
            source_channels=[s.numel() for s in self.scores.channels],
        )


def plan_pruning(model: WorldModel, scores: ImportanceScores, config: PruneConfig) -> PrunePlan:
    """The plan that meets `config.target` on `model`, removing the least important units.

    Raises PrunePlanError when the target asks for more than the model has, or for a budget
    that removing `config.units` cannot reach."""
    shapes = ([b.attn.heads for b in model.dit.blocks], [b.mlp.fc1.out_features for b in model.dit.blocks])
    if shapes != ([s.numel() for s in scores.heads], [s.numel() for s in scores.channels]):
        raise PrunePlanError("importance scores were computed for another architecture than this model's")
    pruning = _Pruning(scores)
    pruning.explicit(config.target)
    budget = next((key for key in BUDGETS if key in config.target), None)
    if budget is not None:
        costs = unit_costs(model, budget)
        total = costs.other + sum(costs.block(h, c) for h, c in zip(*shapes))
        pruning.meet_budget(config, costs, total, config.target[budget])
    return pruning.plan()
