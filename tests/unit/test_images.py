"""Image definitions and content hashing, without Docker.

The hash decides whether an image is rebuilt, so it must move with every input that changes
the image (Dockerfile, parent, requirements, copied files) and stay put otherwise.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from runner import images
from runner.errors import ImageError
from runner.images import ImageDef


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


DEFN = ImageDef(dockerfile="images/x.Dockerfile", parent="base", requirements=("numpy",),
                context=("workloads",))


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
    assert images.content_hash("d", "p", [], [("a", b"1"), ("b", b"2")]) == \
        images.content_hash("d", "p", [], [("b", b"2"), ("a", b"1")])


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
    deb822 = ("Types: deb\n# comment\nURIs: http://mirror.example/debian-security\n"
              "Suites: bookworm-security\n\nTypes: deb\nURIs: http://mirror.example/debian/\n"
              "Suites: bookworm bookworm-updates\nComponents: main\n")
    assert images.parse_apt_mirror([deb822]) == "http://mirror.example/debian"
    one_line = "# deb http://old/debian bookworm main\ndeb [arch=amd64] http://m.example/debian bookworm main\n"
    assert images.parse_apt_mirror([one_line]) == "http://m.example/debian"
    assert images.parse_apt_mirror(["deb http://m/debian trixie main"]) is None


def test_check_wheels_accepts_cpu_torch_only() -> None:
    reqs = ["torch==2.13.0", "numpy"]
    images.check_wheels(["torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
                         "numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl"], reqs)
    with pytest.raises(ImageError, match="CPU build"):
        images.check_wheels(["torch-2.13.0-cp311-cp311-manylinux_2_28_x86_64.whl"], reqs)
    with pytest.raises(ImageError, match="no torch wheel"):
        images.check_wheels(["numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl"], reqs)
    with pytest.raises(ImageError, match="CUDA"):
        images.check_wheels(["torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl",
                             "nvidia_cublas_cu12-12.4-py3-none-manylinux2014_x86_64.whl"], reqs)
    images.check_wheels(["numpy-2.4.6-cp311-cp311-manylinux_2_28_x86_64.whl"], ["numpy"])


def test_rootfs_and_wheelhouse_keys_are_stable() -> None:
    assert images.rootfs_hash() == images.rootfs_hash()
    assert images.rootfs_hash(include=("python3",)) != images.rootfs_hash()
    assert images.wheelhouse_key(["numpy"], []) != images.wheelhouse_key(["numpy"], ["torch"])
