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
