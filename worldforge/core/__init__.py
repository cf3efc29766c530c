"""The ground floor: config sections (schema), the project root, runtime (device, seeds,
distribution), MLflow tracking and DVC lineage. Imports nothing else of worldforge."""
