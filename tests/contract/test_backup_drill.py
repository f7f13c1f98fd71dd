"""The restore drill (tests/contract/backup_drill.py) with the real Label Studio, PostgreSQL
and moto's S3 server: everything backed up comes back, byte for byte, and a corrupted backup
is refused before anything is touched."""

from __future__ import annotations

import pytest

from tests.contract.backup_drill import drill

pytestmark = pytest.mark.contract


def test_the_restore_drill_brings_back_every_project_task_annotation_and_file(tmp_path):
    result = drill(tmp_path)
    print("\n".join(result.lines()))
    before, after = result.backed_up, result.restored
    assert len(before.projects) == 3 and len(before.tasks) == 12
    assert len(before.annotations) == 12 and len(before.files) == 12
    assert after == before  # the same ids, data, results and file checksums
    assert "does not match" in result.corrupted_refused
    assert result.backup_bytes > 0 and result.restore_seconds > 0
