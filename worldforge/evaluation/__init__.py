"""Rollout quality and cost metrics, and reports (JSON, plots, videos)."""
