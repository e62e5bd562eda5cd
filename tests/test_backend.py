"""The torch backend: device resolution and chunked evaluation with bounded memory."""

import numpy as np
import pytest
import torch
from scipy.special import logsumexp

from sklearn_reclag._backend import (
    RowBanks,
    as_tensor,
    check_value_range,
    class_logsumexp,
    map_batches,
    routed_logsumexp,
    resolve_device,
    resolve_dtype,
    safe_max_abs,
)


def test_auto_device_follows_cuda_availability():
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert resolve_device("auto").type == expected
    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device(torch.device("cpu")) == torch.device("cpu")


@pytest.mark.parametrize("bad", ["gpu0", "cuda:x", ""])
def test_unknown_device_names_are_rejected(bad):
    with pytest.raises(ValueError, match="Unknown device"):
        resolve_device(bad)


def test_non_string_device_is_rejected():
    with pytest.raises(TypeError, match="device must be a string"):
        resolve_device(0)


@pytest.mark.parametrize("copy", [True, False])
@pytest.mark.parametrize("view", [
    np.arange(12.0).reshape(3, 4)[::-1],
    np.arange(12.0).reshape(3, 4)[:, ::-1],
    # numpy calls this one C-contiguous (a negative stride on an axis of length one);
    # torch still refuses it.
    np.arange(4.0).reshape(1, 4)[::-1],
], ids=["rows reversed", "columns reversed", "one row reversed"])
def test_as_tensor_takes_negative_strides(view, copy):
    """torch.as_tensor refuses a numpy array with a negative stride (issue 23 item 12);
    as_tensor copies it, and the tensor never shares the caller's memory."""
    tensor = as_tensor(view, "cpu", torch.float64, copy=copy)
    np.testing.assert_array_equal(tensor.numpy(), view)
    assert not np.shares_memory(tensor.numpy(), view)


def test_map_batches_takes_negatively_strided_row_args():
    X = np.arange(12.0).reshape(6, 2)
    labels = np.arange(6)[::-1]
    out = map_batches(lambda V, state, rows: V[:, 0] + rows, X, batch_size=4, device="cpu",
                      dtype=torch.float64, row_args=(labels,))
    np.testing.assert_array_equal(out, X[:, 0] + labels)


def test_dtype_names():
    assert resolve_dtype("float64") is torch.float64
    with pytest.raises(ValueError, match="dtype must be one of"):
        resolve_dtype("half")


def test_map_batches_covers_every_row_once(rng):
    X = rng.normal(size=(103, 4))
    out = map_batches(
        lambda V, state: V.sum(dim=1) + state["shift"],
        X,
        batch_size=10,
        device=torch.device("cpu"),
        dtype=torch.float64,
        state={"shift": torch.tensor(1.0, dtype=torch.float64)},
    )
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, X.sum(axis=1) + 1.0)


@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_map_batches_check_finite_refuses_non_finite_rows(rng, bad):
    """check_finite (the device-side check of GPU scoring) raises a clear ValueError for a
    NaN or infinity in any chunk, and lets finite input through."""
    X = rng.normal(size=(20, 3))
    kwargs = {"batch_size": 8, "device": torch.device("cpu"), "dtype": torch.float64,
              "check_finite": True}
    np.testing.assert_array_equal(map_batches(lambda V, state: V, X, **kwargs), X)
    X[17, 1] = bad
    with pytest.raises(ValueError, match="NaN or infinity"):
        map_batches(lambda V, state: V, X, **kwargs)


