"""loraops: an MLOps pipeline that turns a dataset and a base model into a LoRA/QLoRA adapter.

The library holds one implementation of each pipeline step; Prefect flows (``flows/``), DVC stages
(``dvc.yaml``) and the ``loraops`` CLI are thin wrappers around it. It imports neither Prefect nor DVC.
"""

__version__ = "0.1.0"
