"""Device-resident batching and augmentation, run on the CPU (the same code runs on the GPU).

Images are random uint8 noise, so no image equals a shifted or mirrored version of another (or of itself)
by accident: each augmented image can be traced back to exactly one (source, offset, flip).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from unlearn_core.batching import DeviceData, augment, device_tensor, make_generator

N, C, H, W = 60, 2, 8, 8
PAD = 2


@pytest.fixture(scope="module")
def arrays():
    rng = np.random.RandomState(0)
    x = rng.randint(0, 256, size=(N, C, H, W)).astype(np.uint8)
    y = rng.randint(0, 10, size=N).astype(np.int64)
    x.setflags(write=False)  # as Ray's object store hands them out
    return x, y


@pytest.fixture
def data(arrays):
    x, y = arrays
    return DeviceData.from_arrays(x, y, "cpu")


def _crops(src: torch.Tensor, pad: int) -> dict[tuple[int, int, bool], torch.Tensor]:
    """Every crop (offset dy, dx; flipped or not) the augmentation may produce from one C×H×W image."""
    xp = F.pad(src, (pad, pad, pad, pad))
    out = {}
    for dy in range(2 * pad + 1):
        for dx in range(2 * pad + 1):
            crop = xp[:, dy:dy + H, dx:dx + W]
            out[(dy, dx, False)] = crop
            out[(dy, dx, True)] = crop.flip(2)
    return out


def _explain(aug: torch.Tensor, src: torch.Tensor, pad: int) -> list[tuple[int, int, bool]]:
    """The (dy, dx, flipped) that turn `src` into `aug` (one, for noise images; none if unrelated)."""
    return [k for k, v in _crops(src, pad).items() if torch.equal(v, aug)]


def _collect(data: DeviceData, gen: torch.Generator, **kw):
    xs, ys, ids = zip(*data.batches(16, gen, **kw))
    return torch.cat(xs), torch.cat(ys), torch.cat(ids)


def test_device_tensor_copies_read_only_arrays(arrays):
    x, _ = arrays
    t = device_tensor(x, "cpu")
    assert t.dtype == torch.uint8 and tuple(t.shape) == x.shape
    t[0, 0, 0, 0] = (int(x[0, 0, 0, 0]) + 1) % 256  # writable, and a copy: the source is untouched
    assert t[0, 0, 0, 0].item() != x[0, 0, 0, 0]


# ---------------------------------------------------------------------------------------- no augmentation

def test_batches_without_augmentation_map_ids_back_to_source(arrays, data):
    x, y = arrays
    bx, by, bids = _collect(data, make_generator(0, "cpu"))
    assert bx.dtype == torch.float32 and bx.shape == (N, C, H, W)
    assert by.dtype == torch.int64 and bids.dtype == torch.int64
    assert not torch.equal(bids, torch.arange(N)), "shuffle=True should not keep the original order"
    np.testing.assert_array_equal(torch.round(bx * 255).to(torch.uint8).numpy(), x[bids.numpy()])
    np.testing.assert_array_equal(by.numpy(), y[bids.numpy()])


def test_custom_ids_and_subset_stay_aligned(arrays):
    x, y = arrays
    ids = np.arange(N) * 7 + 1000  # ids are arbitrary example ids, not positions
    d = DeviceData.from_arrays(x, y, "cpu", ids=ids)
    positions = np.array([5, 0, 42, 17, 59])
    sub = d.subset(positions)
    assert len(sub) == len(positions)
    bx, by, bids = _collect(sub, make_generator(3, "cpu"), shuffle=False)
    np.testing.assert_array_equal(bids.numpy(), ids[positions])
    np.testing.assert_array_equal(by.numpy(), y[positions])
    np.testing.assert_array_equal(torch.round(bx * 255).to(torch.uint8).numpy(), x[positions])


def test_shuffle_false_keeps_order(data):
    _, _, bids = _collect(data, make_generator(0, "cpu"), shuffle=False)
    torch.testing.assert_close(bids, torch.arange(N))


# ---------------------------------------------------------------------------------------- augmentation

def test_augment_keeps_shape_dtype_and_is_a_crop_or_flip_of_its_source(data):
    x = data.x
    out = augment(x, PAD, True, make_generator(0, "cpu"))
    assert out.shape == x.shape and out.dtype == torch.uint8
    seen = [_explain(out[i], x[i], PAD) for i in range(N)]
    assert all(len(s) == 1 for s in seen), "every augmented image must be one crop/flip of its own source"
    offsets = {s[0][:2] for s in seen}
    flips = [s[0][2] for s in seen]
    assert len(offsets) >= 5, f"crops barely vary: offsets {offsets}"
    assert any((dy, dx) != (PAD, PAD) for dy, dx in offsets)
    assert 0.2 < np.mean(flips) < 0.8, f"expected about half mirrored, got {np.mean(flips):.2f}"


def test_crop_only_varies_and_never_mirrors(data):
    x = data.x
    out = augment(x, PAD, False, make_generator(1, "cpu"))
    seen = [_explain(out[i], x[i], PAD) for i in range(N)]
    assert all(len(s) == 1 and not s[0][2] for s in seen), "flip=False must never mirror"
    assert sum(not torch.equal(out[i], x[i]) for i in range(N)) > N // 2
    assert len({s[0][:2] for s in seen}) >= 5


def test_flip_only_mirrors_about_half(data):
    x = data.x
    out = augment(x, 0, True, make_generator(2, "cpu"))
    same = [torch.equal(out[i], x[i]) for i in range(N)]
    mirrored = [torch.equal(out[i], x[i].flip(2)) for i in range(N)]
    assert all(s != m for s, m in zip(same, mirrored)), "each image is either kept or mirrored horizontally"
    assert 0.2 < np.mean(mirrored) < 0.8


def test_no_augmentation_is_identity(data):
    assert torch.equal(augment(data.x, 0, False, make_generator(0, "cpu")), data.x)


def test_augmented_batches_keep_labels_and_ids_aligned(arrays, data):
    x, y = arrays
    bx, by, bids = _collect(data, make_generator(4, "cpu"), pad=PAD, flip=True)
    assert bx.shape == (N, C, H, W) and bx.dtype == torch.float32
    assert 0.0 <= bx.min().item() and bx.max().item() <= 1.0
    np.testing.assert_array_equal(by.numpy(), y[bids.numpy()])
    imgs = torch.round(bx * 255).to(torch.uint8)
    src = torch.from_numpy(x.copy())
    for i in range(N):
        assert len(_explain(imgs[i], src[bids[i]], PAD)) == 1, f"batch row {i} is not from example {int(bids[i])}"


def test_augmented_batches_deterministic_per_seed(data):
    def run(seed):
        return [t.clone() for b in data.batches(16, make_generator(seed, "cpu"), pad=PAD, flip=True) for t in b]

    a, b, c = run(7), run(7), run(8)
    assert len(a) == len(b) and all(torch.equal(u, v) for u, v in zip(a, b))
    assert not all(torch.equal(u, v) for u, v in zip(a, c))


def test_augmentation_differs_between_seeds_for_the_same_order(data):
    a = augment(data.x, PAD, True, make_generator(0, "cpu"))
    b = augment(data.x, PAD, True, make_generator(1, "cpu"))
    assert not torch.equal(a, b)


# ---------------------------------------------------------------------------------------- epochs

def test_each_epoch_is_a_fresh_permutation_covering_every_example_once(data):
    gen = make_generator(5, "cpu")
    orders = []
    for _ in range(3):
        ids = torch.cat([b[2] for b in data.batches(16, gen)])
        assert len(ids) == N
        assert sorted(ids.tolist()) == list(range(N)), "every example exactly once per epoch"
        orders.append(ids)
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])
    # the whole sequence of epochs is fixed by the seed
    gen2 = make_generator(5, "cpu")
    again = [torch.cat([b[2] for b in data.batches(16, gen2)]) for _ in range(3)]
    assert all(torch.equal(u, v) for u, v in zip(orders, again))


def test_batch_sizes_and_drop_last(arrays):
    x, y = arrays
    d = DeviceData.from_arrays(x[:10], y[:10], "cpu")
    g = make_generator(0, "cpu")
    assert [len(b[1]) for b in d.batches(4, g)] == [4, 4, 2]
    kept = [b[2] for b in d.batches(4, g, drop_last=True)]
    assert [len(k) for k in kept] == [4, 4]
    assert len(set(torch.cat(kept).tolist())) == 8
    assert [len(b[1]) for b in d.batches(5, g, drop_last=True)] == [5, 5]
    # a set smaller than one batch still yields it whole (never zero steps)
    assert [len(b[1]) for b in d.batches(16, g, drop_last=True)] == [10]
    assert [len(b[1]) for b in d.batches(16, g)] == [10]


def test_lone_trailing_example_joins_the_previous_batch(arrays):
    """A last batch of one example would crash BatchNorm on a 1×1 map (VGG on digits): it is merged."""
    x, y = arrays
    g = make_generator(0, "cpu")
    d9 = DeviceData.from_arrays(x[:9], y[:9], "cpu")
    batches = list(d9.batches(4, g))
    assert [len(b[1]) for b in batches] == [4, 5]
    assert sorted(torch.cat([b[2] for b in batches]).tolist()) == list(range(9))
    assert [len(b[1]) for b in d9.batches(4, g, drop_last=True)] == [4, 4]
    assert [len(b[1]) for b in d9.batches(1, g)] == [1] * 9  # batch size 1 is what was asked for
