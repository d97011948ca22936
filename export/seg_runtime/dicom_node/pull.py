"""``seg-run pull``: fetch a study (or one series) from a PACS on demand, then segment it like the node.

C-GET (default) receives the instances on the association this command opens, so the PACS needs no
configuration; C-MOVE asks the PACS to send them to this node's AE title, which the PACS must know
(its address and port), and the node listens for them meanwhile. Either way the instances go
through the node's intake (validated, fsynced, recorded), the series close when the retrieve ends,
and the worker predicts and delivers them.
"""

from __future__ import annotations

import logging
from typing import Any

from .node import TRANSFER_SYNTAXES, DicomNode
from .peers import NodeError, Peer, valid_uid

logger = logging.getLogger(__name__)

GET_MODEL = "1.2.840.10008.5.1.4.1.2.2.3"  # Study Root Query/Retrieve Information Model - GET
MOVE_MODEL = "1.2.840.10008.5.1.4.1.2.2.2"  # Study Root Query/Retrieve Information Model - MOVE
_PENDING = (0xFF00, 0xFF01)


def identifier(study: str, series: str | None = None) -> Any:
    """The retrieve identifier (study level, or series level with ``series``); UIDs checked first."""
    from pydicom.dataset import Dataset

    for what, uid in (("--study", study), ("--series", series)):
        if uid is not None and not valid_uid(uid):
            raise NodeError(f"{what}: not a DICOM UID: {uid[:80]!r}")
    query = Dataset()
    query.QueryRetrieveLevel = "SERIES" if series else "STUDY"
    query.StudyInstanceUID = study
    if series:
        query.SeriesInstanceUID = series
    return query


def pull(node: DicomNode, source: Peer, study: str, series: str | None = None, method: str = "get") -> dict[str, Any]:
    """Retrieve ``study`` (or ``series``) from ``source`` into ``node``; close its series when done.

    Returns:
        The retrieve's outcome as recorded: ``{"status", "completed", "failed", "warning"}``.

    Raises:
        NodeError: Bad UIDs, an unknown method, or a PACS that refuses the association.
    """
    query = identifier(study, series)
    if method not in ("get", "move"):
        raise NodeError(f"--method: expected get or move, got {method!r}")
    assoc = _associate(node, source, method)
    if not assoc.is_established:
        raise NodeError(f"{source}: the PACS refused the association or is unreachable")
    last: Any = None
    try:
        answers = (assoc.send_c_get(query, GET_MODEL) if method == "get"
                   else assoc.send_c_move(query, node.settings.ae_title, MOVE_MODEL))
        for status, _ in answers:
            if status is not None:
                last = status
    finally:
        assoc.release()
    outcome = _outcome(last)
    node.manifest.event("pull", source=str(source), study=study, series=series, method=method, **outcome)
    node.intake.close_all()
    if outcome["status"] not in ("0x0000", "0xB000"):
        logger.error("retrieve from %s answered %s (%s failed)", source, outcome["status"], outcome["failed"])
    return outcome


def _associate(node: DicomNode, source: Peer, method: str) -> Any:
    from pynetdicom import AE, StoragePresentationContexts, build_role, evt

    ae = AE(ae_title=node.settings.ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 60
    ae.add_requested_context(GET_MODEL if method == "get" else MOVE_MODEL)
    roles = []
    if method == "get":  # the instances come back on this association: offer to be their storage SCP
        for context in StoragePresentationContexts[:120]:
            ae.add_requested_context(context.abstract_syntax, list(TRANSFER_SYNTAXES))
            roles.append(build_role(context.abstract_syntax, scp_role=True))
    handlers = [(evt.EVT_C_STORE, node.on_store)] if method == "get" else []
    assoc = ae.associate(source.host, source.port, ae_title=source.ae_title, ext_neg=roles, evt_handlers=handlers)
    return assoc


def _outcome(status: Any) -> dict[str, Any]:
    if status is None:
        return {"status": "no answer", "completed": 0, "failed": 0, "warning": 0}
    return {"status": f"0x{int(status.Status):04X}",
            "completed": int(status.get("NumberOfCompletedSuboperations", 0) or 0),
            "failed": int(status.get("NumberOfFailedSuboperations", 0) or 0),
            "warning": int(status.get("NumberOfWarningSuboperations", 0) or 0)}

