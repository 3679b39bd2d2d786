"""The digests of the images the operator pushed to the network's registry.

A pin is written with its audit entry in one transaction: which content the network's nodes run
for a reference is a decision the operator can be asked about later.
"""

from __future__ import annotations

import time

from sqlalchemy import select

from runner.core.errors import UserError
from runner.core.image_refs import canonical, digest_problem, reference_problem
from runner.store.auditlog import AuditStore
from runner.store.models import ImagePin


class ImagePinStore(AuditStore):
    def pin_image(self, reference: str, digest: str, *, by: str = "operator") -> ImagePin:
        """Record ``digest`` as the content of ``reference`` (replacing an older pin)."""
        problem = reference_problem(reference) or digest_problem(digest)
        if problem:
            raise UserError(problem)
        key = canonical(reference)
        with self.session() as s:
            row = s.get(ImagePin, key)
            before = row.digest if row else None
            if row is None:
                row = ImagePin(reference=key, digest=digest)
                s.add(row)
            row.digest, row.pinned_at = digest, time.time()
            if before != digest:
                self.append_audit(s, "image.pin", {"reference": key, "digest": digest, "before": before, "by": by})
            return row

    def image_digest(self, reference: str) -> str | None:
        """The pinned digest of ``reference``; None when the operator never pushed it."""
        with self.session() as s:
            row = s.get(ImagePin, canonical(reference))
            return row.digest if row else None

    def image_pins(self) -> list[ImagePin]:
        with self.session() as s:
            return list(s.scalars(select(ImagePin).order_by(ImagePin.reference)))
