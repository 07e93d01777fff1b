"""Which streaming checkpoint manager a session gets from config storage.checkpoints_root (no JVM)."""

from __future__ import annotations

import pytest

from jobrec.batch.connections import checkpoint_manager_settings


@pytest.mark.parametrize("root", ["s3a://bucket/checkpoints", "s3a://bucket", "S3A://Bucket/ckpt"])
def test_checkpoints_on_s3_get_the_manager_that_never_renames(root: str) -> None:
    assert checkpoint_manager_settings(root) == {
        "spark.sql.streaming.checkpointFileManagerClass": (
            "org.apache.spark.internal.io.cloud.AbortableStreamBasedCheckpointFileManager"
        )
    }


@pytest.mark.parametrize(
    "root",
    [
        ".local/checkpoints",  # a relative folder, as the default config has
        "/var/lib/jobrec/checkpoints",
        "file:///var/lib/jobrec/checkpoints",
        "hdfs://namenode/checkpoints",  # rename is atomic on HDFS: Spark's default is right there
        "s3a-like/folder",  # a folder whose name only starts like the scheme
    ],
)
def test_other_file_systems_keep_sparks_default(root: str) -> None:
    assert checkpoint_manager_settings(root) == {}
