"""A database tracking store that does not answer fails under loraops's retries alone, in one line, without
the password, before MLflow (whose engine creation would wait about 100 s more per try) is asked."""

import logging
from dataclasses import dataclass

import pytest

from loraops.core import Layout
from loraops.core.errors import RegistryError
from loraops.core.tracking import connect


@dataclass
class Policy:
    retries: int
    backoff_seconds: float


class Lines(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(f"{record.name}: {record.getMessage()}")


def test_a_dead_database_store_fails_at_connect_with_our_retries_only(tmp_path, monkeypatch):
    secret = "PlantedPassword42"
    # Port 1 on the loopback: nobody listens, the connection is refused at once.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"postgresql+psycopg2://loraops:{secret}@127.0.0.1:1/mlflow")
    lines = Lines()
    for name in ("loraops", "mlflow"):
        logging.getLogger(name).addHandler(lines)
    try:
        with pytest.raises(RegistryError) as failure:
            connect(Layout(tmp_path), Policy(retries=2, backoff_seconds=0.01))
    finally:
        for name in ("loraops", "mlflow"):
            logging.getLogger(name).removeHandler(lines)
    message = str(failure.value)
    assert "127.0.0.1:1" in message and "does not answer" in message and "2 retries" in message
    assert "\n" not in message and secret not in message and secret not in "".join(lines.lines)
    assert len([line for line in lines.lines if "retry" in line and line.startswith("loraops")]) == 2
    assert not [line for line in lines.lines if "SQLAlchemy engine could not be created" in line]
