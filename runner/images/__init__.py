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
``python -m runner.images [--force] [--verbose] [--base IMAGE] [NAMES...]`` builds from a shell.

``defs.py`` holds the definitions and pure logic, ``build.py`` the I/O, ``report.py`` what a
person sees of a build: one row per image, the full output in a log file under the cache.
"""

from runner.images.build import build_image, build_images, build_images_for_console, default_log_path, main
from runner.images.defs import (
    IMAGES,
    ImageDef,
    build_order,
    chain_requirements,
    check_wheels,
    content_hash,
    context_files,
    image_hash,
    image_tag,
    parse_apt_mirror,
    rootfs_hash,
    wheelhouse_key,
)

__all__ = [
    "IMAGES",
    "ImageDef",
    "build_image",
    "build_images",
    "build_images_for_console",
    "build_order",
    "chain_requirements",
    "check_wheels",
    "content_hash",
    "context_files",
    "default_log_path",
    "image_hash",
    "image_tag",
    "main",
    "parse_apt_mirror",
    "rootfs_hash",
    "wheelhouse_key",
]
