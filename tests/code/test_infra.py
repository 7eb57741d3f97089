"""The team stack's files (infra/) hold together, checked by structure (no Docker engine here):
services, ports, volumes, credentials only from the env file, and the environment names that the code reads."""

import json
import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
INFRA = REPO / "infra"
# What a loraops process needs to find the team stack. AWS_* are read by boto3 (DVC and MLflow on MinIO).
STACK_ENV = {"MLFLOW_TRACKING_URI", "PREFECT_API_URL", "LORAOPS_DVC_REMOTE_URL", "MLFLOW_S3_ENDPOINT_URL",
             "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "LORAOPS_OPTUNA_STORAGE"}
READ_BY_LIBRARIES = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
PENDING: set[str] = set()  # env names the stack sets before any code reads them
SECRETS = {"POSTGRES_PASSWORD", "MINIO_ROOT_PASSWORD", "AWS_SECRET_ACCESS_KEY", "LORAOPS_DB_PASSWORD",
           "MINIO_APP_PASSWORD", "MLFLOW_ADMIN_PASSWORD", "MLFLOW_FLASK_SERVER_SECRET_KEY", "PREFECT_AUTH_STRING"}
# The credentials MLflow's and Prefect's clients read to log in to the closed stack.
CLIENT_AUTH = {"MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "PREFECT_API_AUTH_STRING"}


def compose() -> dict:
    return yaml.safe_load((INFRA / "compose.yaml").read_text())


def code_text() -> str:
    files = list((REPO / "src").rglob("*.py")) + list((REPO / "flows").rglob("*.py"))
    return "\n".join(p.read_text() for p in files)


def env_names_read_by_code() -> set[str]:
    return set(re.findall(r"[\"']((?:LORAOPS|MLFLOW|PREFECT|AWS)_[A-Z0-9_]+)[\"']", code_text()))


def test_stack_has_every_service_with_its_port():
    services = compose()["services"]
    ports = {"postgres": 5432, "minio": 9000, "mlflow": 5000, "prefect-server": 4200}
    for name, port in ports.items():
        published = [str(p) for p in services[name].get("ports", [])]
        assert any(p.endswith(f":{port}") for p in published), (name, published)
    assert {"minio-buckets", "prefect-worker", "prefect-worker-gpu"} <= set(services)
    assert services["minio-buckets"]["restart"] == "no"  # a one-shot init job


def test_depends_on_and_volumes_refer_to_what_exists():
    spec = compose()
    services, volumes = spec["services"], set(spec["volumes"])
    for name, service in services.items():
        for dep in service.get("depends_on", []):
            assert dep in services, (name, dep)
        for mount in service.get("volumes", []):
            source = mount.split(":")[0]
            if source.startswith("./"):
                assert (INFRA / source).exists(), (name, source)
            else:
                assert source in volumes, (name, source)
    assert {"postgres-data", "minio-data"} <= volumes


def test_postgres_creates_the_three_databases_and_minio_the_two_buckets():
    postgres = compose()["services"]["postgres"]
    assert set(postgres["environment"]["LORAOPS_DATABASES"].split()) == {"mlflow", "mlflow_auth", "prefect", "optuna"}
    assert any("docker-entrypoint-initdb.d" in v for v in postgres["volumes"])
    script = (INFRA / "postgres" / "init-databases.sh").read_text()
    assert "CREATE DATABASE" in script and "LORAOPS_DATABASES" in script
    buckets = " ".join(compose()["services"]["minio-buckets"]["command"])
    assert "mc mb" in buckets and "MLFLOW_BUCKET" in buckets and "DVC_BUCKET" in buckets
    text = (INFRA / "compose.yaml").read_text()
    assert "/mlflow" in text and "/prefect" in text and "/optuna" in text


def test_workers_get_the_stack_settings_by_the_names_the_code_reads():
    services = compose()["services"]
    read = env_names_read_by_code()
    for name in ("prefect-worker", "prefect-worker-gpu"):
        env = services[name]["environment"]
        assert STACK_ENV <= set(env), (name, STACK_ENV - set(env))
    for name in STACK_ENV - READ_BY_LIBRARIES - PENDING:
        assert name in read, f"{name} is set in infra/ but no code in src/ or flows/ reads it"
    # The Optuna storage name must match what the search reads.
    optuna = {n for n in read if "OPTUNA" in n}
    assert optuna <= {"LORAOPS_OPTUNA_STORAGE"}, optuna
    # Every LORAOPS_ setting the code reads for the stack is passed to the workers.
    for name in {"LORAOPS_DVC_REMOTE_URL"} | optuna:
        assert name in services["prefect-worker"]["environment"]


def test_gpu_worker_reserves_a_gpu_behind_a_profile():
    gpu = compose()["services"]["prefect-worker-gpu"]
    assert gpu["profiles"] == ["gpu"]
    (device,) = gpu["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and "gpu" in device["capabilities"]
    assert gpu["build"]["args"]["VARIANT"] == "cuda"
    dockerfile = (INFRA / "Dockerfile").read_text()
    assert "ARG VARIANT" in dockerfile and "FROM base-${VARIANT}" in dockerfile and "AS base-cuda" in dockerfile


def test_credentials_come_only_from_the_env_file_and_the_example_holds_placeholders():
    text = (INFRA / "compose.yaml").read_text()
    interpolated = set(re.findall(r"\$\{([A-Z0-9_]+)(?::-[^}]*)?\}", text))
    example = dict(line.split("=", 1) for line in (INFRA / ".env.example").read_text().splitlines()
                   if line and not line.startswith("#"))
    assert interpolated <= set(example), interpolated - set(example)
    for name in SECRETS & set(example):
        assert example[name].startswith("change-me"), name
    # Secrets are never written as literal values in the compose file.
    for service in compose()["services"].values():
        env = service.get("environment", {})
        for key, value in (env.items() if isinstance(env, dict) else []):
            if key in SECRETS or "PASSWORD" in key:
                assert str(value).startswith("${"), (key, value)
    ignored = subprocess.run(["git", "check-ignore", "-q", "infra/.env"], cwd=REPO)
    assert ignored.returncode == 0, "infra/.env must be ignored by git"


def test_kubernetes_work_pool_job_requests_a_gpu_and_reads_the_stack_settings():
    template = json.loads((INFRA / "k8s" / "gpu-job-template.json").read_text())
    manifest = template["job_configuration"]["job_manifest"]
    assert manifest["kind"] == "Job"
    (container,) = manifest["spec"]["template"]["spec"]["containers"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == "{{ gpu_count }}"
    assert template["variables"]["properties"]["gpu_count"]["default"] >= 1
    refs = {next(iter(r.values()))["name"] for r in container["envFrom"]}
    settings = yaml.safe_load((INFRA / "k8s" / "loraops-settings.yaml").read_text())
    assert settings["metadata"]["name"] in refs and "loraops-credentials" in refs
    public = STACK_ENV - SECRETS - {"AWS_ACCESS_KEY_ID", "LORAOPS_OPTUNA_STORAGE"}
    assert public <= set(settings["data"]), public - set(settings["data"])
    # Every {{ variable }} the job uses is declared.
    used = set(re.findall(r"\{\{ (\w+) \}\}", json.dumps(template["job_configuration"])))
    assert used <= set(template["variables"]["properties"]), used - set(template["variables"]["properties"])
    values = yaml.safe_load((INFRA / "k8s" / "worker-values.yaml").read_text())
    assert values["worker"]["config"]["type"] == "kubernetes"
    pools = {d["work_pool"]["name"] for d in yaml.safe_load((REPO / "prefect.yaml").read_text())["deployments"]}
    assert values["worker"]["config"]["workPool"] in pools


def test_prefect_yaml_schedules_the_retrain_flow_with_a_concurrency_limit():
    spec = yaml.safe_load((REPO / "prefect.yaml").read_text())
    retrain = next(d for d in spec["deployments"] if d["name"] == "retrain")
    path, _, function = retrain["entrypoint"].partition(":")
    assert (REPO / path).is_file() and f"def {function}(" in (REPO / path).read_text()
    assert retrain["schedules"][0]["cron"] and retrain["work_pool"]["name"] == "loraops-process"
    assert retrain["concurrency_limit"]["limit"] == 1
    assert set(retrain["parameters"]) == {"root", "force"}


def test_the_stack_is_closed_by_default():
    services = compose()["services"]
    for name, service in services.items():
        for port in service.get("ports", []):
            assert str(port).startswith("${LORAOPS_BIND_ADDRESS:-127.0.0.1}:"), (name, port)
    mlflow = services["mlflow"]
    command = " ".join(mlflow["command"])
    assert "--app-name basic-auth" in command and "default_permission = NO_PERMISSIONS" in command
    assert {"MLFLOW_FLASK_SERVER_SECRET_KEY", "MLFLOW_AUTH_CONFIG_PATH"} <= set(mlflow["environment"])
    assert services["prefect-server"]["environment"]["PREFECT_SERVER_API_AUTH_STRING"] == "${PREFECT_AUTH_STRING}"
    for name in ("prefect-worker", "prefect-worker-gpu"):
        assert CLIENT_AUTH <= set(services[name]["environment"]), name
    # The root accounts stay with the services that need them; everything else uses an application account.
    for name, service in services.items():
        text = yaml.safe_dump(service)
        if name != "postgres":
            assert "POSTGRES_PASSWORD" not in text and "POSTGRES_USER}" not in text, name
        if name not in ("minio", "minio-buckets"):
            assert "MINIO_ROOT" not in text, name
    script = (INFRA / "postgres" / "init-databases.sh").read_text()
    assert "NOSUPERUSER" in script and 'OWNER \\"$LORAOPS_DB_USER\\"' in script
    assert "mlflow_auth" in services["postgres"]["environment"]["LORAOPS_DATABASES"]
    buckets = " ".join(services["minio-buckets"]["command"])
    assert "mc admin user add" in buckets and "MINIO_APP_USER" in buckets
    pyproject = (REPO / "pyproject.toml").read_text()
    assert "Flask-WTF" in pyproject  # what MLflow's basic-auth app needs, in the image's team extra