@pytest.mark.parametrize("bad", [np.nan, np.inf, 1e30])
@pytest.mark.parametrize("check_finite", [False, True])
def test_map_batches_max_abs_refuses_values_beyond_it(rng, bad, check_finite):
    """max_abs (GPU and CPU scoring) refuses a value too large for the dtype in any chunk,
    with the error that names the bound; NaN and infinity fail the same reduction and
    are named as such."""
    X = rng.normal(size=(20, 3))
    bound = safe_max_abs(torch.float32, 3)
    kwargs = {"batch_size": 8, "device": torch.device("cpu"), "dtype": torch.float32,
              "check_finite": check_finite, "max_abs": bound}
    X[5, 0] = 0.99 * bound  # inside: accepted
    np.testing.assert_allclose(map_batches(lambda V, state: V, X, **kwargs), X, rtol=1e-6)
    X[17, 1] = bad
    message = "values up to 1e\\+30.*dtype='float64'" if np.isfinite(bad) else "NaN or infinity"
    with pytest.raises(ValueError, match=message):
        map_batches(lambda V, state: V, X, **kwargs)


def test_safe_max_abs_leaves_room_in_the_dtype():
    """Two rows at the bound: their product and squared norms stay 2**20 below the max."""
    for dtype in (torch.float32, torch.float64):
        for n_features in (1, 64, 4096):
            bound = safe_max_abs(dtype, n_features)
            row = torch.full((n_features,), bound, dtype=dtype)
            product = float(row @ row)
            assert np.isfinite(product)
            assert product == pytest.approx(torch.finfo(dtype).max / 2**20, rel=1e-3)
    assert 1e15 < safe_max_abs(torch.float32, 64) < 1e16


def test_check_value_range_names_the_dtype_to_use():
    X = np.array([[1.0, -3e20]])
    check_value_range(X, torch.float64)
    with pytest.raises(ValueError, match="up to 3e\\+20.*use dtype='float64'"):
        check_value_range(X, torch.float32)
    with pytest.raises(ValueError, match="dtype='float64'.*scale the features"):
        check_value_range(X * 1e140, torch.float64)


@pytest.mark.parametrize("read_only", [False, True])
def test_map_batches_copies_unless_read_only(rng, read_only):
    """read_only=True hands views of a matching-dtype CPU array to fn (no copy); a
    read-only array or a dtype change is still copied; the output is always new."""
    X = rng.normal(size=(20, 3))
    seen = []

    def fn(V, state):
        seen.append(np.shares_memory(V.numpy(), X))
        return V

    kwargs = {"batch_size": 8, "device": torch.device("cpu"), "read_only": read_only}
    out = map_batches(fn, X, dtype=torch.float64, **kwargs)
    assert seen == [read_only] * 3
    assert not np.shares_memory(out, X)
    np.testing.assert_array_equal(out, X)

    seen.clear()
    map_batches(fn, X, dtype=torch.float32, **kwargs)
    assert seen == [False] * 3
    frozen = X.copy()
    frozen.flags.writeable = False
    map_batches(lambda V, state: V, frozen, dtype=torch.float64, **kwargs)  # no warning


@pytest.mark.parametrize("max_block", [1, 40, 2**24])
def test_class_logsumexp_equals_numpy_over_ragged_banks(rng, max_block):
    beta = 0.7
    sizes = [5, 2, 4]  # ragged banks, padded to 5 slots
    D = 6
    queries = rng.normal(size=(9, D))
    banks = np.zeros((3, 5, D))
    mask = np.zeros((3, 5), dtype=bool)
    for c, size in enumerate(sizes):
        banks[c, :size] = rng.normal(size=(size, D))
        mask[c, :size] = True
    got = class_logsumexp(
        torch.tensor(queries), torch.tensor(banks), torch.tensor(mask), beta,
        max_block=max_block,
    ).numpy()
    expected = np.stack(
        [logsumexp(beta * queries @ banks[c, :size].T, axis=1) for c, size in enumerate(sizes)],
        axis=1,
    )
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_class_logsumexp_adds_the_per_memory_bias(rng):
    queries, banks = rng.normal(size=(4, 3)), rng.normal(size=(2, 5, 3))
    bias = rng.normal(size=(2, 5))
    got = class_logsumexp(
        torch.tensor(queries), torch.tensor(banks), torch.ones((2, 5), dtype=torch.bool), 0.5,
        bias=torch.tensor(bias), max_block=1,
    ).numpy()
    expected = logsumexp(0.5 * np.einsum("bd,cmd->bcm", queries, banks) + bias, axis=2)
    np.testing.assert_allclose(got, expected, rtol=1e-12)


