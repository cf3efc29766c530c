"""How much each prunable unit of the world DiT matters: attention heads, MLP channels, blocks.

Calibration clips go through the model's own training objective (`flow_matching_loss`: noise
levels drawn as in training, seeded), with hooks on the DiT's stable submodule names:

    blocks.{i}.adaln      output (B, T, 6D): the per-frame gates of the attention and MLP branches
    blocks.{i}.attn.proj  input  (B, L, H hd): every head's output, L = T N tokens
    blocks.{i}.mlp.fc2    input  (B, T, N, hidden): every MLP channel's activation
    blocks.{i}            input and output (B, T, N, D): the block's update of the residual stream

Two scores, each in one unit for heads, channels and blocks alike, so they can be ranked together:

- `activation`: the energy a unit writes into the residual stream, mean over tokens of
  ||gate * contribution||^2, where a head's contribution is W_o[:, head] o_head, a channel's is
  a_c W_fc2[:, c] and a block's is its whole update x_out - x_in. A unit that writes nothing
  (zero weights, or a gate that is always shut) scores exactly 0.
- `taylor`: every unit gets a mask m = 1 on its output (a head's slice of the proj input, a
  channel's activation, a block's update); removing the unit is m -> 0, so the loss changes by
  about -dL/dm. The score is (dL/dm)^2 averaged over calibration batches (Molchanov et al., 2019).

Scores are computed on the model as it is (eval mode, no weights change); masks live in hooks only.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from worldforge.errors import WorldforgeError
from worldforge.models.objective import flow_matching_loss
from worldforge.models.world_model import WorldModel


class CalibrationError(WorldforgeError, ValueError):
    """The calibration data cannot score the model (no clips, wrong keys)."""


@dataclass
class ImportanceScores:
    """Per block i: heads[i] (H_i,), channels[i] (hidden_i,); blocks (depth,). Higher = keep."""

    method: str
    heads: list[torch.Tensor]
    channels: list[torch.Tensor]
    blocks: torch.Tensor
    clips: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "method": self.method,
            "clips": self.clips,
            "heads": [s.tolist() for s in self.heads],
            "channels": [s.tolist() for s in self.channels],
            "blocks": self.blocks.tolist(),
        }


class _Recorder:
    """The hooks of one scoring pass and what they accumulate (float64 sums, on the model's device)."""

    def __init__(self, model: WorldModel, method: str):
        self.method = method
        blocks = model.dit.blocks
        device = next(model.dit.parameters()).device
        self.head_dim = model.model_cfg.head_dim
        self.heads = [torch.zeros(b.attn.heads, dtype=torch.float64, device=device) for b in blocks]
        self.channels = [
            torch.zeros(b.mlp.fc1.out_features, dtype=torch.float64, device=device) for b in blocks
        ]
        self.blocks = torch.zeros(len(blocks), dtype=torch.float64, device=device)
        self.gates: list[tuple[torch.Tensor, torch.Tensor] | None] = [None] * len(blocks)
        self.masks: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]] = []
        if method == "taylor":
            self.masks = [
                (
                    torch.ones(b.attn.heads, device=device, requires_grad=True),
                    torch.ones(b.mlp.fc1.out_features, device=device, requires_grad=True),
                    torch.ones((), device=device, requires_grad=True),
                )
                for b in blocks
            ]

    @contextlib.contextmanager
    def hooks(self, model: WorldModel) -> Iterator[None]:
        handles = []
        for i, block in enumerate(model.dit.blocks):
            handles += [
                block.adaln.register_forward_hook(self._gates_hook(i)),
                block.attn.proj.register_forward_pre_hook(self._heads_hook(i, block.attn.proj.weight)),
                block.mlp.fc2.register_forward_pre_hook(self._channels_hook(i, block.mlp.fc2.weight)),
                block.register_forward_hook(self._block_hook(i)),
            ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def _gates_hook(self, i: int):
        def hook(module, args, output):
            chunks = output.unsqueeze(2).chunk(6, dim=-1)  # 6 x (B, T, 1, D)
            self.gates[i] = (chunks[2].detach(), chunks[5].detach())  # gate1 (attention), gate2 (MLP)

        return hook

    def _heads_hook(self, i: int, weight: torch.Tensor):
        def hook(module, args):
            (heads_out,) = args  # (B, L, H hd)
            if self.method == "taylor":
                scale = self.masks[i][0].repeat_interleave(self.head_dim)  # (H hd,)
                return (heads_out * scale,)
            gate = self.gates[i][0]  # (B, T, 1, D)
            b, t = gate.shape[:2]
            with torch.no_grad():
                for h in range(self.heads[i].numel()):
                    part = slice(h * self.head_dim, (h + 1) * self.head_dim)
                    contribution = heads_out[..., part] @ weight[:, part].T  # (B, L, D)
                    written = contribution.view(b, t, -1, contribution.shape[-1]) * gate  # (B, T, N, D)
                    self.heads[i][h] += written.double().pow(2).sum(-1).mean()
            return None

        return hook

    def _channels_hook(self, i: int, weight: torch.Tensor):
        def hook(module, args):
            (activation,) = args  # (B, T, N, hidden)
            if self.method == "taylor":
                return (activation * self.masks[i][1],)
            gate = self.gates[i][1].squeeze(2)  # (B, T, D)
            with torch.no_grad():
                # E over tokens of sum_d (gate_d a_c W[d, c])^2, without forming (B, T, N, hidden, D)
                energy = torch.einsum(
                    "btnc,btd,dc->c", activation.double().pow(2), gate.double().pow(2), weight.double().pow(2)
                )
                self.channels[i] += energy / activation[..., 0].numel()
            return None

        return hook

    def _block_hook(self, i: int):
        def hook(module, args, output):
            x = args[0]  # (B, T, N, D)
            if self.method == "taylor":
                return x + self.masks[i][2] * (output - x)
            with torch.no_grad():
                self.blocks[i] += (output - x).double().pow(2).sum(-1).mean()
            return None

        return hook

    def accumulate_gradients(self, loss: torch.Tensor) -> None:
        flat = [mask for masks in self.masks for mask in masks]
        grads = torch.autograd.grad(loss, flat)
        for i in range(len(self.masks)):
            head, channel, block = grads[3 * i : 3 * i + 3]
            self.heads[i] += head.double().pow(2)
            self.channels[i] += channel.double().pow(2)
            self.blocks[i] += block.double().pow(2)


def importance_scores(
    model: WorldModel, batches: Iterable[dict[str, torch.Tensor]], method: str, clips: int, seed: int = 0
) -> ImportanceScores:
    """Score every head, MLP channel and block of `model.dit` on calibration batches.

    batches: dicts with "frames" (B, T, C, H, W) in [-1, 1] and "actions" (B, T[, A]), as
    `make_loader` yields; read until `clips` clips have been seen (the last batch is cut).
    method: "taylor" or "activation" (see the module docstring). seed: the noise levels and noise.
    Returns scores averaged over batches, on the CPU. Raises CalibrationError without clips."""
    if method not in ("taylor", "activation"):
        raise CalibrationError(f"prune.method {method!r}: expected taylor or activation")
    device = next(model.dit.parameters()).device
    recorder = _Recorder(model, method)
    generator = torch.Generator(device=device).manual_seed(seed)
    was_training = model.training
    model.eval()  # no grad checkpointing: its recomputation would run every hook twice
    seen = batches_seen = 0
    try:
        with recorder.hooks(model):
            for batch in batches:
                if seen >= clips:
                    break
                if "frames" not in batch or "actions" not in batch:
                    raise CalibrationError(
                        f"calibration batch has keys {sorted(batch)}; expected frames and actions"
                    )
                take = min(clips - seen, batch["frames"].shape[0])
                frames = batch["frames"][:take].to(device)
                actions = batch["actions"][:take].to(device)
                if method == "taylor":
                    loss, _ = flow_matching_loss(model, frames, actions, generator=generator)
                    recorder.accumulate_gradients(loss)
                else:
                    with torch.no_grad():
                        flow_matching_loss(model, frames, actions, generator=generator)
                seen += take
                batches_seen += 1
    finally:
        model.train(was_training)
    if seen == 0:
        raise CalibrationError("no calibration clips: the calibration split yielded no batches")
    return ImportanceScores(
        method=method,
        heads=[(s / batches_seen).float().cpu() for s in recorder.heads],
        channels=[(s / batches_seen).float().cpu() for s in recorder.channels],
        blocks=(recorder.blocks / batches_seen).float().cpu(),
        clips=seen,
    )
