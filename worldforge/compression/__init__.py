"""Compression stages (distill, prune, quantize): model package in, model package out."""
