"""One reader per image format; each returns ``(array, Geometry)`` or raises ``CaseError``.

Arrays are returned as stored: spatial axes first, an optional channel axis last.
"""
