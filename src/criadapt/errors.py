"""criadapt's exception hierarchy: one class per gRPC status, and no grpc import.

Backends raise these; the server maps them to status codes in exactly one place
(:mod:`criadapt.server.errors`). Anything else raised by a backend is answered ``INTERNAL``
with the traceback logged, never sent.
"""

from __future__ import annotations


class CriError(Exception):
    """Base of every error criadapt reports to a CRI client.

    ``code`` is the name of the gRPC status (``grpc.StatusCode[code]``).
    """

    code = "UNKNOWN"

    def __init__(self, message: str = "") -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message or self.code.lower().replace("_", " ")


class InvalidArgument(CriError):
    """The request is malformed: a required field is missing or a value is out of range."""

    code = "INVALID_ARGUMENT"


class NotFound(CriError):
    """The sandbox, container or image named does not exist."""

    code = "NOT_FOUND"


class AlreadyExists(CriError):
    """An object with that name or id exists already."""

    code = "ALREADY_EXISTS"


class FailedPrecondition(CriError):
    """The object is not in a state that allows the call (e.g. exec into a stopped container)."""

    code = "FAILED_PRECONDITION"


class PermissionDenied(CriError):
    """The caller or the registry refused the operation."""

    code = "PERMISSION_DENIED"


class Unauthenticated(CriError):
    """Credentials were missing or refused (e.g. by a registry)."""

    code = "UNAUTHENTICATED"


class ResourceExhausted(CriError):
    """A limit was reached (disk, outstanding streaming tokens, ...)."""

    code = "RESOURCE_EXHAUSTED"


class DeadlineExceeded(CriError):
    """The operation did not finish in time (e.g. an ExecSync timeout)."""

    code = "DEADLINE_EXCEEDED"


class Unavailable(CriError):
    """Something the runtime needs is not reachable now; the call may succeed if retried."""

    code = "UNAVAILABLE"


class Unimplemented(CriError):
    """The loaded backend does not support this RPC or option."""

    code = "UNIMPLEMENTED"


class Internal(CriError):
    """An invariant of the runtime broke; the message is safe to show to the client."""

    code = "INTERNAL"


class DataLoss(CriError):
    """Content did not verify (a blob whose digest or size differs from what was announced)."""

    code = "DATA_LOSS"


class Aborted(CriError):
    """The operation was aborted, typically by a concurrent conflicting operation."""

    code = "ABORTED"


#: every concrete error class, by status name (a test checks each maps to a grpc.StatusCode)
ERRORS: dict[str, type[CriError]] = {
    cls.code: cls
    for cls in (
        InvalidArgument,
        NotFound,
        AlreadyExists,
        FailedPrecondition,
        PermissionDenied,
        Unauthenticated,
        ResourceExhausted,
        DeadlineExceeded,
        Unavailable,
        Unimplemented,
        Internal,
        DataLoss,
        Aborted,
    )
}
