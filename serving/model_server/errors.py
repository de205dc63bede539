"""Errors with TensorFlow status codes, mapped to gRPC codes and HTTP statuses like TF Serving."""

from __future__ import annotations

import grpc
import tensorflow as tf

# TF Serving's ToHTTPStatusCode (http_server.cc), keyed by the gRPC code of the same name.
HTTP_STATUS = {
    grpc.StatusCode.OK: 200,
    grpc.StatusCode.CANCELLED: 499,
    grpc.StatusCode.UNKNOWN: 500,
    grpc.StatusCode.INVALID_ARGUMENT: 400,
    grpc.StatusCode.DEADLINE_EXCEEDED: 504,
    grpc.StatusCode.NOT_FOUND: 404,
    grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.FAILED_PRECONDITION: 400,
    grpc.StatusCode.ABORTED: 409,
    grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNIMPLEMENTED: 501,
    grpc.StatusCode.INTERNAL: 500,
    grpc.StatusCode.UNAVAILABLE: 503,
    grpc.StatusCode.DATA_LOSS: 500,
    grpc.StatusCode.UNAUTHENTICATED: 401,
}
# gRPC error messages are cut to this many characters, as TF Serving's grpc_status_util does.
GRPC_MESSAGE_LIMIT = 1024


class ServingError(Exception):
    """A request failed with a status code and a message in TF Serving's words."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code
        self.message = message

    @property
    def http_status(self) -> int:
        return HTTP_STATUS.get(self.code, 500)

    @property
    def code_name(self) -> str:
        """The TF error code name used in status JSON, e.g. NOT_FOUND."""
        return self.code.name

    def grpc_details(self) -> str:
        if len(self.message) <= GRPC_MESSAGE_LIMIT:
            return self.message
        return self.message[:GRPC_MESSAGE_LIMIT] + "...TRUNCATED"

    @classmethod
    def from_op_error(cls, error: tf.errors.OpError) -> ServingError:
        """Wraps a TensorFlow runtime error with the code TF reported."""
        code = next(
            (c for c in grpc.StatusCode if c.value[0] == error.error_code), grpc.StatusCode.UNKNOWN
        )
        return cls(code, error.message)


def invalid_argument(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.INVALID_ARGUMENT, message)


def not_found(message: str) -> ServingError:
    return ServingError(grpc.StatusCode.NOT_FOUND, message)
