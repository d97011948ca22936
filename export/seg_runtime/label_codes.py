"""What each label *is*, in codes a PACS understands: ``label_codes`` in ``model.json``.

Optional, per label name (from the seg config's ``data.label_codes``)::

    "label_codes": {
      "liver": {
        "category": {"code": "123037004", "scheme": "SCT", "meaning": "Anatomical Structure"},
        "type": {"code": "10200004", "scheme": "SCT", "meaning": "Liver"},
        "rgb": [221, 130, 101]
      }
    }

``category`` and ``type`` are the DICOM-SEG Segmented Property Category / Type codes (SNOMED CT
by default: ``scheme`` may be omitted); ``rgb`` (0..255) is the recommended display colour.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

CODE_KEYS = ("category", "type")
DEFAULT_SCHEME = "SCT"


def _check_code(where: str, code: Any) -> None:
    if not isinstance(code, Mapping):
        raise ValueError(f"{where}: expected an object with code, meaning (and scheme), got {code!r}")
    for key in ("code", "meaning"):
        if not isinstance(code.get(key), str) or not code[key]:
            raise ValueError(f"{where}.{key}: required non-empty string")
    if not isinstance(code.get("scheme", DEFAULT_SCHEME), str):
        raise ValueError(f"{where}.scheme: expected a string such as 'SCT'")
    unknown = sorted(set(code) - {"code", "meaning", "scheme"})
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}")


def check_label_codes(codes: Mapping[str, Any], labels: Mapping[str, int]) -> None:
    """Validate ``label_codes`` against the label map.

    Raises:
        ValueError: A name that is not a foreground label, a missing or malformed code, or an
            RGB that is not three integers in 0..255; the message names the entry.
    """
    for name, entry in codes.items():
        where = f"label_codes.{name}"
        if labels.get(name, 0) == 0:
            raise ValueError(f"{where}: not a foreground label (labels: {', '.join(labels)})")
        if not isinstance(entry, Mapping):
            raise ValueError(f"{where}: expected an object with category, type and rgb")
        unknown = sorted(set(entry) - {*CODE_KEYS, "rgb"})
        if unknown:
            raise ValueError(f"{where}: unknown key(s) {unknown}")
        for key in CODE_KEYS:
            _check_code(f"{where}.{key}", entry.get(key))
        rgb = entry.get("rgb")
        valid = isinstance(rgb, list) and len(rgb) == 3
        if rgb is not None and not (valid and all(isinstance(v, int) and 0 <= v <= 255 for v in rgb)):
            raise ValueError(f"{where}.rgb: expected three integers 0..255, got {rgb!r}")


def coded_concept(code: Mapping[str, str]) -> Any:
    """A highdicom ``CodedConcept`` for one checked code entry (needs highdicom)."""
    import highdicom as hd

    return hd.sr.CodedConcept(
        value=code["code"], scheme_designator=code.get("scheme", DEFAULT_SCHEME), meaning=code["meaning"]
    )
