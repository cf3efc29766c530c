"""A worldforge model package as an MLflow pyfunc model (models from code: nothing is pickled)."""

from __future__ import annotations

import mlflow
import torch

from worldforge.models.streaming import rollout
from worldforge.packages import load_package

MODEL_NAME = "world_model"  # the logged model's name inside its run
PYFUNC_CODE = '''"""A worldforge model package as an MLflow pyfunc (models from code: nothing pickled)."""
from mlflow.models import set_model

from worldforge.registry.pyfunc import WorldModelPyfunc

set_model(WorldModelPyfunc())
'''


class WorldModelPyfunc(mlflow.pyfunc.PythonModel):
    """`predict({"context_frames": (B, Tc, C, H, W) float32 in [-1, 1], "actions": (B, Ta[, A])},
    params={"horizon": 8, "steps": 0 (package default), "seed": 0})` -> (B, horizon, C, H, W) float32."""

    # The input is a dict of arrays checked against the tensor signature logged with the model;
    # MLflow's type-hint validation (and its warning that predict has no type hints) does not apply.
    _skip_type_hint_validation = True

    def load_context(self, context) -> None:
        self.package = load_package(context.artifacts["package"])
        self.model = self.package.build("cpu")

    def predict(self, context, model_input, params=None):
        params = params or {}
        generator = torch.Generator().manual_seed(int(params.get("seed", 0)))
        result = rollout(
            self.model,
            torch.as_tensor(model_input["context_frames"]),
            torch.as_tensor(model_input["actions"]),
            int(params.get("horizon", 8)),
            steps=int(params.get("steps", 0)) or None,
            generator=generator,
        )
        return result.frames.numpy()
