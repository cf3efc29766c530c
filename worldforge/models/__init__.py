"""The world model: tokenizer, world DiT, flow-matching objective, samplers, streaming rollout."""
