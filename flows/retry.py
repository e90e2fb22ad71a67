"""Which failures a stage retries: transient ones only, with backoff (10, 20, 40 s).

A dropped connection, a timeout, an HTTP 429/5xx, a Ray worker that died: worth trying again unchanged.
A bad recipe, a bug or an out-of-memory error fails at once instead of three more times.
"""

from __future__ import annotations

import errno

RETRY_DELAYS = [10, 20, 40]  # seconds, one per retry

# errno values of failures that go away on their own (network, NFS, resource briefly busy)
_TRANSIENT_ERRNO = {
    errno.ECONNRESET, errno.ECONNREFUSED, errno.ECONNABORTED, errno.ETIMEDOUT, errno.EHOSTUNREACH,
    errno.ENETUNREACH, errno.ENETDOWN, errno.EPIPE, errno.EAGAIN, errno.EBUSY, errno.ESTALE,
}
# by name, so that neither Ray nor openai needs to be importable here
_TRANSIENT_NAMES = {
    "WorkerCrashedError", "NodeDiedError", "RaySystemError", "ObjectLostError", "OwnerDiedError",  # ray
    "ActorDiedError", "RayActorError", "LocalRayletDiedError",
    "APIConnectionError", "APITimeoutError", "RateLimitError", "InternalServerError",  # openai
    "TransportError", "ConnectError", "ReadTimeout", "WriteTimeout", "PoolTimeout", "RemoteProtocolError",  # httpx
}
_TRANSIENT_STATUS = {408, 425, 429, 500, 502, 503, 504}


def is_transient(exc: BaseException | None) -> bool:
    """True when `exc`, or an exception it was raised from, is a failure worth retrying unchanged."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, (ConnectionError, TimeoutError)):
            return True
        if isinstance(exc, OSError) and exc.errno in _TRANSIENT_ERRNO:
            return True
        if any(t.__name__ in _TRANSIENT_NAMES for t in type(exc).__mro__):
            return True
        status = getattr(getattr(exc, "response", None), "status_code", None) or getattr(exc, "status_code", None)
        if isinstance(status, int) and status in _TRANSIENT_STATUS:
            return True
        exc = exc.__cause__  # `raise X from transient`; an error raised while handling one is not transient
    return False


def retry_on_transient(task_, task_run, state) -> bool:
    """Prefect's `retry_condition_fn`: retry only when the failure was transient."""
    exc = state.result(raise_on_failure=False)
    return isinstance(exc, BaseException) and is_transient(exc)


