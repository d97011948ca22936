"""The DICOM node: a storage SCP (pynetdicom) in front of the store, a worker behind it.

Threads: pynetdicom answers each association in its own thread (C-ECHO; C-STORE through the
:class:`~seg_runtime.dicom_node.intake.Intake`), a clock closes quiet series and expires old entries,
and one worker predicts and delivers complete series one at a time. The associations are checked
against the allowlist before anything is negotiated (refused with A-ASSOCIATE-RJ, recorded), and
presentation contexts only for transfer syntaxes the reader decodes (uncompressed, deflated, RLE);
a proposal in any other transfer syntax is refused at negotiation and recorded.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from ..manifest import RunManifest
from ..store import DONE, Store
from .intake import CANNOT_UNDERSTAND, Intake, Source
from .peers import Allowlist
from .worker import SeriesWorker

logger = logging.getLogger(__name__)

TRANSFER_SYNTAXES = ("1.2.840.10008.1.2", "1.2.840.10008.1.2.1", "1.2.840.10008.1.2.1.99", "1.2.840.10008.1.2.2",
                     "1.2.840.10008.1.2.5")  # implicit/explicit LE, deflated, explicit BE, RLE lossless
VERIFICATION = "1.2.840.10008.1.1"
EXPIRE_EVERY_S = 60.0


@dataclass
class NodeSettings:
    """How the node listens (see ``seg-run listen --help``)."""

    ae_title: str = "SEG"
    host: str = "127.0.0.1"
    port: int = 11112
    series_timeout_s: float = 30.0
    allow: Allowlist = field(default_factory=Allowlist)


class DicomNode:
    """A storage SCP that predicts every complete series and sends the results on.

    Args:
        store: The store of accepted work (pending series, results).
        manifest: The run record (``received``, ``series``, ``case``, ``sent`` lines).
        worker: Predicts and delivers a complete series.
        settings: AE title, address, series timeout, allowlist.
    """

    def __init__(self, store: Store, manifest: RunManifest, worker: SeriesWorker, settings: NodeSettings) -> None:
        self.store, self.manifest, self.worker, self.settings = store, manifest, worker, settings
        self.intake = Intake(store, manifest, settings.series_timeout_s, self._enqueue)
        self._queue: queue.Queue[tuple[str, str]] = queue.Queue()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._server: Any = None

    # -- lifecycle --------------------------------------------------------------------------------
    def start(self, listen: bool = True) -> DicomNode:
        """Resume the store's work, then listen (unless not ``listen``: ``pull`` by C-GET); returns at once."""
        for entry in self.store.recover():
            self._enqueue(entry.id)
        for entry in self.store.entries(kind="series", states=(DONE,)):
            if entry.meta.get("delivery") == "pending":
                self._queue.put(("deliver", entry.id))
        self.intake.resume()
        if listen:
            self._server = self._ae().start_server((self.settings.host, self.settings.port), block=False,
                                                   evt_handlers=self._handlers())
        for target, name in ((self._clock, "seg-node-clock"), (self._work, "seg-node-worker")):
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        if listen:
            logger.info("listening as %s on %s:%d", self.settings.ae_title, self.settings.host, self.port)
        return self

    @property
    def port(self) -> int:
        """The port the node listens on (the one the OS chose for port 0)."""
        return int(self._server.server_address[1]) if self._server else self.settings.port

    def stop(self) -> None:
        """Stop listening, let the worker finish the series it is on (the others stay in the store for the
        next start), close the record."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=600)
        self.manifest.close()
        self.manifest.write()

    def wait_idle(self, timeout_s: float = 60.0) -> bool:
        """Wait until nothing is pending, queued or running (tests, ``pull``); False on timeout."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            # unfinished_tasks counts queued and running work (task_done after each): no gap between them.
            if not self.intake.pending and not self._queue.unfinished_tasks:
                return True
            time.sleep(0.05)
        return False

    # -- threads ----------------------------------------------------------------------------------
    def _enqueue(self, entry_id: str) -> None:
        self._queue.put(("predict", entry_id))

    def _clock(self) -> None:
        step, expired = min(0.25, max(0.02, self.settings.series_timeout_s / 4)), 0.0
        while not self._stop.wait(step):
            try:
                self.intake.close_due()
                if time.monotonic() - expired > EXPIRE_EVERY_S:
                    expired = time.monotonic()
                    for entry_id in self.store.expire():
                        self.manifest.event("expired", entry=entry_id)
            except Exception:  # the clock must keep ticking (a full disk, an entry removed by hand)
                logger.exception("node clock")

    def _work(self) -> None:
        # On stop the series in progress is finished; queued ones stay accepted in the store (resumed).
        while not self._stop.is_set():
            try:
                action, entry_id = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            try:
                if action == "deliver":
                    self.worker.deliver(entry_id)
                else:
                    self.worker.process(entry_id)
            except Exception:  # one bad series never stops the node
                logger.exception("series entry %s: unexpected error", entry_id)
            finally:
                self._queue.task_done()

    # -- DICOM ------------------------------------------------------------------------------------
    def _ae(self) -> Any:
        from pynetdicom import AE, AllStoragePresentationContexts

        ae = AE(ae_title=self.settings.ae_title)
        ae.add_supported_context(VERIFICATION)
        for context in AllStoragePresentationContexts:
            ae.add_supported_context(context.abstract_syntax, list(TRANSFER_SYNTAXES))
        ae.maximum_pdu_size = 0
        return ae

    def _handlers(self) -> list[tuple[Any, Any]]:
        from pynetdicom import evt

        return [(evt.EVT_REQUESTED, self._on_requested), (evt.EVT_ACCEPTED, self._on_accepted),
                (evt.EVT_C_ECHO, lambda event: 0x0000), (evt.EVT_C_STORE, self.on_store),
                (evt.EVT_RELEASED, lambda event: self.intake.association_ended(id(event.assoc), aborted=False)),
                (evt.EVT_ABORTED, lambda event: self.intake.association_ended(id(event.assoc), aborted=True))]

    def _on_requested(self, event: Any) -> None:
        requestor = event.assoc.requestor
        calling = str(requestor.primitive.calling_ae_title).strip()
        refusal = self.settings.allow.refusal(calling, requestor.address)
        if refusal:
            logger.warning("association from %s at %s refused: %s", calling, requestor.address, refusal)
            self.manifest.event("association", calling_ae=calling, address=requestor.address, status="refused",
                                reason=refusal)
            event.assoc.acse.send_reject(0x01, 0x01, 0x03)

    def _on_accepted(self, event: Any) -> None:
        for context in event.assoc.rejected_contexts:
            reason = f"transfer syntax(es) {', '.join(map(str, context.transfer_syntax))} not supported"
            self.manifest.event("association", calling_ae=str(event.assoc.requestor.ae_title).strip(),
                                address=event.assoc.requestor.address, status="context refused",
                                sop_class=str(context.abstract_syntax), reason=reason)
            logger.warning("association from %s: %s refused: %s", event.assoc.requestor.ae_title,
                           context.abstract_syntax, reason)

    def on_store(self, event: Any) -> int:
        """Answer a C-STORE (of an association to this node, or of a C-GET this node made)."""
        peer = event.assoc.acceptor if event.assoc.is_requestor else event.assoc.requestor  # C-GET: we asked
        source = Source(str(peer.ae_title).strip(), peer.address, id(event.assoc))
        try:
            dataset = event.dataset
            dataset.file_meta = event.file_meta
            encoded = event.encoded_dataset()
        except Exception as exc:  # an undecodable data set is this instance's failure, not the node's
            self.manifest.event("received", calling_ae=source.calling_ae, address=source.address, status="refused",
                                dimse=f"0x{CANNOT_UNDERSTAND:04X}", reason=f"cannot decode: {exc}")
            return CANNOT_UNDERSTAND
        return self.intake.receive(dataset, encoded, source)
