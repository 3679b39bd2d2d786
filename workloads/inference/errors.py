"""Errors of the model server, each one an HTTP answer in OpenAI's error shape.

    InferenceError                 root; never reaches a client as is
    ├── SettingsError              bad environment/flags at start (the process exits 2)
    ├── BackendLoadError           the model cannot be loaded (the process exits 1)
    └── ApiError                   an answer to a client: status + OpenAI's error body
        ├── InvalidRequestError    400: the request is wrong; ``param`` names the field
        ├── ModelNotFoundError     404: ``model`` names a model this server does not serve
        ├── UnsupportedError       404: the route is not served by this model (e.g. completions)
        ├── QueueFullError         429: back-pressure; retry later or on another replica
        └── NotReadyError          503: the model is still loading or the server is draining

OpenAI's body is ``{"error": {"message", "type", "param", "code"}}``; clients (the official
``openai`` package included) read ``message`` and raise by status code, so every message says
what was wrong and what to send instead.
"""

from __future__ import annotations

from typing import Any


class InferenceError(Exception):
    """Root of every error the model server raises on purpose."""


class SettingsError(InferenceError):
    """An environment variable or flag has a value the server cannot use."""


class BackendLoadError(InferenceError):
    """The model named by RUNNER_MODEL could not be loaded."""


class ApiError(InferenceError):
    """An error answered to the client as ``status`` + ``{"error": {...}}``."""

    status = 500
    type = "server_error"
    code: str | None = None

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    def body(self) -> dict[str, Any]:
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class InvalidRequestError(ApiError):
    status = 400
    type = "invalid_request_error"
    code = "invalid_value"


class ModelNotFoundError(ApiError):
    status = 404
    type = "invalid_request_error"
    code = "model_not_found"


class UnsupportedError(ApiError):
    status = 404
    type = "invalid_request_error"
    code = "unsupported_endpoint"


class QueueFullError(ApiError):
    status = 429
    type = "rate_limit_error"  # the type OpenAI uses with 429, so clients' retry logic applies
    code = "queue_full"


class NotReadyError(ApiError):
    status = 503
    type = "server_error"
    code = "not_ready"
