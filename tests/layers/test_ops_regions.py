"""Window and region ops against slow explicit references."""

from __future__ import annotations

import itertools

import pytest
import torch

from seg.layers.ops.regions import (
    cyclic_shift,
    cyclic_unshift,
    pad_to_multiple,
    region_group_partition,
    region_group_reverse,
    window_attention_mask,
    window_partition,
    window_reverse,
)

GRIDS = [((6, 8), (3, 4)), ((4, 6, 2), (2, 3, 2)), ((5, 5), (5, 1))]


def _partition_loop(x: torch.Tensor, window: tuple[int, ...]) -> torch.Tensor:
    """Windows by explicit slicing: batch-major, windows and tokens in raster order."""
    b, *spatial, c = x.shape
    out = []
    for i in range(b):
        for start in itertools.product(*(range(0, s, w) for s, w in zip(spatial, window, strict=True))):
            sl = tuple(slice(s, s + w) for s, w in zip(start, window, strict=True))
            out.append(x[(i, *sl)].reshape(-1, c))
    return torch.stack(out)


@pytest.mark.parametrize(("spatial", "window"), GRIDS)
def test_partition_matches_loop_and_reverse_is_identity(
    spatial: tuple[int, ...], window: tuple[int, ...]
) -> None:
    x = torch.randn(2, *spatial, 3)
    windows = window_partition(x, window)
    torch.testing.assert_close(windows, _partition_loop(x, window), rtol=0, atol=0)
    torch.testing.assert_close(window_reverse(windows, window, spatial), x, rtol=0, atol=0)


def test_partition_rejects_indivisible_sizes() -> None:
    with pytest.raises(ValueError, match="divisible"):
        window_partition(torch.randn(1, 5, 4, 2), (2, 2))


@pytest.mark.parametrize(
    ("spatial", "multiple"), [((5, 7), (4, 4)), ((3, 4, 5), (2, 2, 2)), ((4, 4), (2, 4))]
)
def test_pad_to_multiple(spatial: tuple[int, ...], multiple: tuple[int, ...]) -> None:
    x = torch.randn(2, *spatial, 3)
    padded, pads = pad_to_multiple(x, multiple, value=-1.0)
    assert all(p % m == 0 for p, m in zip(padded.shape[1:-1], multiple, strict=True))
    assert pads == tuple(p - s for p, s in zip(padded.shape[1:-1], spatial, strict=True))
    crop = (slice(None), *(slice(0, s) for s in spatial), slice(None))
    torch.testing.assert_close(padded[crop], x, rtol=0, atol=0)
    assert (padded.sum() - x.sum() + (padded.numel() - x.numel())).abs() < 1e-3  # the rest is -1


def test_cyclic_shift_round_trip_and_direction() -> None:
    x = torch.arange(2 * 5 * 6 * 4 * 1.0).reshape(2, 5, 6, 4, 1)
    shifted = cyclic_shift(x, (1, 2, 3))
    # The token at (1, 2, 3) moves to the origin: shifted windows become regular windows.
    torch.testing.assert_close(shifted[:, 0, 0, 0], x[:, 1, 2, 3])
    torch.testing.assert_close(cyclic_unshift(shifted, (1, 2, 3)), x)


def _group_ids(size: int, window: int, shift: int) -> torch.Tensor:
    """Shifted windows in *original* coordinates: a window grid offset by ``window - shift``
    (no wrap-around), which is what Swin's roll + mask computes."""
    p = torch.arange(size)
    return (p + window - shift) // window if shift else p // window


@pytest.mark.parametrize(
    ("valid", "window", "shift"),
    [
        ((8, 8), (4, 4), (2, 2)),
        ((7, 5), (4, 4), (2, 2)),
        ((7, 5), (4, 4), (0, 0)),
        ((5, 6, 3), (2, 4, 3), (1, 2, 0)),
    ],
)
def test_window_mask_matches_offset_window_grid(valid, window, shift) -> None:
    """Pad, roll, partition token coordinates and the mask; compare pairs with the definition."""
    nd = len(valid)
    coords = torch.stack(torch.meshgrid(*(torch.arange(s) for s in valid), indexing="ij"), -1).float()
    padded, _ = pad_to_multiple(coords[None], window, value=-1.0)
    padded_shape = tuple(padded.shape[1:-1])
    mask = window_attention_mask(padded_shape, valid, window, shift)
    win_coords = window_partition(cyclic_shift(padded, shift), window)  # [nW, N, nd]
    ids = [_group_ids(padded_shape[d], window[d], shift[d]) for d in range(nd)]
    for w in range(win_coords.shape[0]):
        for i, j in itertools.product(range(win_coords.shape[1]), repeat=2):
            ci, cj = win_coords[w, i].long(), win_coords[w, j].long()
            if (ci < 0).any():
                continue  # padded query: output cropped, any non-empty row is fine
            want = bool((cj >= 0).all()) and all(ids[d][ci[d]] == ids[d][cj[d]] for d in range(nd))
            assert bool(mask[w, i, j]) == want, (w, ci.tolist(), cj.tolist())


def test_window_mask_is_none_when_nothing_is_masked() -> None:
    assert window_attention_mask((8, 8), (8, 8), (4, 4), (0, 0)) is None
    assert window_attention_mask((8, 8), (7, 8), (4, 4), (0, 0)) is not None


def _groups_loop(region: torch.Tensor, group_size: int) -> list[list[list[int]]]:
    """Per batch: token indices of each group, by sorting (region, index) in Python."""
    out = []
    for row in region.tolist():
        order = sorted(range(len(row)), key=lambda i: (row[i], i))
        out.append([order[s : s + group_size] for s in range(0, len(order), group_size)])
    return out


@pytest.mark.parametrize(("n", "group_size"), [(23, 5), (16, 4), (7, 16)])
def test_region_groups_match_sorted_loop(n: int, group_size: int) -> None:
    gen = torch.Generator().manual_seed(n)
    x = torch.randn(2, n, 3, generator=gen)
    region = torch.randint(0, 4, (2, n), generator=gen)
    groups, mask, order = region_group_partition(x, region, group_size)
    n_groups = -(-n // group_size)
    assert groups.shape == (2 * n_groups, group_size, 3)
    assert mask.shape == (2 * n_groups, group_size, group_size)
    for b, per_batch in enumerate(_groups_loop(region, group_size)):
        for gi, members in enumerate(per_batch):
            got = groups[b * n_groups + gi]
            torch.testing.assert_close(got[: len(members)], x[b, members], rtol=0, atol=0)
            assert not got[len(members) :].any()  # padding
            ids = region[b, members].tolist()
            want = torch.tensor([[a == c for c in ids] for a in ids])
            assert torch.equal(mask[b * n_groups + gi, : len(members), : len(members)], want)
            assert not mask[b * n_groups + gi, : len(members), len(members) :].any()
    torch.testing.assert_close(region_group_reverse(groups, order), x, rtol=0, atol=0)
