"""Cut a world model down to a `PrunePlan`: a physically smaller network, not a masked one.

The pruned model is rebuilt from its new config (`depth`, `heads_per_block`,
`mlp_hidden_per_block`) and loaded, strictly, with slices of the unpruned weights:

- MLP channels: `modelopt.torch.nas` (the search space FastNAS prunes with). Each block's `Mlp`
  (fc1 -> GELU -> fc2) is converted to a dynamic module, where fc1's output width and fc2's input
  width are one hparam; the plan's order is enforced on it, the kept width selected and the module
  exported to plain `nn.Linear`s.
- Attention heads: plain torch. FastNAS cannot trace `Attention.forward` (the fused qkv output is
  unpacked into q, k, v: "TraceError: Proxy object cannot be iterated"), so it offers no hparam
  for heads; qkv rows and proj columns are sliced per head here.
- Blocks: plain torch. FastNAS has no depth hparam for a `ModuleList` ("Module [ModuleList] is
  missing the required forward function"); kept blocks are renumbered in order.

Everything outside the blocks (embeddings, final layer, the tokenizer) is copied unchanged, and so
are the parts of a block that do not depend on its heads or MLP width (AdaLN, QK norms, biases of
proj and fc2): a kept unit computes exactly what it computed before pruning.
"""

from __future__ import annotations

import copy
import warnings

import torch

from worldforge.compression.prune.plan import BlockPlan, PrunePlan
from worldforge.models.dit import Block, Mlp
from worldforge.models.world_model import WorldModel, build_world_model, package_config


def pruned_config(model: WorldModel, plan: PrunePlan) -> dict:
    """The package config of the pruned model: the source's, with the plan's depth and widths."""
    config = package_config(model)
    config["model"] = {**config["model"], **plan.model_fields()}
    return config


def _mlp_state(mlp: Mlp, channels: list[int]) -> dict[str, torch.Tensor]:
    """fc1/fc2 weights keeping `channels` (in that order), sliced by modelopt's dynamic modules."""
    hidden = mlp.fc1.out_features
    if len(channels) == hidden:
        return {name: tensor.detach().clone() for name, tensor in mlp.state_dict().items()}
    import modelopt.torch.nas as mtn
    from modelopt.torch.opt.utils import named_hparams

    dynamic = copy.deepcopy(mlp).cpu()
    rules = {"nn.Linear": {"features_ratio": (len(channels) / hidden, 1.0), "feature_divisor": 1}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # modelopt warns about hparams of the boundary layers it freezes
        dynamic = mtn.convert(dynamic, [("fastnas", rules)])
    width = dict(named_hparams(dynamic, configurable=True))["fc1.out_features"]
    if len(channels) not in width.choices:
        raise RuntimeError(f"modelopt offers MLP widths {width.choices}, not the planned {len(channels)}")
    removed = sorted(set(range(hidden)) - set(channels))
    width.enforce_order(torch.tensor(channels + removed))
    mtn.select(dynamic, {"fc1.out_features": len(channels)})
    exported = mtn.export(dynamic)
    return {name: tensor.detach().clone() for name, tensor in exported.state_dict().items()}


def _attention_state(block: Block, heads: list[int]) -> dict[str, torch.Tensor]:
    """qkv rows and proj columns of the kept heads; the layout is (q|k|v, head, head_dim)."""
    attn = block.attn
    hd, width = attn.head_dim, attn.proj.out_features
    index = torch.tensor(heads, device=attn.qkv.weight.device)
    qkv_w = attn.qkv.weight.detach().view(3, attn.heads, hd, width)[:, index]  # (3, H', hd, D)
    qkv_b = attn.qkv.bias.detach().view(3, attn.heads, hd)[:, index]  # (3, H', hd)
    proj_w = attn.proj.weight.detach().view(width, attn.heads, hd)[:, index]  # (D, H', hd)
    return {
        "qkv.weight": qkv_w.reshape(3 * len(heads) * hd, width).clone(),
        "qkv.bias": qkv_b.reshape(-1).clone(),
        "proj.weight": proj_w.reshape(width, len(heads) * hd).clone(),
    }


def _block_state(block: Block, plan: BlockPlan) -> dict[str, torch.Tensor]:
    state = {name: tensor.detach().clone() for name, tensor in block.state_dict().items()}
    state.update({f"attn.{name}": t for name, t in _attention_state(block, plan.heads).items()})
    state.update({f"mlp.{name}": t for name, t in _mlp_state(block.mlp, plan.channels).items()})
    return state


def apply_plan(model: WorldModel, plan: PrunePlan) -> WorldModel:
    """A new WorldModel with only the planned heads, channels and blocks (the source is untouched).

    Returned in eval mode, on the source's device."""
    device = next(model.parameters()).device
    blocks = model.dit.blocks
    if len(plan.source_heads) != len(blocks) or any(
        plan.source_heads[i] != b.attn.heads or plan.source_channels[i] != b.mlp.fc1.out_features
        for i, b in enumerate(blocks)
    ):
        raise ValueError("the prune plan was made for another architecture than this model's")
    state = {
        name: t.detach().clone()
        for name, t in model.state_dict().items()
        if not name.startswith("dit.blocks.")
    }
    for j, block_plan in enumerate(plan.blocks):
        for name, tensor in _block_state(blocks[block_plan.source], block_plan).items():
            state[f"dit.blocks.{j}.{name}"] = tensor
    pruned = build_world_model(pruned_config(model, plan))
    pruned.load_state_dict({name: t.cpu() for name, t in state.items()}, strict=True)
    return pruned.to(device).eval()
