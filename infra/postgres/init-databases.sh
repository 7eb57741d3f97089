#!/bin/sh
# Runs once, when the PostgreSQL volume is first created: the application role LORAOPS_DB_USER (no superuser
# rights) and one database each for MLflow's backend store, MLflow's users (basic auth), Prefect's server and
# Optuna's study storage, all owned by that role. The services never connect as POSTGRES_USER.
set -eu
psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
  -v user="$LORAOPS_DB_USER" -v password="$LORAOPS_DB_PASSWORD" \
  -c "CREATE ROLE :\"user\" LOGIN PASSWORD :'password' NOSUPERUSER NOCREATEDB NOCREATEROLE;"
for db in ${LORAOPS_DATABASES:-mlflow mlflow_auth prefect optuna}; do
  echo "creating database $db"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -c "CREATE DATABASE \"$db\" OWNER \"$LORAOPS_DB_USER\";"
done
