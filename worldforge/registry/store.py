"""The registry's MLflow client, the promotion lock of the embedded store, and its errors."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import Iterator

import mlflow

from worldforge.core import tracking
from worldforge.core.project import Project
from worldforge.errors import WorldforgeError

CHAMPION, CANDIDATE = "champion", "candidate"


class RegistryError(WorldforgeError, ValueError):
    """A registry request that cannot be served: unknown model or version, no champion, ..."""


def client() -> mlflow.MlflowClient:
    uri = tracking.configure()
    return mlflow.MlflowClient(tracking_uri=uri, registry_uri=uri)


def event_id() -> str:
    """Sortable by time (nanoseconds), unique across processes and machines."""
    return f"{time.time_ns():020d}-{uuid.uuid4().hex[:8]}"


def now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())


def is_embedded() -> bool:
    return tracking.tracking_uri().startswith("sqlite:")


@contextlib.contextmanager
def registry_lock(timeout_s: float) -> Iterator[None]:
    """The project's promotion lock for the embedded store; a no-op against a remote server."""
    if not is_embedded():
        yield
        return
    from filelock import FileLock, Timeout

    path = Project.current().root / ".worldforge-registry.lock"
    try:
        with FileLock(str(path), timeout=timeout_s):
            yield
    except Timeout:
        raise RegistryError(
            f"{path}: another promotion or rollback held the registry lock for over {timeout_s:.0f} s "
            "(registry.lock_timeout_s); retry, or remove the file if no worldforge process is running"
        ) from None
