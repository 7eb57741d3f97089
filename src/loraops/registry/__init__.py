"""The registry: the ``register`` stage (one MLflow run, one model version), the promotion gates, the gated
and serialised ``champion`` alias, the clean-up rule for half-made versions, lineage tags and the pointers
that restore a version's data and adapter with DVC.

The served pyfunc (:mod:`loraops.registry.serving`) is not imported here: it pulls in ``mlflow.pyfunc``.
"""

from loraops.registry.cleanup import REGISTRATION_TAG, discard_own, repair
from loraops.registry.gates import ChampionScore, GateOutcome, evaluate_gates, passed
from loraops.registry.hand_moves import HandMove, check_champion
from loraops.registry.lineage import (MODEL_SHA256_TAG, dvc_pointer, lineage_tags, model_sha256, pointer_tags,
                                      recorded_outputs, restore_pointers)
from loraops.registry.promotion import (CHALLENGER, CHAMPION, INTERRUPTED_DECISION, PREVIOUS, LeaseLost,
                                        PromotionLease, alias_version, lock_name, promote, repair_promotion,
                                        require_complete, rollback)
from loraops.registry.register import register_stage
from loraops.registry.versions import champion_uri, version_lineage, version_of_run, version_rows

__all__ = ["CHALLENGER", "CHAMPION", "INTERRUPTED_DECISION", "MODEL_SHA256_TAG", "PREVIOUS", "REGISTRATION_TAG",
           "ChampionScore", "GateOutcome", "HandMove", "LeaseLost", "PromotionLease", "alias_version", "champion_uri",
           "check_champion", "discard_own", "dvc_pointer", "evaluate_gates", "lineage_tags", "lock_name",
           "model_sha256", "passed", "pointer_tags", "promote", "recorded_outputs", "register_stage", "repair",
           "repair_promotion", "require_complete", "restore_pointers", "rollback", "version_lineage", "version_of_run",
           "version_rows"]
