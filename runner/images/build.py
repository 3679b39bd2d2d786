"""Building the images: the root filesystem (debootstrap + ``docker import``), the wheelhouse
(``pip download`` once, for the image's Python), and ``docker build`` of each image, skipped when an
image with the same content hash exists.

Progress goes to a ``Reporter`` (``report.py``) as events (a step starts, a phase, done or cached)
and tool output lines, so a person can get one row per image while the log keeps every line."""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from runner.core.errors import ImageError, RunnerError, RuntimeUnavailableError
from runner.images.defs import (
    IMAGES,
    REPO_ROOT,
    ROOTFS_INCLUDE,
    ROOTFS_REPO,
    ROOTFS_SUITE,
    ROOTFS_VARIANT,
    WHEEL_ABI,
    WHEEL_PLATFORMS,
    WHEEL_PYTHON,
    ImageDef,
    Log,
    build_order,
    chain_requirements,
    check_wheels,
    context_files,
    image_hash,
    image_tag,
    parse_apt_mirror,
    rootfs_hash,
    wheelhouse_key,
)
from runner.images.report import Reporter, console_build, verbose_from_env


def cache_dir() -> Path:
    """Where rootfs tarballs, wheelhouses and build logs live: ``$RUNNER_CACHE`` or ``~/.cache/runner``."""
    return Path(os.environ.get("RUNNER_CACHE") or Path.home() / ".cache" / "runner")


def default_log_path() -> Path:
    """The full output of the last ``runner images build``: beside what it cached."""
    return cache_dir() / "images-build.log"


def debian_mirror() -> str:
    """``$RUNNER_DEBIAN_MIRROR``, else the mirror this machine's apt uses for the suite."""
    if mirror := os.environ.get("RUNNER_DEBIAN_MIRROR"):
        return mirror.rstrip("/")
    apt = Path("/etc/apt")
    files = [
        apt / "sources.list",
        *sorted((apt / "sources.list.d").glob("*.list")),
        *sorted((apt / "sources.list.d").glob("*.sources")),
    ]
    texts = (f.read_text(errors="replace") for f in files if f.is_file())
    mirror = parse_apt_mirror(texts)
    if not mirror:
        raise ImageError(
            f"no Debian mirror for {ROOTFS_SUITE} in /etc/apt sources; set RUNNER_DEBIAN_MIRROR=http://<mirror>/debian"
        )
    return mirror


def get_client() -> Any:
    """A docker SDK client that answered a ping."""
    import docker

    try:
        client = docker.from_env()
        client.ping()
    except docker.errors.DockerException as exc:
        raise RuntimeUnavailableError(f"no Docker engine answers ({exc}); start dockerd or set DOCKER_HOST") from exc
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


def _run_logged(cmd: list[str], report: Reporter) -> list[str]:
    """Run ``cmd``, passing each output line to ``report``; return the lines, raise on failure."""
    lines: list[str] = []
    with subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True) as proc:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append(line.rstrip())
            report.output(line.rstrip())
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
    for pattern in (
        "var/cache/apt/archives/*.deb",
        "var/cache/apt/*.bin",
        "var/lib/apt/lists/*",
        "usr/share/man/*",
        "usr/share/info/*",
        "usr/share/locale/*",
        "var/log/*.log",
    ):
        for path in root.glob(pattern):
            if path.name in {"partial", "lock", "locale.alias"}:
                continue
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()
    for path in (root / "usr/share/doc").glob("*/*"):
        if path.name != "copyright":  # licenses stay, as in Debian's own slim images
            shutil.rmtree(path) if path.is_dir() and not path.is_symlink() else path.unlink()


