"""Image definitions and content hashing, without Docker.

The hash decides whether an image is rebuilt, so it must move with every input that changes
the image (Dockerfile, parent, requirements, copied files) and stay put otherwise.
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from rich.console import Console

from runner import images
from runner.core.errors import ImageError
from runner.images import ImageDef
from runner.images import report as images_report


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A tiny repo: one Dockerfile and a package to copy."""
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "x.Dockerfile").write_text("ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\n")
    pkg = tmp_path / "workloads" / "x"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text("print('x')\n")
    return tmp_path


DEFN = ImageDef(dockerfile="images/x.Dockerfile", parent="base", requirements=("numpy",), context=("workloads",))


def digest(repo: Path, defn: ImageDef = DEFN, parent: str = "runner/base:abc") -> str:
    return images.image_hash(defn, parent, repo)


def test_hash_is_stable(repo: Path) -> None:
    assert digest(repo) == digest(repo)
    assert len(digest(repo)) == 64


def test_hash_changes_with_copied_file(repo: Path) -> None:
    before = digest(repo)
    (repo / "workloads" / "x" / "__main__.py").write_text("print('y')\n")
    assert digest(repo) != before


def test_hash_changes_with_new_or_renamed_file(repo: Path) -> None:
    before = digest(repo)
    (repo / "workloads" / "x" / "util.py").write_text("")
    added = digest(repo)
    assert added != before
    (repo / "workloads" / "x" / "util.py").rename(repo / "workloads" / "x" / "util2.py")
    assert digest(repo) not in (before, added)


def test_hash_ignores_bytecode_and_caches(repo: Path) -> None:
    before = digest(repo)
    cache = repo / "workloads" / "x" / "__pycache__"
    cache.mkdir()
    (cache / "__main__.cpython-311.pyc").write_bytes(b"\0junk")
    (repo / "workloads" / "x" / "stray.pyc").write_bytes(b"\0junk")
    assert digest(repo) == before


def test_hash_changes_with_dockerfile(repo: Path) -> None:
    before = digest(repo)
    with (repo / "images" / "x.Dockerfile").open("a") as f:
        f.write("ENV X=1\n")
    assert digest(repo) != before


def test_hash_changes_with_requirements_and_parent(repo: Path) -> None:
    before = digest(repo)
    pinned = ImageDef(**{**DEFN.__dict__, "requirements": ("numpy==2.0.0",)})
    assert digest(repo, pinned) != before
    assert digest(repo, parent="runner/base:def") != before


def test_content_hash_fields_are_framed() -> None:
    """Bytes moved between fields must not collide (length framing)."""
    a = images.content_hash("FROM x", "p", ["ab"], [("f", b"1")])
    b = images.content_hash("FROM x", "p", ["a", "b"], [("f", b"1")])
    c = images.content_hash("FROM x", "p", ["ab"], [("f1", b"")])
    assert len({a, b, c}) == 3
    # file order on disk does not matter
    assert images.content_hash("d", "p", [], [("a", b"1"), ("b", b"2")]) == images.content_hash(
        "d", "p", [], [("b", b"2"), ("a", b"1")]
    )


def test_missing_context_path_is_an_image_error(repo: Path) -> None:
    bad = ImageDef(dockerfile="images/x.Dockerfile", context=("nope",))
    with pytest.raises(ImageError, match="nope"):
        digest(repo, bad)


def test_image_tag_uses_12_hex() -> None:
    assert images.image_tag("smoke", "0123456789abcdef" * 4) == "runner/smoke:0123456789ab"


def test_real_definitions_hash_and_order() -> None:
    """The shipped IMAGES resolve: smoke needs base first; every Dockerfile exists."""
    assert images.build_order(["smoke"]) == ["base", "smoke"]
    assert images.build_order(None)[0] == "base"
    for name, defn in images.IMAGES.items():
        assert images.image_hash(defn, "parent:tag")
        assert set(images.build_order([name])) >= {name}
    with pytest.raises(ImageError, match="known images"):
        images.build_order(["nope"])


def test_chain_requirements_constrain_children() -> None:
    defs = {
        "base": ImageDef(dockerfile="b", requirements=("torch==2.13.0",)),
        "infer": ImageDef(dockerfile="i", parent="base", requirements=("transformers",)),
    }
    assert images.chain_requirements("infer", defs) == ["torch==2.13.0"]
    assert images.chain_requirements("base", defs) == []


def test_parse_apt_mirror_deb822_and_one_line() -> None:
    deb822 = (
        "Types: deb\n# comment\nURIs: http://mirror.example/debian-security\n"
        "Suites: bookworm-security\n\nTypes: deb\nURIs: http://mirror.example/debian/\n"
        "Suites: bookworm bookworm-updates\nComponents: main\n"
    )
    assert images.parse_apt_mirror([deb822]) == "http://mirror.example/debian"
    one_line = "# deb http://old/debian bookworm main\ndeb [arch=amd64] http://m.example/debian bookworm main\n"
    assert images.parse_apt_mirror([one_line]) == "http://m.example/debian"
    assert images.parse_apt_mirror(["deb http://m/debian trixie main"]) is None


def test_check_wheels_accepts_cpu_torch_only() -> None:
    reqs = ["torch==2.13.0", "numpy"]
    images.check_wheels(
        ["torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl", "numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl"],
        reqs,
    )
    with pytest.raises(ImageError, match="CPU build"):
        images.check_wheels(["torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl"], reqs)
    with pytest.raises(ImageError, match="no torch wheel"):
        images.check_wheels(["numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl"], reqs)
    with pytest.raises(ImageError, match="CUDA"):
        images.check_wheels(
            [
                "torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
                "nvidia_cublas_cu12-12.4-py3-none-manylinux2014_x86_64.whl",
            ],
            reqs,
        )
    images.check_wheels(["numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl"], ["numpy"])


