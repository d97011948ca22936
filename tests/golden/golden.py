"""Golden files: normalise what a command printed or wrote, compare it with tolerances, or rewrite it.

A golden entry is one JSON file ``tests/golden/data/<entry>.json`` holding plain JSON values that
went through :func:`normalise`. Comparison (:func:`compare`) is structural:

* dict keys must match exactly (as sets); lists must have the same length, item by item;
* strings are compared as *skeletons* (every number replaced by ``#``, runs of blanks collapsed to
  one, runs of dashes to ``--``, so table column widths may follow a path's length) that must be
  equal, plus their numbers;
* numbers: integers exactly (an ``int`` must stay an ``int``); decimals within ``EXACT_REL`` (settings,
  plans, geometry: deterministic, up to the last printed digit), except *scores*, whose values come from
  a training run and move when the weights differ in the last bits (another CPU, another thread
  count): within ``SCORE`` (absolute 0.02 or 2 %), surface scores within ``METRIC_TOLERANCES`` (HD95
  in mm moves in voxel steps, NSD with the boundary). A value is a score when a key on its path names
  one (``SCORE_KEY``: dice, hd95, loss, evaluation.csv, a printed ``stdout (scores)``, ...); in a
  printed table the row's first cell and the column's header name the metric;
* booleans and ``None`` exactly;
* a label-map summary (``{"kind": "labels", ...}``) by shape and dtype exactly and per-label voxel
  counts within ``LABEL_SHARE`` of the case's voxels.

``SEG_UPDATE_GOLDEN=1`` (or ``all``) rewrites every entry instead of comparing; a comma-separated
list of entry names (``SEG_UPDATE_GOLDEN=seg-run-summary,seg-predict-summary``) rewrites only those.
"""

from __future__ import annotations

import difflib
import json
import math
import os
import re
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).resolve().parent / "data"
ENV = "SEG_UPDATE_GOLDEN"
Tolerance = tuple[float, float]  # (absolute, relative to the golden value): the larger one applies
SCORE: Tolerance = (0.02, 0.02)  # Dice, losses, ...: a training run's numbers
# Measured: the same chain with 2 torch threads instead of 1 moves HD95 by up to 3 % (0.15 mm) and
# NSD by 0.02 on 3 test cases, Dice and label maps well within SCORE and LABEL_SHARE.
METRIC_TOLERANCES: tuple[tuple[re.Pattern[str], Tolerance], ...] = (
    (re.compile(r"hd95", re.IGNORECASE), (1.0, 0.1)),
    (re.compile(r"nsd", re.IGNORECASE), (0.06, 0.0)),
)
EXACT_REL = 1e-3  # everything else: equal up to rounding in the last printed digit
SCORE_KEY = re.compile(r"dice|hd95|nsd|loss|metric|pooled|evidence|parity|agreement|evaluation|cv_results|"
                       r"scores|report\.md", re.IGNORECASE)
LABEL_SHARE = 0.005  # per class, at most 0.5 % of a case's voxels may change label
MASK = "<MASKED>"
MAX_PROBLEMS = 40

# Values that depend on the clock, the machine, the versions installed or the bytes of a file whose
# content is checked otherwise (a gzip stream, a checkpoint holding absolute paths), not on behaviour.
VOLATILE_KEYS = frozenset({
    "time", "started", "updated", "seconds", "bytes", "blake2b", "version", "seg_version", "config_hash",
    "fold_config_hashes", "checkpoint_sha256", "mtime_ns", "sample", "input", "sha256",
})
VOLATILE_VALUES_KEYS = frozenset({"versions"})  # keep the keys, mask the values

