"""Distillation: fewer sampling steps (progressive, consistency) or a smaller student (KD)."""