def test_rootfs_and_wheelhouse_keys_are_stable() -> None:
    assert images.rootfs_hash() == images.rootfs_hash()
    assert images.rootfs_hash(include=("python3",)) != images.rootfs_hash()
    assert images.wheelhouse_key(["numpy"], []) != images.wheelhouse_key(["numpy"], ["torch"])


# -- what a person sees of a build (runner/images/report.py) ------------------------------------------------
def _cold_build(report: images_report.Reporter, lines_per_step: int = 300) -> None:
    """The events and output volume of a cold build of every image, as build_images raises them."""
    report.start("rootfs", "making runner/debian-base:bookworm-abc")
    report.note("rootfs", "debootstrap bookworm from http://deb.example/debian (a few minutes, once)")
    for i in range(lines_per_step):
        report.output(f"I: Retrieving package-{i} 1.0")
    report.done("rootfs", "built runner/debian-base:bookworm-abc")
    for name in images.build_order(None):
        if name == "smoke":
            report.done(name, f"cached runner/{name}:0123456789ab", cached=True)
            continue
        report.start(name, f"building runner/{name}:0123456789ab")
        report.note(name, "docker build")
        for i in range(lines_per_step):
            step = f"Step {i + 1}/{lines_per_step} : RUN step-{name}-{i}"
            report.output(step if i % 10 == 0 else f"output {name} {i}")
        report.done(name, f"built runner/{name}:0123456789ab")


def test_quiet_build_without_a_terminal_is_a_few_plain_lines_and_the_log_has_everything(tmp_path: Path) -> None:
    """As in CI: no live display and no escape codes, a handful of short lines per image (none of
    the ~1,800 tool lines), and every line of tool output in the log file."""
    out = io.StringIO()
    log = tmp_path / "logs" / "build.log"
    with images_report.console_build(Console(file=out, width=200), log, what="everything") as report:
        assert not report.live
        _cold_build(report)
    text = out.getvalue()
    assert "\x1b" not in text, "escape codes in a non-terminal log"
    shown = text.splitlines()
    assert len(shown) <= 2 + 4 * (len(images.IMAGES) + 1), shown
    assert all(len(line) <= 100 for line in shown[1:]), max(shown[1:], key=len)  # [0] names the log's path
    assert str(log) in shown[0] and "RUNNER_VERBOSE=1" in shown[0]
    assert "images: smoke     cached runner/smoke:0123456789ab" in shown
    assert any(line.startswith("images: base      built runner/base:0123456789ab in ") for line in shown)
    assert (
        shown[-1].startswith("images: ready in ") and f"({len(images.IMAGES)} built, 1 cached)" in shown[-1]
    )  # rootfs + all but smoke
    assert not any("output base" in line or "Retrieving" in line for line in shown)
    logged = log.read_text()
    assert logged.count("\n  output ") + logged.count("\n  Step ") + logged.count("\n  I: Retrieving") == 300 * len(
        images.IMAGES
    )  # rootfs + every image but the cached smoke
    assert "base: building runner/base:0123456789ab" in logged


def test_quiet_build_on_a_terminal_is_one_rich_row_per_step(tmp_path: Path) -> None:
    """On a terminal: a row per step (spinner, then a tick, elapsed time; 'cached' rows without
    one), never the tool output itself."""
    out = io.StringIO()
    with images_report.console_build(Console(file=out, force_terminal=True, width=120), tmp_path / "b.log") as report:
        assert report.live
        _cold_build(report, lines_per_step=20)
    text = out.getvalue()
    final = text.rsplit("\x1b[?25h", 1)[0]  # the last frame, before the cursor comes back
    for name in images.build_order(None):
        assert name in final
    assert "✓" in final and "cached runner/smoke:0123456789ab" in final and "0:00:00" in final
    assert "output base" not in text and "Retrieving" not in text


def test_verbose_streams_every_line_as_before(tmp_path: Path) -> None:
    out = io.StringIO()
    with images_report.console_build(
        Console(file=out, force_terminal=True, width=200), tmp_path / "b.log", verbose=True
    ) as report:
        assert not report.live  # the stream itself is the progress; no rows over it
        _cold_build(report, lines_per_step=20)
    text = out.getvalue()
    assert "  output base 19" in text and "  I: Retrieving package-19 1.0" in text
    assert "smoke: cached runner/smoke:0123456789ab" in text


def test_a_failed_step_shows_the_last_lines_of_the_log_and_its_path(tmp_path: Path) -> None:
    out = io.StringIO()
    log = tmp_path / "b.log"
    with (
        pytest.raises(ImageError, match="pip download failed"),
        images_report.console_build(Console(file=out, width=200), log) as report,
    ):
        report.start("base", "building runner/base:0123456789ab")
        for i in range(100):
            report.output(f"line {i}")
        raise ImageError("pip download failed (exit 1)")
    shown = out.getvalue().splitlines()
    tail = [line for line in shown if line.startswith("  | ")]
    assert tail == [f"  |   line {i}" for i in range(70, 100)]  # the last TAIL_LINES, in order
    assert shown[-1] == f"images: build failed; full log: {log}"
    assert "error: pip download failed (exit 1)" in log.read_text()


def test_runner_verbose_env() -> None:
    assert images_report.verbose_from_env({"RUNNER_VERBOSE": "1"})
    assert images_report.verbose_from_env({"RUNNER_VERBOSE": "yes"})
    assert not images_report.verbose_from_env({"RUNNER_VERBOSE": "0"})
    assert not images_report.verbose_from_env({})
