"""``s3://`` artifact store: objects under a bucket prefix, through boto3 (imported lazily)."""

from __future__ import annotations

import os
import uuid
from pathlib import Path
from typing import Any

from workloads.common.artifacts_base import (
    TMP_MARK,
    ArtifactError,
    ArtifactInfo,
    ArtifactNotFoundError,
    ArtifactStore,
    check_key,
    join,
)


class S3Store(ArtifactStore):
    """Objects under ``s3://BUCKET/PREFIX``. A PUT is atomic in S3 (an object appears whole or
    not at all), multipart uploads included. The endpoint comes from ``AWS_ENDPOINT_URL`` (any
    S3-compatible server), credentials and region from the usual AWS variables."""

    def __init__(self, uri: str, bucket: str, prefix: str, client: Any = None) -> None:
        super().__init__(uri)
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._client = client

    @property
    def client(self) -> Any:
        if self._client is None:
            try:
                import boto3
                from botocore.config import Config
            except ImportError as exc:
                raise ArtifactError(
                    f"{self.uri} needs boto3, which is not installed; pip install boto3 (the training image has it)"
                ) from exc
            endpoint = os.environ.get("AWS_ENDPOINT_URL") or None
            self._client = boto3.client(
                "s3", endpoint_url=endpoint, config=Config(retries={"max_attempts": 5, "mode": "standard"})
            )
        return self._client

    def _key(self, key: str) -> str:
        return join(self.prefix, check_key(key, self.uri))

    def _fail(self, what: str, key: str, exc: Exception) -> ArtifactError:
        from botocore.exceptions import ClientError, NoCredentialsError

        endpoint = os.environ.get("AWS_ENDPOINT_URL") or "AWS"
        if isinstance(exc, ClientError):
            code = str(exc.response.get("Error", {}).get("Code", ""))
            if code == "NoSuchBucket":
                return ArtifactNotFoundError(
                    f"bucket {self.bucket!r} of {self.uri} does not exist at {endpoint}; create it first"
                )
            if code in ("NoSuchKey", "404", "NotFound"):
                return ArtifactNotFoundError(f"no artifact at {self.url(key)}")
            if code in ("AccessDenied", "403", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
                return ArtifactError(
                    f"cannot {what} {self.url(key)}: access denied ({code}); check "
                    "AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY and the bucket policy"
                )
        if isinstance(exc, NoCredentialsError):
            return ArtifactError(
                f"cannot {what} {self.url(key)}: no S3 credentials; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            )
        return ArtifactError(
            f"cannot {what} {self.url(key)} at {endpoint}: {exc}; check AWS_ENDPOINT_URL "
            "and that the S3 server is reachable"
        )

    def _call(self, what: str, key: str, fn: Any, **kwargs: Any) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return fn(**kwargs)
        except (BotoCoreError, ClientError) as exc:
            raise self._fail(what, key, exc) from exc

    def put_bytes(self, key: str, data: bytes) -> str:
        self._call("write", key, self.client.put_object, Bucket=self.bucket, Key=self._key(key), Body=data)
        return self.url(check_key(key, self.uri))

    def put_file(self, key: str, path: Path) -> str:
        self._call("write", key, self.client.upload_file, Filename=str(path), Bucket=self.bucket, Key=self._key(key))
        return self.url(check_key(key, self.uri))

    def get_bytes(self, key: str) -> bytes:
        resp = self._call("read", key, self.client.get_object, Bucket=self.bucket, Key=self._key(key))
        return resp["Body"].read()

    def get_file(self, key: str, dest: Path) -> Path:
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}{TMP_MARK}{uuid.uuid4().hex[:12]}")
        try:
            self._call(
                "read", key, self.client.download_file, Bucket=self.bucket, Key=self._key(key), Filename=str(tmp)
            )
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def list(self, prefix: str = "") -> list[ArtifactInfo]:
        sub = check_key(prefix, self.uri) if prefix else ""
        root = self.prefix + "/" if self.prefix else ""
        full = join(self.prefix, sub)
        paginator = self.client.get_paginator("list_objects_v2")
        out: list[ArtifactInfo] = []
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full + "/" if full else ""):
                for obj in page.get("Contents", []):
                    key = obj["Key"][len(root) :]
                    out.append(
                        ArtifactInfo(
                            key=key, size=int(obj["Size"]), modified=obj["LastModified"].timestamp(), uri=self.url(key)
                        )
                    )
        except (BotoCoreError, ClientError) as exc:
            raise self._fail("list", prefix, exc) from exc
        if sub and not out and self.exists(sub):  # ``prefix`` named a single object
            head = self._call("read", sub, self.client.head_object, Bucket=self.bucket, Key=full)
            out.append(
                ArtifactInfo(
                    key=sub,
                    size=int(head["ContentLength"]),
                    modified=head["LastModified"].timestamp(),
                    uri=self.url(sub),
                )
            )
        return sorted(out, key=lambda i: i.key)

    def delete(self, key: str) -> None:
        self._call("delete", key, self.client.delete_object, Bucket=self.bucket, Key=self._key(key))

    def exists(self, key: str) -> bool:
        try:
            self._call("read", key, self.client.head_object, Bucket=self.bucket, Key=self._key(key))
        except ArtifactNotFoundError:
            return False
        return True

    def delete_prefix(self, prefix: str) -> int:
        keys = [self._key(i.key) for i in self.list(prefix)]
        for start in range(0, len(keys), 1000):  # the DeleteObjects limit
            batch = [{"Key": k} for k in keys[start : start + 1000]]
            self._call(
                "delete",
                prefix,
                self.client.delete_objects,
                Bucket=self.bucket,
                Delete={"Objects": batch, "Quiet": True},
            )
        return len(keys)
