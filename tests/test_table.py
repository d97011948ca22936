"""The shared table formatter keeps terminal output within 100 columns (issue 29)."""

from __future__ import annotations

from seg.table import MAX_WIDTH, format_table


def test_a_wide_text_column_wraps_within_the_width_and_keeps_every_word() -> None:
    why = "off-background mean 111 std 33.9, p0.5-p99.5 87.18..281.3, zeros 58%, integer False " * 3
    table = format_table(["setting", "value", "based on"], [["normalization MRI", "zscore nonzero", why],
                                                             ["batch_size", 4, "short"]])
    lines = table.splitlines()
    assert MAX_WIDTH == 100 and max(len(line) for line in lines) <= MAX_WIDTH
    assert len(lines) > 4  # the long cell took several lines
    column = lines[0].index("based on")
    cell = " ".join(line[column:].strip() for line in lines[2:] if not line.startswith("batch_size"))
    assert cell == why.strip()
    assert next(line for line in lines if line.startswith("batch_size"))[column:] == "short"


def test_numbers_and_narrow_tables_are_left_as_they_were() -> None:
    rows = [["synth_008", 0.5454545, 17.72]]
    assert format_table(["case", "Dice", "HD95 mm"], rows).splitlines() == [
        "case       Dice    HD95 mm", "---------  ------  -------", "synth_008  0.5455  17.7200"]
    wide = [[f"{i:.6f}" for i in range(20)]]  # no blank to wrap at: stays one line, however wide
    assert len(format_table([f"c{i}" for i in range(20)], wide).splitlines()) == 3
    assert len(format_table(["a", "b"], [["x " * 80, "y"]], max_width=None).splitlines()) == 3
