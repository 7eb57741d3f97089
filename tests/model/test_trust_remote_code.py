"""A base whose architecture lives in its own code files trains only when ``model.trust_remote_code`` says so,
and then every stage that loads it (not only the base_model stage) runs that code."""

import json
import shutil

import pytest

from loraops.core import ModelError
from loraops.modeling import load_base
from tests.helpers.projects import new_project, run_stages

CONFIG_CODE = """from transformers import LlamaConfig


class LoraopsTestConfig(LlamaConfig):
    model_type = "loraops_test_llama"
"""
MODEL_CODE = """from transformers import LlamaForCausalLM

from .configuration_loraops_test import LoraopsTestConfig


class LoraopsTestForCausalLM(LlamaForCausalLM):
    config_class = LoraopsTestConfig
"""


def custom_code_base(tiny_base, dest):
    base = shutil.copytree(tiny_base, dest)
    (base / "configuration_loraops_test.py").write_text(CONFIG_CODE)
    (base / "modeling_loraops_test.py").write_text(MODEL_CODE)
    config = json.loads((base / "config.json").read_text())
    config.update({"model_type": "loraops_test_llama", "architectures": ["LoraopsTestForCausalLM"],
                   "auto_map": {"AutoConfig": "configuration_loraops_test.LoraopsTestConfig",
                                "AutoModelForCausalLM": "modeling_loraops_test.LoraopsTestForCausalLM"}})
    (base / "config.json").write_text(json.dumps(config))
    return base


def test_a_base_with_its_own_code_trains_when_the_param_says_so(tmp_path, tiny_base):
    base = custom_code_base(tiny_base, tmp_path / "custom")
    layout = new_project(tmp_path / "trusted", base, model={"trust_remote_code": True},
                         search={"enabled": False}, train={"method": "lora", "max_steps": 2})
    run_stages(layout, "base_model", "ingest", "validate", "prepare", "rehearsal", "search", "train")
    assert type(load_base(layout.base_model_dir)).__name__ == "LoraopsTestForCausalLM"
    assert (layout.adapter_dir / "adapter_model.safetensors").is_file()

    refused = new_project(tmp_path / "untrusted", base)  # model.trust_remote_code: false, the default
    with pytest.raises(ModelError, match="cannot load"):
        run_stages(refused, "base_model")
