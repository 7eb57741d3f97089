"""params.yaml: typed, grouped per stage, unknown keys and bad values rejected with key and file named."""

from pathlib import Path

import pytest
import yaml

from loraops.config import Params, apply_overrides, flatten, load_params
from loraops.core import ConfigError

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path: Path, payload) -> Path:
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(payload))
    return path


def test_repo_params_file_is_valid_and_matches_defaults_where_documented():
    params = load_params(REPO / "params.yaml")
    assert params.model.base == "smollm2-135m-instruct"
    assert params.data.source == "demo"
    assert params.train.method == "qlora"
    assert params.model.trust_remote_code is False


def test_misspelled_key_names_key_file_and_suggestion(tmp_path):
    path = write(tmp_path, {"train": {"learnin_rate": 0.1}})
    with pytest.raises(ConfigError) as info:
        load_params(path)
    message = str(info.value)
    assert str(path) in message and "train.learnin_rate" in message and "learning_rate" in message
    assert "\n" not in message


def test_unknown_top_level_group_is_rejected(tmp_path):
    with pytest.raises(ConfigError, match="unknown key 'trainer'"):
        load_params(write(tmp_path, {"trainer": {}}))


def test_mistyped_value_names_key(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.max_steps"):
        load_params(write(tmp_path, {"train": {"max_steps": "many"}}))


def test_nested_unknown_key_in_lora_group(tmp_path):
    with pytest.raises(ConfigError, match=r"train\.lora\.rank.*known keys: r, alpha"):
        load_params(write(tmp_path, {"train": {"lora": {"rank": 8}}}))


def test_file_source_requires_path(tmp_path):
    with pytest.raises(ConfigError, match="data.path is required"):
        load_params(write(tmp_path, {"data": {"source": "csv"}}))


def test_unknown_target_module_set(tmp_path):
    with pytest.raises(ConfigError, match="unknown target module set 'ffn'"):
        load_params(write(tmp_path, {"train": {"lora": {"target_modules": "ffn"}}}))


def test_overrides_parse_values_as_yaml_and_validate(tmp_path):
    path = write(tmp_path, {})
    params = load_params(path, ["train.learning_rate=2e-4", "train.lora.target_modules=[q_proj, v_proj]"])
    assert params.train.learning_rate == pytest.approx(2e-4)
    assert params.train.lora.target_modules == ["q_proj", "v_proj"]
    with pytest.raises(ConfigError, match="unknown key 'train.lr'"):
        load_params(path, ["train.lr=1"])
    with pytest.raises(ConfigError, match="expected key.sub=value"):
        apply_overrides({}, ["train.lr"])


def test_missing_or_invalid_yaml_file(tmp_path):
    with pytest.raises(ConfigError, match="params file not found"):
        load_params(tmp_path / "nope.yaml")
    bad = tmp_path / "params.yaml"
    bad.write_text("train: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_params(bad)


def test_flatten_gives_dotted_keys_for_every_leaf():
    flat = flatten(Params())
    assert flat["train.lora.r"] == Params().train.lora.r == 8
    assert flat["model.base"] == "smollm2-135m-instruct"
    assert not any(isinstance(v, dict) for v in flat.values())


def test_params_yaml_is_the_pydantic_defaults_as_a_whole():
    """The shipped params.yaml and Params() are one set of defaults: every key, every value."""
    assert yaml.safe_load((REPO / "params.yaml").read_text()) == Params().model_dump(mode="json")
