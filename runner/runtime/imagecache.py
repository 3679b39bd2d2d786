"""A node's image cache, as rules: which images to evict, and how far a pull has got. Pure.

A provider host pulls each workload image from the network's registry on first use and keeps it,
so the next replica starts at once. Disks are finite, so past a budget the images used longest
ago go, but only images this node pulled from the registry (never one the operator built or
pulled by hand) and never one a container on the engine uses. The Docker side (listing, timing,
removing) is ``runtime.docker_images``; this module decides, so it is tested without an engine.

Pull progress comes from the engine's streamed pull events, one per layer and step; summed over
the layers it is the "312/1043 MB" that ``runner status`` shows while a replica is PULLING. The
total grows as layers start (the engine fetches a few at a time, and a layer tells its size only
once it starts), and layers the engine already holds count for nothing: they are not fetched.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GB = 1_000_000_000


@dataclass(frozen=True)
class CachedImage:
    """One image on a node's engine, as eviction sees it."""

    id: str
    #: All its layers.
    size_bytes: int
    #: Bytes its removal frees: its layers no other image holds.
    unique_bytes: int
    #: UNIX seconds of its last use (pull or replica start).
    last_used: float
    #: Pulled by runner from the network's registry: only these are ever evicted.
    pulled: bool
    #: A container on the engine (running or not) uses it, or a start on this node is about to.
    in_use: bool


def evictions(images: Iterable[CachedImage], *, total_bytes: int, budget_bytes: int) -> list[CachedImage]:
    """The images to remove, least recently used first, until the engine's image total
    (``total_bytes``, shared layers counted once) is within ``budget_bytes``; those it may not
    remove are skipped, so the total can stay over the budget when everything left is in use.

    Each removal is counted as freeing its unique bytes, which undercounts when two evicted
    images share layers with no one else: the caller removes the first, measures again and asks
    again, so it never removes more than the budget needs.
    """
    over = total_bytes - max(budget_bytes, 0)
    plan: list[CachedImage] = []
    for image in sorted((i for i in images if i.pulled and not i.in_use), key=lambda i: (i.last_used, i.id)):
        if over <= 0:
            break
        plan.append(image)
        over -= image.unique_bytes
    return plan


class PullProgress:
    """Bytes fetched and to fetch in one pull, summed over its layers, fed the engine's events
    (``client.api.pull(..., stream=True, decode=True)``). Fed by the pulling thread and read by
    another: ``bytes`` is one tuple, replaced whole, so a reader never sees done past total."""

    def __init__(self) -> None:
        self._layers: dict[str, tuple[int, int]] = {}
        #: (done, total) so far.
        self.bytes: tuple[int, int] = (0, 0)

    def feed(self, event: Mapping[str, Any]) -> None:
        layer, status = event.get("id"), str(event.get("status", ""))
        if not layer or status.startswith("Pulling from"):  # the image's own line, not a layer's
            return
        detail = event.get("progressDetail") or {}
        done, total = self._layers.get(layer, (0, 0))
        if status == "Downloading" and detail.get("total"):
            total = int(detail["total"])
            done = min(max(int(detail.get("current", 0)), done), total)
        elif status in ("Verifying Checksum", "Download complete", "Extracting", "Pull complete"):
            done = total  # fetched; extracting is the engine's own work on bytes it has
        else:  # "Pulling fs layer", "Waiting", "Already exists": nothing fetched yet, or nothing to fetch
            return
        self._layers[layer] = (done, total)
        self.bytes = (sum(d for d, _ in self._layers.values()), sum(t for _, t in self._layers.values()))