_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}(?:[.,]\d+)?(?:[+-]\d{2}:\d{2}|Z)?")
_RUN_ID = re.compile(r"<TIME>-\d+-[0-9a-f]+")  # a prediction run: start time, process id, random suffix
_HASH = re.compile(r"(?<![\w.])(?=[0-9]*[a-f])[0-9a-f]{12,}\b")  # hex with a letter, not a decimal part
_SECONDS = re.compile(r"(?<![\w.])\d+(?:\.\d+)?s\b")
# A run summary's wall time and throughput ("time      1.2 s (2.53 cases/s)", a folder's "0.4 s in 2 runs
# (7.1 cases/s)"): a clock, not behaviour; the number of runs stays.
_RUN_TIME = re.compile(r"(?<![\w.])\d+(?:\.\d+)? s( in \d+ runs?)? \((?:[\d.e+-]+ cases/s|nothing predicted)\)")
# A number standing on its own: not part of a name (synth_008, hd95, fold_0, p0.5), sign left out
# (a minus stays in the skeleton, so a flipped sign is a skeleton change).
_NUMBER = re.compile(r"(?<![A-Za-z_\d])(?<!\d\.)\d+(?:\.\d+)?(?:[eE][-+]?\d+)?(?![\w])")
_BLANKS = re.compile(r"[ \t]+")
_DASHES = re.compile(r"-{2,}")
_RULE = re.compile(r"[- ]*--[- ]*")  # the dashes under a table's header


class Normaliser:
    """Replace the run's temporary folder and the checkout by placeholders, mask clocks and hashes.

    Args:
        replacements: (text, placeholder) pairs, longest text first.
    """

    def __init__(self, replacements: dict[str, str]) -> None:
        self.replacements = sorted(replacements.items(), key=lambda kv: -len(kv[0]))
        self.run_ids: dict[str, str] = {}  # run id -> <RUN1>, <RUN2>, ... in order of appearance

    def text(self, text: str) -> str:
        """The normalised form of a printed or stored string."""
        for old, new in self.replacements:
            text = text.replace(old, new)
        text = _TIME.sub("<TIME>", text)
        text = _RUN_ID.sub(self._run, text)
        text = _HASH.sub("<HASH>", text)
        return _SECONDS.sub("<SEC>", _RUN_TIME.sub(r"<SEC>\1 (<RATE>)", text))

    def _run(self, match: re.Match[str]) -> str:
        return self.run_ids.setdefault(match.group(0), f"<RUN{len(self.run_ids) + 1}>")

    def lines(self, text: str) -> list[str]:
        """Normalised lines, trailing blanks and trailing empty lines dropped."""
        lines = [self.text(line).rstrip() for line in text.splitlines()]
        while lines and not lines[-1]:
            lines.pop()
        return lines

    def value(self, value: Any, key: str | None = None) -> Any:
        """A JSON-able value normalised: volatile keys masked, strings normalised, NaN as a string."""
        if key in VOLATILE_KEYS and value is not None:  # null stays null: "no duration" is behaviour
            return MASK
        if isinstance(value, dict):
            if key in VOLATILE_VALUES_KEYS:
                return {str(k): MASK for k in value}
            return {str(k): self.value(v, str(k)) for k, v in value.items()}
        if isinstance(value, (list, tuple)):
            return [self.value(v) for v in value]
        if isinstance(value, str):
            return self.text(value)
        if isinstance(value, float) and not math.isfinite(value):
            return str(value)  # "nan", "inf": plain JSON, and NaN == NaN as strings
        if hasattr(value, "item") and not isinstance(value, (bool, int, float)):  # numpy scalars
            return self.value(value.item(), key)
        return value


def skeleton(text: str) -> str:
    """``text`` with every number replaced by ``#``, blanks and dash runs collapsed."""
    text = _NUMBER.sub("#", text)
    return _DASHES.sub("--", _BLANKS.sub(" ", text)).strip()


def numbers(text: str) -> list[int | float]:
    """The numbers of ``text``, in order (ints where written without a point or exponent)."""
    out: list[int | float] = []
    for token in _NUMBER.findall(text):
        out.append(float(token) if any(c in token for c in ".eE") else int(token))
    return out


def tolerance(name: str, current: Tolerance | None) -> Tolerance | None:
    """The tolerance inside ``name`` (a key, or a table row and column) given the one around it."""
    for pattern, metric in METRIC_TOLERANCES:
        if pattern.search(name):
            return metric
    if current is None and SCORE_KEY.search(name):
        return SCORE
    return current


def close(golden: int | float, actual: int | float, tol: Tolerance | None = None) -> bool:
    """Ints exactly; floats within ``EXACT_REL``, or within ``tol`` for a score.

    An int and a float never match, except as scores (a printed ``{:.2g}`` of 0.0 is ``0``).
    """
    if isinstance(golden, bool) or isinstance(actual, bool):
        return golden is actual
    if isinstance(golden, int) and isinstance(actual, int):
        return golden == actual
    if tol is not None:
        return abs(golden - actual) <= max(tol[0], tol[1] * abs(golden))
    if isinstance(golden, int) != isinstance(actual, int):
        return False
    return abs(golden - actual) <= max(1e-12, EXACT_REL * abs(golden))


