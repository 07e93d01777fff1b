"""How spark.jars_dir becomes spark.jars, and when the driver binds to loopback: pure path logic, no JVM."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobrec.batch.connections import cluster_on_loopback, jars_folder, spark_jar_uris

NAMES = ["delta-spark_4.2_2.13-4.4.0.jar", "kafka-clients-3.9.2.jar"]


def test_a_local_uri_folder_gives_local_uris_of_its_jars() -> None:
    # the production contract (the image bakes the jars into /opt/jobrec/jars on every node): three slashes, no host
    assert spark_jar_uris("local:///opt/jobrec/jars", NAMES) == [
        "local:///opt/jobrec/jars/delta-spark_4.2_2.13-4.4.0.jar",
        "local:///opt/jobrec/jars/kafka-clients-3.9.2.jar",
    ]
    assert jars_folder("local:///opt/jobrec/jars") == Path("/opt/jobrec/jars")


def test_a_local_uri_with_a_trailing_slash_or_one_slash_names_the_same_folder() -> None:
    expected = ["local:///opt/jobrec/jars/kafka-clients-3.9.2.jar"]
    assert spark_jar_uris("local:///opt/jobrec/jars/", NAMES[1:]) == expected
    assert spark_jar_uris("local:/opt/jobrec/jars", NAMES[1:]) == expected


def test_a_folder_path_gives_absolute_paths_that_the_driver_serves() -> None:
    assert spark_jar_uris("/home/me/.cache/jobrec/jars/spark", NAMES[:1]) == [
        "/home/me/.cache/jobrec/jars/spark/delta-spark_4.2_2.13-4.4.0.jar"
    ]
    assert jars_folder("/home/me/jars") == Path("/home/me/jars")


@pytest.mark.parametrize("bad", ["local://opt/jobrec/jars", "local:opt/jars", "local://host/opt/jars"])
def test_a_local_uri_with_a_host_or_a_relative_path_is_refused_with_the_key(bad: str) -> None:
    # local://opt/jobrec/jars reads "opt" as a host: the jars would be looked for in /jobrec/jars
    with pytest.raises(ValueError, match=r"^spark\.jars_dir: .*local:///opt/jobrec/jars"):
        spark_jar_uris(bad, NAMES)


@pytest.mark.parametrize(
    "master",
    ["local[2]", "local", "local[*]", "spark://127.0.0.1:7077", "spark://localhost:7077", "spark://[::1]:7077"],
)
def test_local_mode_and_a_standalone_master_on_loopback_keep_the_driver_on_loopback(master: str) -> None:
    assert cluster_on_loopback(master)


@pytest.mark.parametrize(
    "master",
    [
        "spark://10.0.0.5:7077",
        "spark://spark-master.spark.svc:7077",
        "spark://127.0.0.1:7077,10.0.0.6:7077",
        "k8s://https://kubernetes.default.svc:443",
        "yarn",
    ],
)
def test_a_master_elsewhere_leaves_the_driver_address_to_spark_and_the_config(master: str) -> None:
    assert not cluster_on_loopback(master)
