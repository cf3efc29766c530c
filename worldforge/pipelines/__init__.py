"""Prefect flows: thin orchestration over library functions."""