def make_rootfs_tarball(tarball: Path, report: Reporter) -> None:
    """debootstrap a minimal Debian with python3 and write it as a tar to ``tarball``."""
    if not shutil.which("debootstrap"):
        raise ImageError(
            "debootstrap is not installed; `apt-get install debootstrap`, or set "
            "RUNNER_BASE_IMAGE=python:3.11-slim where a registry is reachable"
        )
    if os.geteuid() != 0:
        raise ImageError(
            "debootstrap needs root; run the image build as root, or set "
            "RUNNER_BASE_IMAGE=python:3.11-slim where a registry is reachable"
        )
    mirror = debian_mirror()
    tarball.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="debootstrap-", dir=tarball.parent))
    target, partial = work / "root", work / "rootfs.tar"
    try:
        report.note("rootfs", f"debootstrap {ROOTFS_SUITE} from {mirror} (a few minutes, once)")
        start = time.monotonic()
        _run_logged(
            [
                "debootstrap",
                f"--variant={ROOTFS_VARIANT}",
                f"--include={','.join(ROOTFS_INCLUDE)}",
                ROOTFS_SUITE,
                str(target),
                mirror,
            ],
            report,
        )
        report.note("rootfs", f"debootstrap took {time.monotonic() - start:.0f}s; writing the tarball")
        if _mounts_under(target):
            raise ImageError(f"debootstrap left mounts under {target}; unmount them and retry")
        _trim_rootfs(target)
        _run_logged(
            [
                "tar",
                "--numeric-owner",
                "--xattrs",
                "-C",
                str(target),
                "-cf",
                str(partial),
                "--exclude=./dev/*",
                "--exclude=./proc/*",
                "--exclude=./sys/*",
                ".",
            ],
            report,
        )
        partial.replace(tarball)  # atomic: a crash never leaves a half tarball in the cache
    finally:
        _remove_tree(work)


def ensure_rootfs_image(client: Any, report: Reporter) -> str:
    """Tag of the debootstrapped Debian base image, imported from the cached tarball if needed."""
    digest = rootfs_hash()
    tag = f"{ROOTFS_REPO}:{ROOTFS_SUITE}-{digest}"
    if image_exists(tag, client):
        report.done("rootfs", f"cached {tag}", cached=True)
        return tag
    report.start("rootfs", f"making {tag}")
    tarball = cache_dir() / "rootfs" / f"{ROOTFS_SUITE}-{digest}.tar"
    if not tarball.is_file():
        make_rootfs_tarball(tarball, report)
    report.note("rootfs", f"docker import {tarball}")
    import docker

    changes = [
        "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        "ENV LANG=C.UTF-8",
        'CMD ["/bin/bash"]',
    ]
    try:
        client.api.import_image_from_file(
            str(tarball), repository=ROOTFS_REPO, tag=f"{ROOTFS_SUITE}-{digest}", changes=changes
        )
    except docker.errors.DockerException as exc:
        raise ImageError(
            f"docker import of {tarball} failed ({exc}); delete the tarball to debootstrap it again"
        ) from exc
    if not image_exists(tag, client):
        raise ImageError(f"docker import did not create {tag}; delete {tarball} and retry")
    report.done("rootfs", f"built {tag}")
    return tag


def ensure_external_base(client: Any, base: str, report: Reporter) -> str:
    """Make sure a user-given base (e.g. python:3.11-slim) is local; return ``tag@id`` for hashing."""
    import docker

    try:
        image = client.images.get(base)
    except docker.errors.ImageNotFound:
        report.start("rootfs", f"pulling {base}")
        try:
            image = client.images.pull(base)
        except docker.errors.DockerException as exc:
            raise ImageError(
                f"cannot pull base image {base} ({exc}); without a registry unset "
                "RUNNER_BASE_IMAGE to build a debootstrapped Debian base"
            ) from exc
        report.done("rootfs", f"pulled {base}")
    else:
        report.done("rootfs", f"using {base}", cached=True)
    return f"{base}@{image.id}"


def _pip_download_cmd(dest: Path, reqfile: Path, constraints: Path | None) -> list[str]:
    cmd = [
        sys.executable,
        "-m",
        "pip",
        "download",
        "--dest",
        str(dest),
        "--progress-bar",
        "off",
        "--only-binary=:all:",
        "--python-version",
        WHEEL_PYTHON,
        "--implementation",
        "cp",
        "--abi",
        WHEEL_ABI,
        "-r",
        str(reqfile),
    ]
    for plat in WHEEL_PLATFORMS:
        cmd += ["--platform", plat]
    return cmd + (["-c", str(constraints)] if constraints else [])


