"""Every URL's credentials are redacted by one function, wherever a URL can surface: logged params, dvc errors,
remote URLs in results, one-line CLI errors."""

import subprocess

import pytest

from loraops.cli.app import one_line
from loraops.config import Params, flatten
from loraops.core import RegistryError
from loraops.core.tracking import redact_url
from loraops.pipeline import dvc

SECRET = "PlantedSecret42"


@pytest.mark.parametrize("text, shown", [
    (f"postgresql+psycopg2://loraops:{SECRET}@db:5432/optuna", "postgresql+psycopg2://loraops:***@db:5432/optuna"),
    (f"postgresql://u:{SECRET}@x/y@host/db", "postgresql://u:***@host/db"),  # an unescaped @ in the password
    (f"https://{SECRET}@github.com/org/repo", "https://***@github.com/org/repo"),
    (f"s3://bucket/key?X-Amz-Signature={SECRET}&x=1", "s3://bucket/key?X-Amz-Signature=***&x=1"),
    (f"dvc remote add x 's3://ak:{SECRET}@minio:9000/b' failed", "dvc remote add x 's3://ak:***@minio:9000/b' failed"),
    ("sqlite:////tmp/optuna.db", "sqlite:////tmp/optuna.db"),
    ("http://127.0.0.1:5000/#/experiments/1", "http://127.0.0.1:5000/#/experiments/1"),
])
def test_redact_url_hides_every_credential_and_keeps_the_rest(text, shown):
    assert redact_url(text) == shown


def test_params_refuse_a_password_and_logged_params_are_redacted(tmp_path):
    from loraops.config import load_params
    from loraops.core import ConfigError

    # params.yaml is committed and copied into dvc.lock: a password there is refused, pointing at the env.
    (tmp_path / "params.yaml").write_text(f"search:\n  storage: postgresql://u:{SECRET}@db/optuna\n")
    with pytest.raises(ConfigError) as info:
        load_params(tmp_path / "params.yaml")
    assert "LORAOPS_OPTUNA_STORAGE" in str(info.value) and SECRET not in str(info.value)
    params = Params.model_validate({"search": {"storage": "postgresql://u@db/optuna"}})
    flat = flatten(params.model_copy(update={"project": params.project.model_copy(
        update={"name": f"https://{SECRET}@host/x"})}))  # a URL in any string param is redacted when logged
    assert flat["project.name"] == "https://***@host/x" and SECRET not in repr(flat)


def test_a_failing_dvc_remote_add_does_not_show_the_remote_credentials(tmp_path, monkeypatch):
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True)
    dvc.dvc(tmp_path, "init", "-q")
    monkeypatch.setenv(dvc.REMOTE_URL_ENV, f"foo://ak:{SECRET}@minio:9000/dvc")  # rejected by `dvc remote add`
    with pytest.raises(dvc.DvcCommandError) as info:
        dvc.remote_name(tmp_path)
    assert "remote add" in str(info.value) and SECRET not in str(info.value)


def test_a_cli_error_line_is_redacted_even_when_the_exception_was_not():
    assert SECRET not in one_line(RegistryError(f"cannot reach postgresql://u:{SECRET}@db/mlflow"))
    assert SECRET not in one_line(ConnectionError(f"http://u:{SECRET}@host:5000 refused"))
