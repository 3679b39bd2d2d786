"""A provider host's images on its own engine: pulled from the network's registry on first use
(with progress), marked at each use, and evicted least recently used first past a disk budget.

The rules are in ``runtime.imagecache``; this is their Docker side. What the cache knows lives in
the engine itself, not in a file of ours, because the cache *is* the engine's image store:
- an image this node pulled from the registry still carries the registry's name
  (``REGISTRY/runner/smoke:TAG``) beside the spec's (``runner/smoke:TAG``); an image the operator
  built or pulled by hand has no such name, and is never evicted;
- its last use is the engine's ``Metadata.LastTagTime``, which every tag call sets: a pull tags
  the image, and each replica start tags it again under the name it already has. It survives an
  agent restart, follows the image if it is removed by hand (no stale record), and is one record
  for every node that shares the engine;
- whether a container uses it, and the bytes its removal frees, come from the engine's disk
  usage report (``docker system df``), which counts shared layers once.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from runner.core.errors import ImageError
from runner.core.image_refs import canonical, from_network_registry, names_a_registry, split_reference
from runner.runtime.imagecache import GB, CachedImage, PullProgress, evictions

log = logging.getLogger("runner.images")

#: Removals of one eviction round at most (each is measured again): a bound, not a target.
MAX_EVICTIONS = 100
#: How long a disk usage report waits for one already running (the engine runs one at a time).
DISK_USAGE_WAIT_S = 30.0


class PullCancelled(Exception):
    """A stop came for the replica before its container was made (while its image was pulled)."""


def parse_time(value: str | None) -> float | None:
    """Docker's RFC 3339 times (nanoseconds, Z) as UNIX seconds; None for its zero time."""
    if not value or value.startswith("0001-"):
        return None
    head, _, rest = value.partition(".")
    frac = "".join(ch for ch in rest if ch.isdigit())[:6]  # Python takes microseconds
    return datetime.fromisoformat(f"{head.rstrip('Z')}.{frac or '0'}+00:00").timestamp()


def _not_found(message: str) -> bool:
    """The registry does not hold it (the engine says so in words only: 404 or 500, or in the stream)."""
    text = message.lower()
    return "not found" in text or "manifest unknown" in text


