"""A failing image build, for real: a tiny Dockerfile whose ``RUN`` cannot start, built by the
same ``build_image`` and reporter as ``runner images build``. A person sees a short account (the
step failed, the log's last lines, its path), the full ``docker build`` output is in the log, and
the error still reaches the caller. Skips without a Docker engine (a failure in CI)."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from runner.core.errors import ImageError
from runner.images import ImageDef, build_image
from runner.images.report import console_build

pytestmark = [pytest.mark.docker, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def client() -> Any:
    docker = pytest.importorskip("docker")
    try:
        c = docker.from_env()
        c.ping()
    except docker.errors.DockerException as exc:  # no socket, engine down: both mean "no Docker"
        pytest.skip(f"no Docker engine answers: {exc}")
    return c


@pytest.mark.parametrize("terminal", [False, True], ids=["ci", "terminal"])
def test_a_failing_docker_build_shows_the_log_tail_and_path(
    client: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, terminal: bool
) -> None:
    monkeypatch.setenv("RUNNER_CACHE", str(tmp_path / "cache"))  # build contexts go here, not ~/.cache
    repo = tmp_path / "repo"
    (repo / "images").mkdir(parents=True)
    # scratch has no /bin/sh: the RUN step fails in the engine, after the builder has printed its
    # steps; and it leaves no intermediate image behind (scratch has no layer to commit)
    (repo / "images" / "bad.Dockerfile").write_text("FROM scratch\nRUN exit 3\n")
    defs = {"bad": ImageDef(dockerfile="images/bad.Dockerfile")}
    out = io.StringIO()
    log = tmp_path / "build.log"
    console = Console(file=out, width=120, force_terminal=terminal)
    with (
        pytest.raises(ImageError, match=r"docker build of runner/bad:\w+ failed"),
        console_build(console, log, what="bad") as report,
    ):
        build_image("bad", "scratch", "scratch", client=client, report=report, root=repo, images=defs)

    text, logged = out.getvalue(), log.read_text()
    assert re.search(r"^  Step 2/\d+ : RUN exit 3$", logged, re.MULTILINE) and "/bin/sh" in logged
    assert "error: docker build of runner/bad:" in logged
    assert f"images: build failed; full log: {log}" in text
    tail = [line for line in text.splitlines() if line.startswith("  | ")]
    assert 0 < len(tail) <= 30
    assert any(re.search(r"Step 2/\d+ : RUN exit 3$", line) for line in tail), text  # the failing step is shown
    if terminal:
        assert "✗" in text and "failed" in text  # the row of the step that failed
    else:
        assert "\x1b" not in text
        shown = text.splitlines()
        assert len(shown) <= 4 + 2 + len(tail), shown  # header, start, phase, tail header + tail, path
        assert "images: bad       building runner/bad:" in text
