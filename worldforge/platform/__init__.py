"""Cross-cutting services: config, project paths, tracking (MLflow), registry, lineage (DVC),
model packages, runtime (device, seeds, distributed) and the CLI."""
