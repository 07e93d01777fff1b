"""The package as a user gets it: one `jobrec` namespace in the wheel, the default config inside it, and a
command line that works from any folder."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_the_wheel_holds_only_the_jobrec_namespace_with_its_default_config(built_wheel: Path) -> None:
    names = zipfile.ZipFile(built_wheel).namelist()
    tops = {name.split("/")[0] for name in names}
    assert tops == {"jobrec", f"{built_wheel.name.split('-')[0]}-{built_wheel.name.split('-')[1]}.dist-info"}
    for data in ("config.default.yaml", "click_event.v1.json", "job_event.v1.json", "recommendation.v1.json"):
        assert f"jobrec/schemas/{data}" in names
    # the shipped defaults are the documented file, byte for byte (deploy/config/default.yaml links to it)
    shipped = zipfile.ZipFile(built_wheel).read("jobrec/schemas/config.default.yaml")
    assert shipped == (REPO / "deploy" / "config" / "default.yaml").read_bytes()
    assert "jobrec/streaming/cli.py" in names and "jobrec/batch/core/fold_in.py" in names
    assert "jobrec/batch/log4j2.properties" in names  # the JVM's quiet logging travels with the code


def test_help_and_config_work_from_a_folder_outside_the_checkout(
    installed_elsewhere: dict[str, str], tmp_path: Path
) -> None:
    where = subprocess.run(
        [sys.executable, "-c", "import jobrec.schemas.config as c; print(c.__file__)"],
        cwd=tmp_path,
        env=installed_elsewhere,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert not where.startswith(str(REPO)), where  # the unpacked wheel, not the checkout
    done = subprocess.run(
        [sys.executable, "-m", "jobrec.streaming.cli", "--help"],
        cwd=tmp_path,
        env=installed_elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0 and "usage: jobrec" in done.stdout, done.stderr
    # a wrong key fails at start naming it, with the defaults read from inside the package
    bad = tmp_path / "bad.yaml"
    bad.write_text("api:\n  port: -5\n")
    done = subprocess.run(
        [sys.executable, "-m", "jobrec.streaming.cli", "--config", str(bad), "kafka", "status"],
        cwd=tmp_path,
        env=installed_elsewhere,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2 and "api.port" in done.stderr, done.stderr
