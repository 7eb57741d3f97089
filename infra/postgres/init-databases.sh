#!/bin/sh
# Runs once, when the PostgreSQL volume is first created: one database each for MLflow's backend store,
# Prefect's server and Optuna's study storage, all owned by POSTGRES_USER.
set -eu
for db in ${LORAOPS_DATABASES:-mlflow prefect optuna}; do
  echo "creating database $db"
  psql -v ON_ERROR_STOP=1 --username "$POSTGRES_USER" --dbname postgres \
    -c "CREATE DATABASE \"$db\" OWNER \"$POSTGRES_USER\";"
done
