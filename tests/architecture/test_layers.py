"""The layer order of ``seg`` and ``seg_runtime``: every import points down (or sideways within a layer),
and the import graph, imports inside functions included, has no cycle.

Layers, lowest first (a module may import its own layer and those below):

seg_runtime: base (errors, atomic, hashing, identity, paths, formats, geometry, limits, naming, label_codes,
  json_types, options) < io (readers, writers, io, labelmaps, cases, probe, onnx_scan, bundle_files) < pipeline parts
  (preprocess, tiling, outputs, postprocess, preview, preview_layout, statistics, contours, consistency,
  parts) < schema (bundle) < records (dicom_sources, dicom_seg, rtstruct, extra_files, records, manifest,
  output_dir, store) < stages (stages, backends, session) < runners (planning, runners) < predict < dicom_node (the DICOM node: a
  runner with its own front door) < cli (cli_options, cli_dicom, summary, install_check, cli, the package's __init__
  and __main__; serve, the HTTP front door beside the command line).

seg: base (errors, registry, table, config) < layers < models < data < scoring (losses, metrics,
  evaluation) < engine < inference < export (export_onnx) < workflows < cli (commands, cli).
  ``seg`` may import ``seg_runtime`` below its cli layer (its cli layer: any of it); ``seg_runtime``
  never imports ``seg``.
"""

from __future__ import annotations

import pytest

from .import_graph import cycles, import_graph, modules

RUNTIME_LAYERS = [
    ["_version", "errors", "atomic", "hashing", "identity", "formats", "geometry", "limits", "naming", "label_codes",
     "json_types", "paths", "options"],
    ["readers", "writers", "io", "labelmaps", "cases", "probe", "onnx_scan", "bundle_files"],
    ["preprocess", "tiling", "outputs", "postprocess", "preview", "preview_layout", "statistics", "contours",
     "consistency", "nnunet", "parts"],
    ["bundle"],
    ["dicom_sources", "dicom_seg", "rtstruct", "extra_files", "records", "manifest", "output_dir", "store"],
    ["stages", "backends", "session"],
    ["planning", "runners"],
    ["predict"],
    ["dicom_node"],
    ["cli_options", "cli_dicom", "summary", "install_check", "cli", "__main__", "", "serve"],
]
SEG_LAYERS = [
    ["", "errors", "registry", "table", "config", "config_diff"],
    ["layers"],
    ["models"],
    ["data"],
    ["losses", "metrics", "evaluation"],
    ["engine"],
    ["inference"],
    ["export_onnx", "nnunet_import"],
    ["workflows"],
    ["commands", "cli"],
]
RUNTIME_CLI = len(RUNTIME_LAYERS) - 1


def layer(module: str) -> tuple[str, int]:
    """``(package, layer index)`` of a module, by its first component below the package."""
    package, _, rest = module.partition(".")
    first = rest.split(".")[0]
    table = RUNTIME_LAYERS if package == "seg_runtime" else SEG_LAYERS
    for index, names in enumerate(table):
        if first in names:
            return package, index
    raise AssertionError(f"{module}: in no layer; add it to the layer table of {__name__}")


def test_every_module_has_a_layer() -> None:
    for module in modules():
        layer(module)


def test_the_import_graph_has_no_cycle() -> None:
    assert cycles(import_graph()) == []


def _allowed(source: str, target: str) -> bool:
    (src_pkg, src_layer), (dst_pkg, dst_layer) = layer(source), layer(target)
    if src_pkg == dst_pkg:
        return dst_layer <= src_layer
    if src_pkg == "seg_runtime":
        return False  # the runtime never imports seg
    return dst_layer < RUNTIME_CLI or src_layer == len(SEG_LAYERS) - 1


def test_every_import_points_down() -> None:
    wrong = sorted(f"{source} -> {target}" for source, targets in import_graph().items()
                   for target in targets if not _allowed(source, target))
    assert wrong == [], "imports against the layer order:\n" + "\n".join(wrong)


@pytest.mark.parametrize(("source", "target", "allowed"), [
    ("seg_runtime.stages", "seg_runtime.bundle", True),
    ("seg_runtime.bundle", "seg_runtime.stages", False),
    ("seg_runtime.runners.local", "seg_runtime.runners.ray_data", True),  # one layer: cycles are tested apart
    ("seg.workflows.cv", "seg.inference.loading", True),
    ("seg.inference.loading", "seg.workflows.cv", False),
    ("seg.engine.fit", "seg.inference.backend", False),
    ("seg.config", "seg_runtime.consistency", True),
    ("seg.inference.backend", "seg_runtime.cli", False),
    ("seg.commands", "seg_runtime.cli", True),
    ("seg_runtime.io", "seg.config", False),
])
def test_the_rule_itself(source: str, target: str, allowed: bool) -> None:
    """The rule the graph test applies, on edges it must allow and refuse (so it cannot pass vacuously)."""
    assert _allowed(source, target) is allowed


def test_the_runtime_never_names_torch_monai_or_seg() -> None:
    """Statically, imports inside functions included (the torch-free test runs one path; this reads all)."""
    import ast

    wrong = []
    for module, path in modules().items():
        if not module.startswith("seg_runtime"):
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module or ""] if isinstance(node, ast.ImportFrom) and not node.level else [])
            wrong += [f"{module}: {n}" for n in names if n.split(".")[0] in ("torch", "monai", "seg")]
    assert wrong == []
