"""The production image, built with the project's own script and run with buildah.

The build starts in the background as soon as pytest has collected a session that holds an image test (niced, so
the other tests keep their CPU), and the image tests run last: a first build, which downloads about 1.2 GB, then
overlaps with the rest of the suite instead of adding to it. A build that is up to date takes a few seconds. Under
pytest-xdist every worker starts one; the build script lets one run at a time, and the next finds the image built.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
BUILD_SCRIPT = REPO / "deploy" / "image" / "build_image.sh"
IMAGE = os.environ.get("IMAGE", "jobrec:dev")
BUILD_TIMEOUT_SECONDS = 1800
IMAGE_TESTS = Path(__file__).resolve().parent


@dataclass
class _Build:
    process: subprocess.Popen[bytes]
    log: Path
    started: float


_build: _Build | None = None


def _is_image_test(item: pytest.Item) -> bool:
    return IMAGE_TESTS in Path(str(item.fspath)).resolve().parents


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # the image tests last, so that the background build has the whole suite's time to finish
    items.sort(key=_is_image_test)


def pytest_collection_finish(session: pytest.Session) -> None:
    global _build
    if session.config.option.collectonly or _build is not None:
        return
    if not any(_is_image_test(item) for item in session.items):
        return
    worker = os.environ.get("PYTEST_XDIST_WORKER", "")
    cache = Path(os.environ.get("JOBREC_CACHE_DIR", Path.home() / ".cache" / "jobrec"))
    log = cache / "image" / f"pytest-build{worker}.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    with log.open("wb") as out:
        process = subprocess.Popen(
            ["nice", "-n", "19", "ionice", "-c", "3", str(BUILD_SCRIPT)],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=REPO,
            env={**os.environ, "IMAGE": IMAGE},
            start_new_session=True,
        )
    _build = _Build(process, log, time.monotonic())


def pytest_unconfigure(config: pytest.Config) -> None:
    # a session ended early (Ctrl-C, -x) leaves no build running behind it
    if _build is not None and _build.process.poll() is None:
        os.killpg(_build.process.pid, signal.SIGTERM)
        _build.process.wait(timeout=60)


@pytest.fixture(scope="session")
def image() -> str:
    """The image's name once deploy/image/build_image.sh has built it (or found it up to date)."""
    assert _build is not None, "the image build was not started at collection"
    waited = time.monotonic()
    try:
        code = _build.process.wait(timeout=BUILD_TIMEOUT_SECONDS)
    except subprocess.TimeoutExpired:
        os.killpg(_build.process.pid, signal.SIGTERM)
        pytest.fail(f"the image build took more than {BUILD_TIMEOUT_SECONDS} s; log: {_build.log}")
    output = _build.log.read_text(errors="replace")
    assert code == 0, f"deploy/image/build_image.sh failed (exit {code}):\n{output[-4000:]}"
    print(
        f"\nimage build: {time.monotonic() - _build.started:.0f} s in the background, "
        f"{time.monotonic() - waited:.0f} s of it waited for by the image tests\n{output.strip()}"
    )
    return IMAGE


@dataclass(frozen=True)
class Container:
    """A working container of the image: commands run in it with `buildah run --isolation chroot`, which shares the
    host's network (a broker or a Spark driver on 127.0.0.1 is reachable)."""

    name: str
    entrypoint: list[str]
    cmd: list[str]

    def command(
        self, args: list[str], env: dict[str, str] | None = None, volumes: list[str] | None = None
    ) -> list[str]:
        """The buildah command that runs `args` as a pod would: through the image's ENTRYPOINT."""
        cmd = ["buildah", "run", "--isolation", "chroot", "--network", "host"]
        for key, value in (env or {}).items():
            cmd += ["--env", f"{key}={value}"]
        for volume in volumes or []:
            cmd += ["--volume", volume]
        return [*cmd, self.name, "--", *self.entrypoint, *args]

    def run(self, args: list[str], timeout: float, **kwargs) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            self.command(args, **kwargs), capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL
        )


@pytest.fixture
def container(image: str) -> Iterator[Container]:
    name = f"jobrec-test-{uuid.uuid4().hex[:8]}"
    subprocess.run(["buildah", "from", "--name", name, image], check=True, capture_output=True, timeout=120)
    try:
        inspect = subprocess.run(
            ["buildah", "inspect", "--type", "image", image], check=True, capture_output=True, text=True, timeout=60
        )
        config = json.loads(inspect.stdout)["Docker"]["config"]
        yield Container(name, list(config["Entrypoint"]), list(config.get("Cmd") or []))
    finally:
        subprocess.run(["buildah", "rm", name], capture_output=True, timeout=120)
