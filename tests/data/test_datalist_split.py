"""Train/validation splits: explicit id lists and deterministic k-fold."""

from __future__ import annotations

import pytest

from seg.config import SplitConfig
from seg.data.datalist import DataError, split_datalist


def _items(n: int) -> list[dict]:
    return [{"id": str(i), "image": [f"/x/{i}.png"], "label": None} for i in range(n)]


def _ids(cases: list[dict]) -> list[str]:
    return [c["id"] for c in cases]


def test_explicit_train_and_val() -> None:
    train, val = split_datalist(_items(6), SplitConfig(train=["10", "0", "1"][1:], val=["5", "2"]))
    assert _ids(train) == ["0", "1"] and _ids(val) == ["2", "5"]  # sorted; cases in neither are unused


def test_val_alone_trains_on_the_rest_in_numeric_order() -> None:
    train, val = split_datalist(_items(12), SplitConfig(val=["10", "2"]))
    assert _ids(val) == ["2", "10"]
    assert _ids(train) == ["0", "1", "3", "4", "5", "6", "7", "8", "9", "11"]


def test_train_alone_validates_on_the_rest() -> None:
    train, val = split_datalist(_items(4), SplitConfig(train=["0", "1", "2"]))
    assert _ids(train) == ["0", "1", "2"] and _ids(val) == ["3"]


def test_unknown_ids_are_named() -> None:
    with pytest.raises(DataError, match=r"unknown case ids \['7', 'pat9'\]"):
        split_datalist(_items(3), SplitConfig(train=["0", "pat9"], val=["7"]))


def test_overlapping_ids_are_an_error() -> None:
    with pytest.raises(DataError, match=r"both train and val: \['1'\]"):
        split_datalist(_items(3), SplitConfig(train=["0", "1"], val=["1", "2"]))


def test_kfold_partitions_exactly() -> None:
    items = _items(11)
    vals = []
    for fold in range(4):
        train, val = split_datalist(items, SplitConfig(folds=4, fold=fold, seed=1))
        assert set(_ids(train)).isdisjoint(_ids(val))
        assert sorted(_ids(train) + _ids(val)) == sorted(_ids(items))
        vals.append(set(_ids(val)))
    assert sorted(len(v) for v in vals) == [2, 3, 3, 3]
    assert set().union(*vals) == set(_ids(items)) and sum(len(v) for v in vals) == 11


def test_kfold_is_deterministic_and_seeded() -> None:
    items = _items(20)
    a = split_datalist(items, SplitConfig(folds=5, fold=2, seed=0))
    # The input order is irrelevant.
    b = split_datalist(list(reversed(items)), SplitConfig(folds=5, fold=2, seed=0))
    c = split_datalist(items, SplitConfig(folds=5, fold=2, seed=1))
    assert _ids(a[1]) == _ids(b[1]) and _ids(a[0]) == _ids(b[0])
    assert _ids(a[1]) != _ids(c[1])


def test_too_few_cases_for_the_folds() -> None:
    with pytest.raises(DataError, match="cannot fill 5 folds"):
        split_datalist(_items(4), SplitConfig(folds=5))