def ensure_wheelhouse(
    requirements: Sequence[str], constraints: Sequence[str], report: Reporter, step: str = "wheels"
) -> Path:
    """A cached directory of wheels (plus requirements.txt) for ``requirements``.

    Downloaded once with pip (honouring PIP_* env and pip.conf, so PIP_FIND_LINKS finds the
    CPU torch); later builds reuse it without network. ``step`` is the image it is for.
    """
    house = cache_dir() / "wheels" / wheelhouse_key(requirements, constraints)
    if (house / "requirements.txt").is_file():
        report.note(step, f"wheels cached in {house}")
        return house
    house.parent.mkdir(parents=True, exist_ok=True)
    partial = Path(tempfile.mkdtemp(prefix=house.name + ".partial-", dir=house.parent))
    try:
        (partial / "requirements.in").write_text("\n".join(requirements) + "\n")
        cons = None
        if constraints:
            cons = partial / "constraints.txt"
            cons.write_text("\n".join(constraints) + "\n")
        report.note(step, f"pip download {' '.join(requirements)}")
        _run_logged(_pip_download_cmd(partial, partial / "requirements.in", cons), report)
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


def _docker_build(
    client: Any,
    context: Path,
    tag: str,
    buildargs: dict[str, str],
    labels: dict[str, str],
    nocache: bool,
    report: Reporter,
) -> None:
    """Run one build through the low-level API so that build output streams into ``report``."""
    import docker

    try:
        for chunk in client.api.build(
            path=str(context),
            dockerfile="Dockerfile",
            tag=tag,
            buildargs=buildargs,
            labels=labels,
            rm=True,
            forcerm=True,
            nocache=nocache,
            decode=True,
        ):
            if "error" in chunk:
                detail = chunk.get("errorDetail", {}).get("message") or chunk["error"]
                raise ImageError(f"docker build of {tag} failed: {detail.strip()}")
            for line in str(chunk.get("stream", "")).splitlines():
                if line.strip():
                    report.output(line)
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


def build_image(
    name: str,
    parent_ref: str,
    parent_tag: str,
    *,
    client: Any,
    log: Log = print,
    report: Reporter | None = None,
    force: bool = False,
    root: Path = REPO_ROOT,
    images: dict[str, ImageDef] = IMAGES,
) -> str:
    """Build (or reuse) one image on top of ``parent_tag``; tag it ``:latest`` too.

    Progress goes to ``report``, or as plain lines to ``log`` when there is none.
    """
    report = report or Reporter(log)
    defn = images[name]
    tag = image_tag(name, image_hash(defn, parent_ref, root))
    if not force and image_exists(tag, client):
        report.done(name, f"cached {tag}", cached=True)
    else:
        old_id = client.images.get(tag).id if force and image_exists(tag, client) else None
        report.start(name, f"building {tag}")
        (cache_dir() / "contexts").mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"{name}-", dir=cache_dir() / "contexts") as tmp:
            ctx = Path(tmp)
            shutil.copyfile(root / defn.dockerfile, ctx / "Dockerfile")
            for rel, src in context_files(root, defn.context):
                (ctx / rel).parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, ctx / rel)
            if defn.requirements:
                house = ensure_wheelhouse(defn.requirements, chain_requirements(name, images), report, name)
                for wheel in house.iterdir():
                    _link_or_copy(wheel, ctx / "wheels" / wheel.name)
            report.note(name, "docker build")
            _docker_build(
                client,
                ctx,
                tag,
                {defn.parent_arg: parent_tag},
                {"runner.image": name, "runner.hash": tag.rsplit(":", 1)[1]},
                force,
                report,
            )
        _prune_build_stages(client)
        if old_id and old_id != client.images.get(tag).id:
            _remove_quietly(client, old_id)
        report.done(name, f"built {tag}")
    repo = tag.rsplit(":", 1)[0]
    if not client.api.tag(tag, repo, "latest", force=True):
        raise ImageError(f"could not tag {tag} as {repo}:latest; check the Docker engine")
    return tag


