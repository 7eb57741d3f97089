"""The base model: materialised once from ``model.base`` (the ``base_model`` stage), then loaded for training
(QLoRA's NF4 base, LoRA's full-precision base, full fine-tuning) and inference."""

from loraops.modeling.base_model import (INFO_FILE, base_content_sha256, base_info, base_model_stage,
                                         classify_reference, verify_base_model)
from loraops.modeling.loading import (compute_dtype, count_parameters, device, load_base, load_for_inference,
                                      load_tokenizer, lora_config, recorded_trust, safetensors_bytes,
                                      token_counter)

__all__ = ["INFO_FILE", "base_content_sha256", "base_info", "base_model_stage", "classify_reference", "compute_dtype", "count_parameters",
           "device", "load_base", "load_for_inference", "load_tokenizer", "lora_config", "recorded_trust", "safetensors_bytes", "token_counter",
           "verify_base_model"]
