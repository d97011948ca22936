"""The DICOM node: ``seg-run listen`` (a storage SCP that segments every complete series and sends the
results back) and ``seg-run pull`` (C-GET / C-MOVE on demand). Needs pynetdicom and highdicom
(``pip install "seg-runtime[dicom]"``)."""

from __future__ import annotations
