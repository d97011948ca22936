"""The on-disk store of accepted work, one for both front doors: the service's jobs and the DICOM
node's pending series (see :mod:`seg_runtime.store.store`)."""

from __future__ import annotations

from .entry import (
    ACCEPTED,
    DONE,
    FAILED,
    FINISHED,
    RECEIVING,
    RUNNING,
    STATES,
    Entry,
    StoreError,
    StoreFull,
    check_id,
    check_name,
)
from .store import Staging, Store

__all__ = ["ACCEPTED", "DONE", "FAILED", "FINISHED", "RECEIVING", "RUNNING", "STATES", "Entry", "Staging",
           "Store", "StoreError", "StoreFull", "check_id", "check_name"]
