"""Version tags are data from the registry: restore pointers stay inside their target and carry DVC md5s only."""

import pytest

from loraops.core import RegistryError
from loraops.registry import recorded_outputs, restore_pointers

GOOD = {"dvc.dataset.path": "data/raw/dataset.jsonl", "dvc.dataset.md5": "0123456789abcdef0123456789abcdef",
        "dvc.adapter.path": "models/adapter", "dvc.adapter.md5": "fedcba9876543210fedcba9876543210.dir"}


def test_pointers_mirror_the_recorded_paths_under_the_target(tmp_path):
    written = restore_pointers(GOOD, tmp_path)
    assert written == {"dataset": tmp_path / "data/raw/dataset.jsonl.dvc", "adapter": tmp_path / "models/adapter.dvc"}
    assert written["adapter"].read_text() == ("outs:\n- md5: fedcba9876543210fedcba9876543210.dir\n"
                                              "  path: adapter\n  hash: md5\n")


@pytest.mark.parametrize("path", ["../outside.jsonl", "/etc/passwd", "data/../../x", "a\\..\\b", "data/x\nouts:"])
def test_a_path_outside_the_target_is_refused_and_nothing_is_written(tmp_path, path):
    with pytest.raises(RegistryError, match="not a relative path inside the project"):
        restore_pointers({**GOOD, "dvc.dataset.path": path}, tmp_path / "into")
    assert not (tmp_path / "into").exists() and not list(tmp_path.rglob("*.dvc"))


@pytest.mark.parametrize("md5", ["0123", "0123456789abcdef0123456789abcdef\n- md5: x", "../../0123456789abcdef01234567",
                                 "0123456789ABCDEF0123456789ABCDEF", "0123456789abcdef0123456789abcdef.zip"])
def test_a_value_that_is_not_a_dvc_md5_is_refused(tmp_path, md5):
    with pytest.raises(RegistryError, match="not a DVC md5"):
        recorded_outputs({**GOOD, "dvc.adapter.md5": md5})
    with pytest.raises(RegistryError):
        restore_pointers({**GOOD, "dvc.adapter.md5": md5}, tmp_path)
    assert not list(tmp_path.rglob("*.dvc"))
