"""model.base resolves to the built-in model, a local folder or a hub id; anything else fails by name."""

import pytest

from loraops.modeling import classify_reference
from loraops.config import ModelParams
from loraops.core import ModelError


def test_builtin_local_and_hub_forms(tmp_path):
    (tmp_path / "models" / "mine").mkdir(parents=True)
    (tmp_path / "models" / "mine" / "config.json").write_text("{}")
    assert classify_reference(ModelParams(), tmp_path) == "builtin"
    assert classify_reference(ModelParams(base="models/mine"), tmp_path) == "local"
    assert classify_reference(ModelParams(base=str(tmp_path / "models" / "mine")), tmp_path) == "local"
    assert classify_reference(ModelParams(base="HuggingFaceTB/SmolLM2-360M-Instruct"), tmp_path) == "hub"


@pytest.mark.parametrize("base", ["no-such-model", "/abs/missing/dir", "a/b/c", "../escape/model"])
def test_unknown_forms_are_named(tmp_path, base):
    with pytest.raises(ModelError, match="unknown base model") as info:
        classify_reference(ModelParams(base=base), tmp_path)
    assert repr(base) in str(info.value)


def test_local_folder_without_config_is_rejected(tmp_path):
    (tmp_path / "weights").mkdir()
    with pytest.raises(ModelError, match="no config.json"):
        classify_reference(ModelParams(base="weights"), tmp_path)


def test_the_base_model_stage_records_the_bases_content_hash(tiny_base, tmp_path):
    from safetensors.torch import load_file, save_file

    from loraops.config import Params
    from loraops.core import Layout
    from loraops.modeling import base_content_sha256, base_info, base_model_stage

    layout = Layout(tmp_path)
    info = base_model_stage(Params(model=ModelParams(base=str(tiny_base))), layout)
    assert info["content_sha256"] == base_info(layout)["content_sha256"] == base_content_sha256(layout.base_model_dir)
    weights = next(layout.base_model_dir.glob("*.safetensors"))
    tensors = load_file(weights)
    first = next(iter(tensors))
    tensors[first] = tensors[first] + 1e-3  # one changed weight is another base
    save_file(tensors, weights, metadata={"format": "pt"})
    assert base_content_sha256(layout.base_model_dir) != info["content_sha256"]
