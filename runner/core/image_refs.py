"""Image references, and which of them a node may only run by the digest the operator pinned.

The network's registry takes a push from anyone who reaches it (providers and players among
them), and its links are plain HTTP, so a tag there says nothing about what a node would run:
another party can push ``runner/smoke:latest`` of its own. What the operator pushed is known by
its manifest digest, recorded when ``runner images push`` pushed it (the store's image pins).
Commands to nodes carry that digest; a node pulls and runs ``<registry>/<repo>@<digest>``, and
its engine checks every byte it fetches against it. Pure: no I/O.
"""

from __future__ import annotations

import re

#: A manifest digest as the registry and the engine write it.
DIGEST = re.compile(r"^sha256:[0-9a-f]{64}$")
#: A reference to pin: ``repo[:tag]``, lower-case path components, at most 255 characters.
REFERENCE = re.compile(r"^[a-z0-9]+(?:[._/-][a-z0-9]+)*(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?$")


def split_reference(image: str) -> tuple[str, str]:
    """``repo[:tag]`` -> (repo, tag), ``latest`` when none is given (a registry's port is no tag)."""
    if ":" in image.rsplit("/", 1)[-1]:
        repo, _, tag = image.rpartition(":")
        return repo, tag
    return image, "latest"


def canonical(image: str) -> str:
    """``repo:tag``, with ``latest`` written out: the key an image's pin is kept under."""
    return ":".join(split_reference(image))


def names_a_registry(image: str) -> bool:
    """True for ``host[:port]/repo...``: the image comes from a registry the spec chose itself,
    not from the network's (Docker's own rule for telling a registry from a path component)."""
    repo, _ = split_reference(image)
    first = repo.split("/", 1)[0]
    return "/" in repo and ("." in first or ":" in first or first == "localhost")


def from_network_registry(image: str, registry: str) -> bool:
    """Whether a node of a network whose registry is ``registry`` (empty: CPU mode, no registry)
    gets ``image`` from it, and so may run it only pinned."""
    return bool(registry) and not names_a_registry(image)


def reference_problem(image: str) -> str | None:
    """Why ``image`` cannot be pinned, in words; None when it can."""
    if len(image) > 255 or not REFERENCE.match(image):
        return f"{image!r} is not an image reference of the form repo[:tag] (lower-case path, no registry)"
    if names_a_registry(image):
        return f"{image!r} names a registry of its own; only images of the network's registry are pinned"
    return None


def digest_problem(digest: str) -> str | None:
    """Why ``digest`` is no manifest digest, in words; None when it is one."""
    return None if DIGEST.match(digest) else f"{digest!r} is not a digest of the form sha256:<64 hex digits>"