def build_images(
    names: list[str] | None = None,
    *,
    force: bool = False,
    log: Log = print,
    report: Reporter | None = None,
    docker_client: Any = None,
    base: str | None = None,
    root: Path = REPO_ROOT,
) -> dict[str, str]:
    """Build ``names`` (default: all of IMAGES) and their parents; return name -> full tag.

    ``base`` (or ``$RUNNER_BASE_IMAGE``) replaces the debootstrapped root filesystem, e.g. with
    ``python:3.11-slim``. ``force`` rebuilds the images without Docker's layer cache; the
    cached rootfs tarball and wheelhouses are kept (delete them under ``cache_dir()`` to redo).
    Progress goes to ``report`` (``build_images_for_console`` gives a person's view), or as
    plain lines to ``log`` when there is none.
    """
    report = report or Reporter(log)
    order = build_order(names)
    client = docker_client or get_client()
    base = base or os.environ.get("RUNNER_BASE_IMAGE") or None
    if base:
        root_ref, root_tag = ensure_external_base(client, base, report), base
    else:
        root_ref = root_tag = ensure_rootfs_image(client, report)
    tags: dict[str, str] = {}
    for name in order:
        parent = IMAGES[name].parent
        parent_ref, parent_tag = (tags[parent], tags[parent]) if parent else (root_ref, root_tag)
        tags[name] = build_image(name, parent_ref, parent_tag, client=client, report=report, force=force, root=root)
    return tags


def build_images_for_console(
    names: list[str] | None,
    console: Any,
    *,
    force: bool = False,
    base: str | None = None,
    verbose: bool | None = None,
    log_file: Path | None = None,
) -> dict[str, str]:
    """``build_images`` as a person sees it (``runner images build``, ``scripts/setup.sh``): one
    row per step on ``console`` and the full output in ``log_file`` (appended to: setup keeps
    one log for all its steps) or, by default, a fresh ``default_log_path()``; on failure the
    log's last lines and its path, then the error. ``verbose`` (default: ``RUNNER_VERBOSE``)
    streams every line as well."""
    order = build_order(names)  # an unknown name fails here, before any header is printed
    verbose = verbose_from_env() if verbose is None else verbose
    with console_build(
        console,
        log_file or default_log_path(),
        verbose=verbose,
        append=log_file is not None,
        what=f"rootfs, {', '.join(order)}",
    ) as report:
        return build_images(order, force=force, base=base, report=report)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m runner.images [--force] [--verbose] [--log-file PATH] [--base IMAGE] [NAMES...]``:
    progress on stderr (one row per image; the full output in the log), one ``NAME<TAB>TAG``
    line per image on stdout."""
    from rich.console import Console

    parser = argparse.ArgumentParser(
        prog="python -m runner.images", description="Build runner's images (offline, cached)."
    )
    parser.add_argument("names", nargs="*", metavar="NAME", help=f"one of {', '.join(IMAGES)}")
    parser.add_argument("--force", action="store_true", help="rebuild even when cached")
    parser.add_argument("--base", help="base image instead of debootstrap (e.g. python:3.11-slim)")
    parser.add_argument(
        "--verbose",
        "-v",
        action="store_true",
        default=None,
        help="stream the full build output (default: RUNNER_VERBOSE)",
    )
    parser.add_argument(
        "--log-file", type=Path, help=f"append the full output here (default: a fresh {default_log_path()})"
    )
    args = parser.parse_args(argv)
    err = Console(stderr=True)
    try:
        tags = build_images_for_console(
            args.names or None, err, force=args.force, base=args.base, verbose=args.verbose, log_file=args.log_file
        )
    except RunnerError as exc:
        err.print(f"error: {exc}", markup=False, highlight=False, soft_wrap=True)
        return exc.exit_code
    for name, tag in tags.items():
        print(f"{name}\t{tag}")
    return 0
