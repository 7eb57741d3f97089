"""The one typed configuration of a project (``params.yaml``): groups per stage, unknown keys are errors."""

from loraops.config.params import (BUILTIN_BASE_MODEL, DEMO_SOURCE_FILE, PROMOTION_GATES, TARGET_MODULE_SETS, BaselineParams,
                                   DataParams, EvalParams, LoraParams, ModelParams, Params, PrepareParams,
                                   PromoteParams, RegistryParams, RehearsalParams, SearchParams, TrainParams,
                                   ValidateParams,
                                   apply_overrides, flatten, load_params, params_digest, parse_params,
                                   portable, tracking_params)
from loraops.config.params import COMBINATIONS, PRUNING_COMBINATIONS, SEARCH_WORKER_FLOW, ComposeParams

__all__ = ["BUILTIN_BASE_MODEL", "DEMO_SOURCE_FILE", "PROMOTION_GATES", "TARGET_MODULE_SETS", "BaselineParams", "DataParams",
           "EvalParams", "LoraParams", "ModelParams", "Params", "PrepareParams", "PromoteParams", "RegistryParams",
           "RehearsalParams", "SearchParams", "TrainParams", "ValidateParams", "apply_overrides", "flatten", "load_params",
           "params_digest", "parse_params", "portable", "tracking_params",
           "COMBINATIONS", "PRUNING_COMBINATIONS", "SEARCH_WORKER_FLOW", "ComposeParams"]