def number_contexts(lines: list[str]) -> list[list[str]]:
    """For each number of each line, the text naming what it measures: the line itself and, inside a
    table (a header over a rule of dashes), the header of the number's column."""
    out: list[list[str]] = []
    header, columns = "", []
    for i, line in enumerate(lines):
        if i and _RULE.fullmatch(line):
            header, columns = lines[i - 1], [m.start() for m in re.finditer(r"-+", line)]
        elif not line.strip():
            header, columns = "", []
        contexts = []
        for match in _NUMBER.finditer(line):
            starts = [c for c in columns if c <= match.start()]
            if starts:
                nxt = [c for c in columns if c > starts[-1]]
                cell = header[starts[-1]: nxt[0] if nxt else None]
                contexts.append(f"{cell} | {line}")
            else:
                contexts.append(line)
        out.append(contexts)
    return out


def compare_text(golden: str, actual: str, where: str, tol: Tolerance | None = None,
                 contexts: list[str] | None = None) -> list[str]:
    """Problems between two normalised strings (skeleton exactly, numbers with tolerance).

    Args:
        golden: the golden string.
        actual: the string now.
        where: the path, for messages.
        tol: the tolerance for decimals (None: exact up to ``EXACT_REL``).
        contexts: per number, the text naming it (refines a score's tolerance: HD95, NSD).
    """
    if skeleton(golden) != skeleton(actual):
        return [f"{where}: text differs\n    golden: {golden!r}\n    actual: {actual!r}"]
    pairs = zip(numbers(golden), numbers(actual), contexts or [golden] * len(numbers(golden)))
    bad = [(g, a) for g, a, ctx in pairs if not close(g, a, tol and tolerance(ctx, tol))]
    if bad:
        return [f"{where}: numbers differ {bad} (golden, actual)\n    golden: {golden!r}\n"
                f"    actual: {actual!r}"]
    return []


def compare_lines(golden: list[str], actual: list[str], where: str,
                  tol: Tolerance | None = None) -> list[str]:
    """Problems between two lists of lines; a skeleton mismatch comes with a unified diff."""
    if [skeleton(g) for g in golden] != [skeleton(a) for a in actual]:
        diff = "\n".join(difflib.unified_diff(golden, actual, "golden", "actual", lineterm="", n=2))
        return [f"{where}: printed or written text differs (beyond numbers):\n{diff}"]
    problems = []
    for i, (g, a, ctx) in enumerate(zip(golden, actual, number_contexts(golden))):
        problems += compare_text(g, a, f"{where}[line {i + 1}]", tol, ctx)
    return problems


def compare_labels(golden: dict[str, Any], actual: dict[str, Any], where: str) -> list[str]:
    """Shape and dtype exactly; per-label voxel counts within ``LABEL_SHARE`` of the voxels."""
    problems = [f"{where}.{k}: {golden.get(k)!r} != {actual.get(k)!r} (golden, actual)"
                for k in ("kind", "shape", "dtype", "voxels") if golden.get(k) != actual.get(k)]
    allowed = LABEL_SHARE * max(int(golden.get("voxels") or 0), 1)
    for label in sorted(set(golden["counts"]) | set(actual.get("counts", {})), key=int):
        g, a = golden["counts"].get(label, 0), actual.get("counts", {}).get(label, 0)
        if abs(g - a) > allowed:
            problems.append(f"{where}: label {label} has {a} voxels, golden {g} (allowed +-{allowed:.0f})")
    return problems


