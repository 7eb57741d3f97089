"""MLflow "model from code" entry: the file MLflow runs to build the served model (no pickle involved)."""

import mlflow

from loraops.registry.serving import AdapterModel

mlflow.models.set_model(AdapterModel())
