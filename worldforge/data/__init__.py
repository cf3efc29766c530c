"""World-model datasets: sources (simulator, Atari, video folders), WebDataset shards, clip loader."""
