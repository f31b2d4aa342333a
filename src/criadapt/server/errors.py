"""The only place where criadapt errors become gRPC status codes."""

from __future__ import annotations

import grpc

from criadapt.errors import ERRORS, CriError

#: status name → grpc.StatusCode, for every criadapt error class
STATUS: dict[str, grpc.StatusCode] = {name: grpc.StatusCode[name] for name in ERRORS}
STATUS[CriError.code] = grpc.StatusCode.UNKNOWN


def status_of(error: CriError) -> grpc.StatusCode:
    """The status code a criadapt error is answered with."""
    return STATUS.get(error.code, grpc.StatusCode.UNKNOWN)


def error_of(code: grpc.StatusCode, details: str) -> CriError:
    """The criadapt error for a status received from a CRI server (used by the client)."""
    cls = ERRORS.get(code.name)
    if cls is None:
        error = CriError(details)
        error.code = code.name
        return error
    return cls(details)
