"""The pipeline: the stage table both ``dvc repro`` and the Prefect flows run, the scheduled retrain's
record, its fingerprint, the DVC command line, and restoring a registered version."""

from loraops.pipeline.fingerprint import Fingerprint, retrain_fingerprint
from loraops.pipeline.restore import find_version, restore_version
from loraops.pipeline.stages import PIPELINE, STAGES, open_pipeline_run, preflight, run_stage

__all__ = ["PIPELINE", "STAGES", "Fingerprint", "find_version", "open_pipeline_run", "preflight", "restore_version",
           "retrain_fingerprint", "run_stage"]