def test_class_logsumexp_of_an_empty_bank_is_minus_infinity(rng):
    banks = torch.zeros((2, 3, 4), dtype=torch.float64)
    mask = torch.tensor([[True, True, False], [False, False, False]])
    out = class_logsumexp(torch.ones((2, 4), dtype=torch.float64), banks, mask, 1.0)
    assert torch.isfinite(out[:, 0]).all()
    assert torch.isneginf(out[:, 1]).all()


def test_class_logsumexp_is_stable_for_large_logits():
    # exp(beta * 1e4) overflows float64; logsumexp must not.
    banks = torch.full((1, 2, 1), 100.0, dtype=torch.float32)
    out = class_logsumexp(
        torch.full((1, 1), 100.0), banks, torch.ones((1, 2), dtype=torch.bool), 1.0
    )
    assert out.item() == pytest.approx(1e4 + np.log(2), rel=1e-6)


def test_pickled_device_falls_back_to_one_that_exists(monkeypatch):
    from sklearn_reclag._backend import loadable_device

    assert loadable_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    assert loadable_device("cuda:0") == "cuda:0"
    with pytest.warns(UserWarning, match="fitted on 'cuda:1'.*'cuda:0'"):
        assert loadable_device("cuda:1") == "cuda:0"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.warns(UserWarning, match="the CPU"):
        assert loadable_device("cuda") == "cpu"


@pytest.mark.parametrize("max_block", [1, 9, 2**24])
def test_routed_logsumexp_equals_the_routed_column_of_class_logsumexp(rng, max_block):
    queries = torch.tensor(rng.normal(size=(11, 4)))
    banks = torch.tensor(rng.normal(size=(3, 5, 4)))
    mask = torch.tensor(rng.random((3, 5)) < 0.7)
    mask[:, 0] = True
    bias = torch.tensor(rng.normal(size=(3, 5)))
    route = torch.tensor([2, 0, 0, 1, 2, 2, 2, 0, 1, 1, 2])
    full = class_logsumexp(queries, banks, mask, 0.8, bias=bias)
    routed = routed_logsumexp(queries, route, banks, mask, 0.8, bias=bias,
                              max_block=max_block)
    np.testing.assert_allclose(routed.numpy(), full[torch.arange(11), route].numpy(),
                               rtol=1e-12)


@pytest.mark.parametrize(
    "spread", ["all banks, balanced", "all banks, sorted", "few banks", "few banks, sorted",
               "one bank"])
@pytest.mark.parametrize("max_block", [1, 700, 2**24])
def test_routed_logsumexp_over_many_banks(rng, spread, max_block):
    """Many banks take the padded batched product when the groups are balanced and the
    per-bank loop otherwise, rows already sorted by bank skip the sort; all equal the
    routed column of class_logsumexp, including a bank whose slots are all padding."""
    n_banks, n_queries = 80, 400
    queries = torch.tensor(rng.normal(size=(n_queries, 6)))
    banks = torch.tensor(rng.normal(size=(n_banks, 5, 6)))
    mask = torch.tensor(rng.random((n_banks, 5)) < 0.7)
    mask[:, 0] = True
    mask[7] = False
    bias = torch.tensor(rng.normal(size=(n_banks, 5)))
    route = {
        "all banks, balanced": rng.permutation(np.arange(n_queries) % n_banks),
        "all banks, sorted": np.sort(np.arange(n_queries) % n_banks),
        "few banks": rng.choice([3, 7, 50], size=n_queries),
        "few banks, sorted": np.sort(rng.choice([3, 7, 50], size=n_queries)),
        "one bank": np.full(n_queries, 11),
    }[spread]
    route = torch.tensor(route)
    full = class_logsumexp(queries, banks, mask, 0.8, bias=bias)
    routed = routed_logsumexp(queries, route, banks, mask, 0.8, bias=bias,
                              max_block=max_block)
    np.testing.assert_allclose(routed.numpy(), full[torch.arange(n_queries), route].numpy(),
                               rtol=1e-12)
    assert np.isneginf(routed.numpy()[route.numpy() == 7]).all()


