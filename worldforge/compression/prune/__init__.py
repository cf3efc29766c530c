"""Structured pruning: heads, MLP channels and blocks scored, cut to a target, recovered by distillation."""
