"""Each workload's own credential for the network's store (``runner/core/network_store.py`` says why).

The store's admin credential (what `runner up --store` was given, kept in the head's home, 0600)
never leaves the head. Each *holder* gets an IAM user of its own, ``runner-<holder>``, with the
inline policy ``workload_policy`` writes, and one access key. A holder is a workload (a service:
its replicas come and go) or one attempt of a training gang (``<workload>.a<attempt>``): when a
gang is placed again, the earlier attempt's key is revoked, so a gang cut off from the head but not
from the store cannot write another checkpoint (a fencing token, held by the store itself).

The key is kept in ``<home>/store-keys/<holder>.json`` (0600, written whole or not at all) before
any replica is given it, so a restarted control plane hands the next replica the same key, and a
key that was made but never written down was never handed out: it is deleted, not reused. When the
workload ends its users go; a control plane that died before that revokes on its next start.

The admin side talks IAM through boto3 to the store's endpoint (a real S3 has IAM; here moto's
server with its IAM checks on is the stand-in).
"""

from __future__ import annotations

import json
import logging
import os
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

from runner.core.errors import ArtifactStoreError
from runner.core.network_store import NetworkStore, workload_policy

log = logging.getLogger(__name__)

POLICY_NAME = "runner-workload"


#: Between a workload's id and its attempt in a holder's name (IAM user names allow ".").
ATTEMPT_SEP = ".a"


def user_name(holder: str) -> str:
    return f"runner-{holder}"


def attempt_holder(workload_id: str, attempt: int) -> str:
    return f"{workload_id}{ATTEMPT_SEP}{attempt}"


def workload_of(holder: str) -> str:
    return holder.split(ATTEMPT_SEP, 1)[0]


def read_admin(path: Path) -> dict[str, str]:
    """The store's admin credential, as `runner up --store` kept it."""
    try:
        data = json.loads(path.read_text())
        return {"access_key_id": str(data["access_key_id"]), "secret_access_key": str(data["secret_access_key"])}
    except (OSError, ValueError, KeyError) as exc:
        raise ArtifactStoreError(
            f"the network store's admin credential {path} cannot be read ({exc}). "
            "To fix: runner down, then runner up --store ... with AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY set"
        ) from None


