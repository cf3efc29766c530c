"""World-model datasets: sources (simulator, Atari, video folders), WebDataset shards, clip loader.

The public API (imported from its module; this package imports nothing so that loading the
config stays light):
- `shards.build_dataset(config, out, track=True) -> BuildResult(path, manifest, dvc_md5)`
- `loader.make_loader(path, split, config.data, rank=None, world_size=None, epoch=0) -> ClipLoader`
- `samples.iter_episodes(path, split)`: whole held-out episodes for evaluation
- `manifest.read_manifest(path)`, `verify.verify_dataset(path)`
- `sources.simulator.record_episode(...)`, `sources.simulator.agent_position_from_frames(frames)`
- `preview.write_previews(path, out)`: contact sheet and GIF
"""
