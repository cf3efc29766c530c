"""`worldforge model`: inspect world-model architectures."""

from __future__ import annotations

import typer

from worldforge.cli.common import OVERRIDES, exit_on_error

app = typer.Typer(
    help="Inspect world-model architectures: presets, parameter counts, FLOPs.", no_args_is_help=True
)


def _resolve(preset: str, overrides: list[str]):
    """A model preset name (tiny/small/base/large) or a config preset / YAML -> the root config."""
    from worldforge.config import apply_overrides, config_from_dict, list_presets, load_config
    from worldforge.models.config import PRESETS, ModelConfigError

    if preset in PRESETS:
        tree = apply_overrides({"model": {"preset": preset}}, overrides)
        return config_from_dict(tree, f"model preset {preset!r}" + (" with overrides" if overrides else ""))
    if not preset.endswith((".yaml", ".yml")) and preset not in list_presets():
        raise ModelConfigError(
            f"unknown preset {preset!r}: model presets are {', '.join(PRESETS)}; "
            f"config presets are {', '.join(list_presets()) or 'none'}; or pass a YAML path"
        )
    return load_config(preset, overrides)


def _per_block(values: list[int]) -> str:
    return f"{values[0]} (all blocks)" if len(set(values)) == 1 else ", ".join(map(str, values))


@app.command("info")
def info(
    preset: str = typer.Argument(
        ..., help="Model preset (tiny, small, base, large), config preset or YAML path."
    ),
    overrides: list[str] | None = OVERRIDES,
) -> None:
    """Architecture, parameter counts and FLOPs per generated frame (built on the meta device)."""
    import torch
    from rich.console import Console
    from rich.table import Table

    from worldforge.models.flops import count_parameters, rollout_flops
    from worldforge.models.world_model import WorldModel

    with exit_on_error():
        config = _resolve(preset, list(overrides or []))
        with torch.device("meta"):
            model = WorldModel.from_config(config.tokenizer, config.model, config.objective, config.sampler)
        costs = rollout_flops(model)

    m, tok, sampler = model.model_cfg, model.tokenizer_cfg, model.sampler_cfg
    height, width = tok.frame_size
    latent_h, latent_w = height // tok.compression, width // tok.compression
    tokens = (latent_h // m.patch_size) * (latent_w // m.patch_size)
    if tok.kind == "patch":
        tokenizer = f"patch {tok.patch_size}"
    else:
        tokenizer = f"causal VAE, {tok.spatial_compression}x space, {tok.temporal_compression}x time"
    actions = (
        f"discrete, {m.num_actions}" if m.action_space == "discrete" else f"continuous, dim {m.action_dim}"
    )
    dit_params, tokenizer_params = count_parameters(model.dit), count_parameters(model.tokenizer)

    table = Table(title=f"world model: {preset}", show_header=False)
    table.add_column("field", style="bold")
    table.add_column("value")
    rows = [
        ("model preset", m.preset),
        ("frames", f"{tok.frame_channels} x {height} x {width}"),
        ("tokenizer", tokenizer),
        ("latent", f"{tok.latent_dim} x {latent_h} x {latent_w} per latent frame"),
        ("tokens per frame", f"{tokens} (DiT patch {m.patch_size})"),
        ("stem / head", f"{m.stem}" + (f", {m.stem_channels} channels at latent resolution" if m.stem == "conv" else "")),
        ("stacked previous frames", str(m.stack_previous)),
        ("actions per frame", f"{m.action_history} (the one that led to it and the {m.action_history - 1} before)"
         if m.action_history > 1 else "1 (the one that led to it)"),
        ("depth", str(m.depth)),
        ("width", str(m.width)),
        ("heads x head_dim", f"{_per_block(m.heads_per_block)} x {m.head_dim}"),
        ("mlp hidden", _per_block(m.mlp_hidden_per_block)),
        ("context window", f"{m.context_window} latent frames"),
        ("actions", actions),
        ("sampler", f"{sampler.solver}, {sampler.steps} steps, shift {sampler.shift}"),
        ("parameters: tokenizer", f"{tokenizer_params:,}"),
        ("parameters: DiT", f"{dit_params:,}"),
        ("parameters: total", f"{tokenizer_params + dit_params:,}"),
        ("GFLOPs/frame: denoise", f"{costs['denoise'] / 1e9:.3f}"),
        ("GFLOPs/frame: commit to cache", f"{costs['commit'] / 1e9:.3f}"),
        ("GFLOPs/frame: decode", f"{costs['decode'] / 1e9:.3f}"),
        ("GFLOPs/frame: total", f"{costs['total'] / 1e9:.3f}"),
    ]
    for field, value in rows:
        table.add_row(field, value)
    Console().print(table)