def _as_row_banks(banks, mask, rng):
    """The padded ``banks`` as RowBanks over their real memories in a shuffled order,
    among rows that are no memory: padding slots name row 0."""
    memories = banks[mask]
    extra = torch.tensor(rng.normal(size=(7, banks.shape[2])))
    rows = torch.cat([extra, memories])
    order = torch.tensor(rng.permutation(len(rows)))
    position = torch.empty_like(order)
    position[order] = torch.arange(len(rows))
    index = torch.zeros(mask.shape, dtype=torch.int64)
    index[mask] = position[len(extra):]
    return RowBanks(rows[order], index)


@pytest.mark.parametrize("spread", ["balanced", "few banks"])
@pytest.mark.parametrize("max_block", [1, 700, 2**24])
def test_row_banks_score_as_the_padded_banks(rng, spread, max_block):
    """Banks kept as rows of one matrix (gathered a chunk of slots at a time) give the
    logsumexp of the padded banks, per class and routed (both of routed_logsumexp's
    paths), with a memory and every copy of a query left out."""
    n_banks, n_queries = 80, 400
    banks = torch.tensor(rng.normal(size=(n_banks, 5, 6)))
    mask = torch.tensor(rng.random((n_banks, 5)) < 0.7)
    mask[:, 0] = True
    queries = torch.tensor(rng.normal(size=(n_queries, 6)))
    queries[:50] = banks[:50, 0]  # copies of memories, left out with exclude_copies
    route = torch.tensor(rng.permutation(np.arange(n_queries) % n_banks)
                         if spread == "balanced" else rng.choice([3, 7, 50], n_queries))
    exclude = (route, torch.tensor(rng.integers(-1, 5, n_queries)))
    rows = _as_row_banks(banks, mask, rng)
    assert torch.equal(rows[:, :][mask], banks[mask])
    bias = -0.5 * 0.8 * torch.einsum("cmd,cmd->cm", banks, banks)
    for copies in (False, True):
        kwargs = dict(max_block=max_block, exclude=exclude, exclude_copies=copies)
        np.testing.assert_allclose(
            class_logsumexp(queries, rows, mask, 0.8, bias=bias, **kwargs).numpy(),
            class_logsumexp(queries, banks, mask, 0.8, bias=bias, **kwargs).numpy(),
            rtol=1e-12)
        np.testing.assert_allclose(
            routed_logsumexp(queries, route, rows, mask, 0.8, bias=bias, **kwargs).numpy(),
            routed_logsumexp(queries, route, banks, mask, 0.8, bias=bias, **kwargs).numpy(),
            rtol=1e-12)
    np.testing.assert_allclose(rows.sq_norms()[mask].numpy(),
                               (banks * banks).sum(dim=2)[mask].numpy(), rtol=1e-12)


@pytest.mark.parametrize("max_block", [1, 50, 400])
def test_logsumexp_blocks_stay_within_max_block(rng, product_sizes, max_block):
    """No product builds more than max_block logits (or, when even one memory slot per
    bank exceeds it, one slot per product): checked on the products themselves. The
    routed groups (sizes 30, 2 and 1) take as many slots per product as the budget
    allows for their own rows."""
    queries = torch.tensor(rng.normal(size=(33, 4)))
    banks = torch.tensor(rng.normal(size=(3, 40, 4)))
    mask = torch.ones(3, 40, dtype=torch.bool)
    route = torch.tensor([0] * 30 + [1, 1, 2])
    class_logsumexp(queries, banks, mask, 0.5, max_block=max_block)
    assert max(product_sizes) <= max(max_block, 33 * 3)
    product_sizes.clear()
    routed_logsumexp(queries, route, banks, mask, 0.5, max_block=max_block)
    assert max(product_sizes) <= max(max_block, 30)
    # The group of 1 row takes min(40, max_block) slots per product.
    assert min(40, max_block) in product_sizes
