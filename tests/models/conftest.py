"""The model contract table: one row per model and dimensionality, printed after the session."""

from __future__ import annotations

from collections import defaultdict
from typing import Any

CHECKS = ("shape", "odd", "backward", "state_dict", "onnx")


def _skip_reason(report: Any) -> str:
    longrepr = report.longrepr
    reason = longrepr[2] if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _collect(terminalreporter: Any) -> dict[tuple[str, int], dict[str, Any]]:
    rows: dict[tuple[str, int], dict[str, Any]] = defaultdict(dict)
    for outcome in ("passed", "failed", "skipped", "error"):
        for report in terminalreporter.stats.get(outcome, []):
            props: dict[str, Any] = {}
            for key, value in getattr(report, "user_properties", []):
                if key == "contract":
                    props.update(value)
            if not props or (report.when != "call" and report.passed):
                continue
            row = rows[(props["model"], props["dims"])]
            row[props["check"]] = "skip" if report.skipped else report.outcome
            if report.skipped:
                row["reason"] = _skip_reason(report)
            if "onnx_max_abs_diff" in props:
                row["diff"] = props["onnx_max_abs_diff"]
    return rows


def pytest_terminal_summary(terminalreporter: Any) -> None:
    """Print model x dims: pass / skip (reason) / FAIL (checks), and the ONNX max abs diff."""
    rows = _collect(terminalreporter)
    if not rows:
        return
    terminalreporter.section("model contract")
    terminalreporter.write_line(f"{'model':<22} {'dims':<5} {'result':<8} {'onnx max|diff|':<15} note")
    for (model, dims), row in sorted(rows.items()):
        outcomes = {row[c] for c in CHECKS if c in row}
        failed = [c for c in CHECKS if row.get(c) in ("failed", "error")]
        if failed:
            result, note = "FAIL", ", ".join(failed)
        elif outcomes == {"skip"}:
            result, note = "skip", row.get("reason", "")
        else:
            missing = [c for c in CHECKS if c not in row]
            result, note = "pass", (f"not run: {', '.join(missing)}" if missing else "")
        diff = f"{row['diff']:.2e}" if "diff" in row else "-"
        terminalreporter.write_line(f"{model:<22} {dims}D{'':<3} {result:<8} {diff:<15} {note}")