def compare(golden: Any, actual: Any, where: str = "", tol: Tolerance | None = None) -> list[str]:
    """Every difference between a golden value and a normalised actual one (empty: they match).

    Args:
        golden: the value from the golden file.
        actual: the value now, normalised and through :func:`to_plain`.
        where: the path to the value, for the messages.
        tol: the value is (inside) a score: its decimals' tolerance (None: exact up to ``EXACT_REL``).
    """
    if isinstance(golden, dict) and golden.get("kind") == "labels" and isinstance(actual, dict):
        return compare_labels(golden, actual, where)
    if isinstance(golden, dict) and isinstance(actual, dict):
        problems = []
        if set(golden) != set(actual):
            problems.append(f"{where}: keys differ: missing {sorted(set(golden) - set(actual))}, "
                            f"unexpected {sorted(set(actual) - set(golden))}")
        for key in golden:
            if key in actual:
                problems += compare(golden[key], actual[key], f"{where}.{key}" if where else key,
                                    tolerance(key, tol))
        return problems
    if isinstance(golden, list) and isinstance(actual, list):
        if golden and all(isinstance(v, str) for v in golden) and all(isinstance(v, str) for v in actual):
            return compare_lines(golden, actual, where, tol)
        if len(golden) != len(actual):
            return [f"{where}: {len(actual)} items, golden {len(golden)}\n    golden: {golden!r}\n"
                    f"    actual: {actual!r}"]
        problems = []
        for i, (g, a) in enumerate(zip(golden, actual)):
            problems += compare(g, a, f"{where}[{i}]", tol)
        return problems
    if isinstance(golden, str) and isinstance(actual, str):
        return compare_text(golden, actual, where, tol)
    if isinstance(golden, (int, float)) and isinstance(actual, (int, float)):
        return [] if close(golden, actual, tol) else [f"{where}: {actual!r}, golden {golden!r}"]
    if golden is None or isinstance(golden, bool) or type(golden) is not type(actual):
        same = golden == actual and type(golden) is type(actual)
        return [] if same else [f"{where}: {actual!r}, golden {golden!r}"]
    return [f"{where}: cannot compare {type(golden).__name__} with {type(actual).__name__}"]


def to_plain(value: Any) -> Any:
    """A JSON round trip: tuples become lists, exactly as the golden file will hold them."""
    return json.loads(json.dumps(value))


def dumps(value: Any, indent: int = 0, width: int = 110) -> str:
    """JSON with one item per line, except containers short enough to sit on one line (smaller diffs)."""
    flat = json.dumps(value, ensure_ascii=False)
    if not isinstance(value, (dict, list)) or not value or len(flat) + indent <= width:
        return flat
    pad = " " * (indent + 1)
    if isinstance(value, list):
        items = [pad + dumps(v, indent + 1, width) for v in value]
        return "[\n" + ",\n".join(items) + "\n" + " " * indent + "]"
    items = [f"{pad}{json.dumps(k, ensure_ascii=False)}: {dumps(v, indent + 1, width)}"
             for k, v in value.items()]
    return "{\n" + ",\n".join(items) + "\n" + " " * indent + "}"


def update_requested(entry: str) -> bool:
    """Whether ``SEG_UPDATE_GOLDEN`` asks to rewrite ``entry``."""
    wanted = {w.strip() for w in os.environ.get(ENV, "").split(",") if w.strip()}
    return bool(wanted & {"1", "all", "true", "yes", entry})


def requested_entries() -> set[str]:
    """The entry names ``SEG_UPDATE_GOLDEN`` lists (without the rewrite-all words)."""
    wanted = {w.strip() for w in os.environ.get(ENV, "").split(",") if w.strip()}
    return wanted - {"1", "all", "true", "yes", "0", ""}


def check_golden(entry: str, actual: Any) -> None:
    """Compare ``actual`` (already normalised) with the entry's golden file, or rewrite the file.

    Raises:
        pytest.fail: on any difference, listing them (first ``MAX_PROBLEMS``) and how to regenerate.
    """
    actual = to_plain(actual)
    path = DATA / f"{entry}.json"
    if update_requested(entry):
        DATA.mkdir(parents=True, exist_ok=True)
        path.write_text(dumps(actual) + "\n")
        return
    if not path.is_file():
        pytest.fail(f"golden file {path} is missing: generate it with {ENV}={entry} pytest tests/golden")
    problems = compare(json.loads(path.read_text()), actual, entry)
    if problems:
        shown = "\n".join(problems[:MAX_PROBLEMS])
        more = f"\n... and {len(problems) - MAX_PROBLEMS} more" if len(problems) > MAX_PROBLEMS else ""
        pytest.fail(f"{entry}: {len(problems)} difference(s) from {path}:\n{shown}{more}\n"
                    f"(if the change is intended: {ENV}={entry} pytest tests/golden, and review the diff)",
                    pytrace=False)