def write_private(path: Path, data: dict[str, Any]) -> None:
    """``data`` as JSON at ``path``, readable by this user only, replaced in one step."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        json.dump(data, out)
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


def admin_env(store: NetworkStore, admin: dict[str, str]) -> dict[str, str]:
    """boto3's variables for the head's own reads of the store (`runner artifacts`)."""
    return {
        "AWS_ENDPOINT_URL": store.endpoint,
        "AWS_ACCESS_KEY_ID": admin["access_key_id"],
        "AWS_SECRET_ACCESS_KEY": admin["secret_access_key"],
        "AWS_DEFAULT_REGION": store.region,
    }


class StoreCredentials:
    """Issues, keeps and revokes workloads' credentials for one network store."""

    def __init__(
        self, store: NetworkStore, admin: dict[str, str], keys_dir: Path, iam: Callable[[], Any] | None = None
    ) -> None:
        self.store = store
        self.admin = admin
        self.keys_dir = keys_dir
        self._iam_factory = iam or self._boto_iam
        self._iam: Any = None
        self._lock = threading.Lock()

    def _boto_iam(self) -> Any:
        import boto3

        return boto3.client(
            "iam",
            endpoint_url=self.store.endpoint,
            region_name=self.store.region,
            aws_access_key_id=self.admin["access_key_id"],
            aws_secret_access_key=self.admin["secret_access_key"],
        )

    @property
    def iam(self) -> Any:
        if self._iam is None:
            self._iam = self._iam_factory()
        return self._iam

    def _path(self, holder: str) -> Path:
        return self.keys_dir / f"{holder}.json"

    def env_for(self, holder: str, write: str, read: tuple[str, ...] = ()) -> dict[str, str]:
        """The variables a replica of ``holder`` gets: its own key, allowed ``write`` (read and
        write) and ``read`` (read only) in the store, nothing else."""
        policy = workload_policy(self.store, write, read)
        with self._lock:
            try:
                key = self._issue(holder, policy)
            except Exception as exc:
                if isinstance(exc, ArtifactStoreError):
                    raise
                raise ArtifactStoreError(
                    f"the network store at {self.store.endpoint} did not issue a credential for {holder}: {exc}"
                ) from None
        return {
            "AWS_ENDPOINT_URL": self.store.endpoint,
            "AWS_ACCESS_KEY_ID": key["access_key_id"],
            "AWS_SECRET_ACCESS_KEY": key["secret_access_key"],
            "AWS_DEFAULT_REGION": self.store.region,
        }

    def _issue(self, holder: str, policy: dict[str, Any]) -> dict[str, str]:
        path, user = self._path(holder), user_name(holder)
        try:
            kept = json.loads(path.read_text())
        except (OSError, ValueError):
            kept = None
        if kept is not None and kept.get("policy") == policy:
            return kept
        errors = self.iam.exceptions
        try:
            self.iam.create_user(UserName=user, Tags=[{"Key": "runner-workload", "Value": workload_of(holder)}])
        except errors.EntityAlreadyExistsException:
            pass
        self.iam.put_user_policy(UserName=user, PolicyName=POLICY_NAME, PolicyDocument=json.dumps(policy))
        if kept is not None:  # the same key, a changed policy (a service that serves another model)
            kept["policy"] = policy
            write_private(path, kept)
            return kept
        for old in self.iam.list_access_keys(UserName=user)["AccessKeyMetadata"]:  # made, never handed out
            self.iam.delete_access_key(UserName=user, AccessKeyId=old["AccessKeyId"])
        made = self.iam.create_access_key(UserName=user)["AccessKey"]
        key = {"access_key_id": made["AccessKeyId"], "secret_access_key": made["SecretAccessKey"], "policy": policy}
        write_private(path, key)
        return key

    def revoke(self, holder: str) -> None:
        """The holder's user and keys go; its artifacts stay (the head reads them as admin)."""
        user = user_name(holder)
        with self._lock:
            errors = self.iam.exceptions
            try:
                for old in self.iam.list_access_keys(UserName=user)["AccessKeyMetadata"]:
                    self.iam.delete_access_key(UserName=user, AccessKeyId=old["AccessKeyId"])
                self.iam.delete_user_policy(UserName=user, PolicyName=POLICY_NAME)
            except errors.NoSuchEntityException:
                pass
            try:
                self.iam.delete_user(UserName=user)
            except errors.NoSuchEntityException:
                pass
            self._path(holder).unlink(missing_ok=True)
        log.info("store credential of %s revoked", holder)

    def kept(self, workload_id: str | None = None) -> list[str]:
        """Holders whose keys are kept here (each valid until revoked), of one workload or all."""
        holders = sorted(p.stem for p in self.keys_dir.glob("*.json")) if self.keys_dir.exists() else []
        return [h for h in holders if workload_id is None or workload_of(h) == workload_id]

    def revoke_earlier_attempts(self, workload_id: str, attempt: int) -> list[str]:
        """Fence a gang placed again: the keys of its attempts before ``attempt`` go."""
        earlier = [h for h in self.kept(workload_id) if ATTEMPT_SEP in h and int(h.rsplit(ATTEMPT_SEP, 1)[1]) < attempt]
        for holder in earlier:
            self.revoke(holder)
        return earlier

    def revoke_ended(self, ended: Callable[[str], bool]) -> list[str]:
        """Revoke the kept keys of workloads that have ended (a control plane that died before
        their end revokes them now); the holders revoked. A failure is logged, retried later."""
        done = []
        for holder in self.kept():
            if ended(workload_of(holder)):
                try:
                    self.revoke(holder)
                    done.append(holder)
                except Exception as exc:  # the store is away: try again later
                    log.warning("could not revoke the store credential of %s: %s", holder, exc)
        return done