class NodeImages:
    """The engine's images, for one runtime: pull with progress, mark use, evict past budget."""

    def __init__(self, client: Any, *, registry: str, budget_bytes: int) -> None:
        self.client = client
        self.registry = registry
        self.budget_bytes = budget_bytes
        self._evicting = threading.Lock()
        self._again = threading.Event()

    @property
    def managed(self) -> bool:
        """Only a node that pulls from a registry caches: a CPU-mode node shares the head's
        engine, whose images are the ones the operator built."""
        return bool(self.registry)

    def source_of(self, image: str) -> str:
        """Where ``image`` is pulled from: the registry it names, else the network's."""
        repo, _ = split_reference(image)
        return repo if names_a_registry(image) else f"{self.registry}/{repo}"  # a spec's own registry as it is

    def reference(self, image: str, digest: str) -> str:
        """What a container of ``image`` is made from: with the operator's ``digest``, that content
        of the network's registry (``<registry>/<repo>@<digest>``), whatever a tag of that name on
        this engine or in the registry holds now; else ``image`` itself."""
        return f"{self.source_of(image)}@{digest}" if digest and self.managed else image

    def pull(self, image: str, digest: str, progress: PullProgress, cancelled: Callable[[], bool]) -> bool:
        """Pull ``image`` from the registry, feeding ``progress``, and tag it under its own name;
        False when there is no registry or it does not hold the image. An image of the network's
        registry is pulled only by the operator's ``digest`` (the engine checks every byte against
        it), never by tag: anyone who reaches the registry can push a tag. ``cancelled`` is asked
        at every event of the engine's stream: True ends the pull (``PullCancelled``)."""
        import docker

        if not self.registry:
            return False
        if from_network_registry(image, self.registry) and not digest:
            raise ImageError(
                f"image {image!r} has no digest pinned by the operator, and this node pulls the network's "
                "images only by digest. To fix: the operator pushes it (runner images push, on the head)"
            )
        repo, tag = split_reference(image)
        source = self.source_of(image)
        wanted = digest or tag
        try:
            for event in self.client.api.pull(source, tag=wanted, stream=True, decode=True):
                if "error" in event:
                    message = str((event.get("errorDetail") or {}).get("message") or event["error"])
                    if _not_found(message):
                        return False
                    raise ImageError(
                        f"pulling {self.reference(image, digest)} on this node failed: {message}. To fix: check "
                        "that the node reaches the registry and the image was pushed (runner images push)"
                    )
                progress.feed(event)
                if cancelled():
                    raise PullCancelled(image)
        except docker.errors.NotFound:
            return False
        except docker.errors.APIError as exc:
            if exc.status_code in (404, 500) and _not_found(str(exc)):
                return False
            raise
        pulled = self.reference(image, digest) if digest else f"{source}:{tag}"
        if digest:  # the registry's name by tag too: eviction knows a pulled image by it
            self.client.api.tag(pulled, source, tag)
        if source != repo or digest:
            self.client.api.tag(pulled, repo, tag)  # the spec's name; also marks the use
        return True

    def touch(self, image: str, digest: str = "") -> None:
        """Mark ``image`` used now: tag it again under the name it has (sets LastTagTime); with a
        digest, the name moves to that content if anything else held it."""
        import docker

        if not self.managed:
            return
        repo, tag = split_reference(image)
        try:
            self.client.api.tag(self.reference(image, digest), repo, tag)
        except docker.errors.APIError:  # removed meanwhile: the next start pulls it again
            log.debug("could not mark %s used", image, exc_info=True)

    # -- eviction ------------------------------------------------------------------------------------
    def cached(self, pinned: set[str]) -> tuple[list[CachedImage], int]:
        """The engine's images as eviction sees them, and its total bytes of image layers.
        ``pinned``: references of starts in flight on this node, in use though no container
        holds them yet."""
        usage = self._disk_usage()
        prefix = f"{self.registry}/"
        images = []
        for row in usage.get("Images") or []:
            tags = row.get("RepoTags") or []
            pulled = any(t.startswith(prefix) for t in tags)
            size = int(row.get("Size") or 0)
            shared = max(int(row.get("SharedSize") or 0), 0)
            last_used = self._last_used(row["Id"], float(row.get("Created") or 0)) if pulled else 0.0
            in_use = int(row.get("Containers") or 0) > 0 or any(self._ref(t) in pinned for t in tags)
            images.append(
                CachedImage(
                    id=row["Id"],
                    size_bytes=size,
                    unique_bytes=max(size - shared, 0),
                    last_used=last_used,
                    pulled=pulled,
                    in_use=in_use,
                )
            )
        return images, int(usage.get("LayersSize") or 0)

    def _disk_usage(self) -> dict[str, Any]:
        """The engine's ``system df``. It runs one at a time and refuses a second meanwhile ("a
        disk usage operation is already running": another round, an operator's ``docker system
        df``), so a refused one is asked again, for a while."""
        import docker

        deadline = time.monotonic() + DISK_USAGE_WAIT_S
        while True:
            try:
                return dict(self.client.df())
            except docker.errors.APIError as exc:
                if "already running" not in str(exc) or time.monotonic() > deadline:
                    raise
            time.sleep(0.2)

    def _last_used(self, image_id: str, created: float) -> float:
        try:
            meta = self.client.api.inspect_image(image_id).get("Metadata") or {}
        except Exception:  # removed since it was listed: it is not evicted twice
            return created
        return parse_time(meta.get("LastTagTime")) or created

    @staticmethod
    def _ref(reference: str) -> str:
        return canonical(reference)

    def evict(self, pinned: Callable[[], set[str]]) -> list[str]:
        """Remove images, least recently used first, until the engine's images fit the budget;
        the ids removed. One image at a time, measured again after each (shared layers)."""
        removed: list[str] = []
        refused: set[str] = set()
        for _ in range(MAX_EVICTIONS):
            images, total = self.cached({self._ref(p) for p in pinned()})
            images = [i for i in images if i.id not in refused]
            plan = evictions(images, total_bytes=total, budget_bytes=self.budget_bytes)
            if not plan:
                break
            victim = plan[0]
            if self._remove(victim.id):
                removed.append(victim.id)
                log.info(
                    "evicted image %s (%.2f GB; images %.2f GB, budget %.2f GB)",
                    victim.id[:19],
                    victim.size_bytes / GB,
                    total / GB,
                    self.budget_bytes / GB,
                )
            else:
                refused.add(victim.id)
        return removed

    def _remove(self, image_id: str) -> bool:
        """Untag the image name by name, without force: an image a container took up meanwhile
        keeps its last name and stays (the engine refuses), and the last name gone removes it."""
        import docker

        try:
            tags = self.client.api.inspect_image(image_id).get("RepoTags") or []
            # The registry's name last: refused, the image keeps it and so stays evictable.
            for tag in sorted(tags, key=lambda t: t.startswith(f"{self.registry}/")):
                self.client.api.remove_image(tag)
        except docker.errors.NotFound:
            return True
        except docker.errors.APIError as exc:
            log.info("not evicting image %s: %s", image_id[:19], exc)
            return False
        return True

    def evict_soon(self, pinned: Callable[[], set[str]]) -> None:
        """Evict in a thread of its own, so a replica's start does not wait for removals; one at
        a time, and a request made during a round runs one round more."""
        if not self.managed:
            return
        self._again.set()
        threading.Thread(target=self._evict_rounds, args=(pinned,), name="image-eviction", daemon=True).start()

    def _evict_rounds(self, pinned: Callable[[], set[str]]) -> None:
        while self._again.is_set():
            if not self._evicting.acquire(blocking=False):
                return  # the running round sees _again and goes once more
            try:
                while self._again.is_set():
                    self._again.clear()
                    try:
                        self.evict(pinned)
                    except Exception:  # best effort: a failed round leaves images behind, never replicas
                        log.exception("image eviction failed")
            finally:
                self._evicting.release()
