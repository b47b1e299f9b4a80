"""Count-based soft-label methods (app.aggregation.methods). Pure numpy: no database needed."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from app.aggregation.methods import (
    COUNT_METHODS,
    majority_labels,
    resolve,
    soft_labels,
)
from app.aggregation.params import ParamError
from tests.helpers import SHARED_DATA, require_reference

CIFAR10H = SHARED_DATA / "cifar10h"

E = math.e
D = np.array([3, 1, 0])


# --- hand computations on d = [3, 1, 0] (N = 4, K = 3) ---------------------------------------


@pytest.mark.parametrize(
    ("method", "params", "expected"),
    [
        ("normalized", {}, [3 / 4, 1 / 4, 0]),
        ("normalized", {"alpha": 0}, [0.75, 0.25, 0.0]),
        ("normalized", {"alpha": 1}, [4 / 7, 2 / 7, 1 / 7]),
        ("normalized", {"alpha": 0.5}, [3.5 / 5.5, 1.5 / 5.5, 0.5 / 5.5]),  # 7/11, 3/11, 1/11
        # e^3 / (e^3 + e + 1) = 0.84379..., e / (...) = 0.11419..., 1 / (...) = 0.04201...
        ("softmax", {}, [0.8437947344813395, 0.11419519938459448, 0.04201006613406605]),
        (
            "softmax",
            {"temperature": 1},
            [E**3 / (E**3 + E + 1), E / (E**3 + E + 1), 1 / (E**3 + E + 1)],
        ),
        # T = 2: softmax([1.5, 0.5, 0])
        (
            "softmax",
            {"temperature": 2},
            [0.6285317192117624, 0.2312238976221491, 0.1402443831660885],
        ),
        # softmax([0.75, 0.25, 0]): near uniform at T = 1
        ("softmax-normalized", {}, [0.4810242632533696, 0.2917559637288497, 0.2272197730177806]),
        # T = 1/N turns d/N back into d: same as softmax of raw counts at T = 1
        (
            "softmax-normalized",
            {"temperature": 0.25},
            [0.8437947344813395, 0.11419519938459448, 0.04201006613406605],
        ),
        ("majority", {}, [1.0, 0.0, 0.0]),
    ],
)
def test_hand_computed(method: str, params: dict[str, float], expected: list[float]) -> None:
    out = soft_labels(D, method, params)
    assert out.shape == (3,)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, expected, rtol=1e-14, atol=1e-16)


def test_normalized_alpha_zero_is_exact_division() -> None:
    counts = np.array([[3, 1, 0], [1, 1, 1], [7, 0, 2]])
    assert np.array_equal(soft_labels(counts, "normalized"), counts / counts.sum(axis=1)[:, None])


def test_majority_ties_share_mass() -> None:
    counts = np.array([[3, 1, 0], [2, 2, 0], [0, 5, 5], [4, 4, 4], [0, 0, 1]])
    expected = [[1, 0, 0], [0.5, 0.5, 0], [0, 0.5, 0.5], [1 / 3, 1 / 3, 1 / 3], [0, 0, 1]]
    np.testing.assert_array_equal(soft_labels(counts, "majority"), expected)


def test_majority_labels_ties_go_to_lowest_index() -> None:
    counts = np.array([[3, 1, 0], [2, 2, 0], [0, 5, 5], [0, 0, 0], [0, 1, 2]])
    labels = majority_labels(counts)
    assert labels.dtype == np.int64
    np.testing.assert_array_equal(labels, [0, 0, 1, 0, 2])
    assert majority_labels(np.array([0, 2, 1])) == 1


@pytest.mark.parametrize("method", list(COUNT_METHODS))
def test_no_votes_gives_uniform(method: str) -> None:
    counts = np.array([[0, 0, 0, 0], [1, 0, 0, 0]])
    out = soft_labels(counts, method)
    np.testing.assert_allclose(out[0], [0.25] * 4, rtol=1e-15)


@pytest.mark.parametrize("method", list(COUNT_METHODS))
def test_shapes(method: str) -> None:
    assert soft_labels(np.zeros((0, 5), dtype=np.int64), method).shape == (0, 5)
    assert soft_labels(np.ones((7, 2), dtype=np.int64), method).shape == (7, 2)
    assert soft_labels(np.array([1, 2]), method).shape == (2,)


def test_bad_counts() -> None:
    with pytest.raises(ValueError):
        soft_labels(np.array([[1, -1, 0]]), "normalized")
    with pytest.raises(ValueError):
        soft_labels(np.zeros((2, 0), dtype=np.int64), "normalized")
    with pytest.raises(ValueError):
        soft_labels(np.zeros((2, 2, 2), dtype=np.int64), "normalized")


# --- property tests ---------------------------------------------------------------------------


@st.composite
def count_matrices(draw: st.DrawFn) -> np.ndarray:
    k = draw(st.integers(2, 1000))
    n = draw(st.integers(1, max(1, 4000 // k)))
    # A mix of zeros, small counts and huge ones (up to 10^12); `fill` keeps big arrays cheap.
    values = st.one_of(st.just(0), st.integers(0, 10), st.integers(0, 10**12))
    return draw(hnp.arrays(np.int64, (n, k), elements=values, fill=values))


alphas = st.one_of(
    st.sampled_from([0.0, 1e-300, 0.5, 1.0, 1e6, 1e300, 1.7e308]),
    st.floats(min_value=0, allow_nan=False, allow_infinity=False),
)
temperatures = st.one_of(
    st.sampled_from([5e-324, 1e-300, 1e-6, 1.0, 1e6, 1e300, 1.7e308]),
    st.floats(min_value=0, exclude_min=True, allow_nan=False, allow_infinity=False),
)


def method_and_params() -> st.SearchStrategy[tuple[str, dict[str, float]]]:
    return st.one_of(
        st.tuples(st.just("normalized"), st.fixed_dictionaries({"alpha": alphas})),
        st.tuples(st.just("softmax"), st.fixed_dictionaries({"temperature": temperatures})),
        st.tuples(
            st.just("softmax-normalized"), st.fixed_dictionaries({"temperature": temperatures})
        ),
        st.tuples(st.just("majority"), st.just({})),
    )


@settings(max_examples=300, deadline=None)
@given(count_matrices(), method_and_params())
def test_rows_are_distributions(counts: np.ndarray, mp: tuple[str, dict[str, float]]) -> None:
    method, params = mp
    out = soft_labels(counts, method, params)
    assert out.shape == counts.shape
    assert out.dtype == np.float64
    assert np.isfinite(out).all()
    assert (out >= 0).all()
    np.testing.assert_allclose(out.sum(axis=1), 1.0, rtol=0, atol=1e-12)


@settings(max_examples=100, deadline=None)
@given(count_matrices())
def test_argmax_agrees_with_majority(counts: np.ndarray) -> None:
    labels = majority_labels(counts)
    top = counts.max(axis=1)
    assert (counts[np.arange(len(counts)), labels] == top).all()
    # lowest index among the tied top classes
    assert all((counts[i, : labels[i]] < top[i]).all() for i in range(len(counts)))


# --- limits -----------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(count_matrices())
def test_softmax_cold_limit_is_majority(counts: np.ndarray) -> None:
    # Integer counts differ by >= 1, so at T = 1e-3 every non-top class gets exp(-1000) = 0.
    np.testing.assert_array_equal(
        soft_labels(counts, "softmax", {"temperature": 1e-3}), soft_labels(counts, "majority")
    )


def test_softmax_approaches_majority_as_t_shrinks() -> None:
    counts = np.array([[3, 1, 0], [2, 2, 0], [10**9, 10**9 - 1, 0]])
    majority = soft_labels(counts, "majority")
    gaps = [
        np.abs(soft_labels(counts, "softmax", {"temperature": t}) - majority).max()
        for t in (10.0, 1.0, 0.1, 1e-6)
    ]
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] == 0.0


@pytest.mark.parametrize("method", ["softmax", "softmax-normalized"])
def test_softmax_hot_limit_is_uniform(method: str) -> None:
    counts = np.array([[3, 1, 0], [2, 2, 0], [1000, 0, 7]])
    gaps = [
        np.abs(soft_labels(counts, method, {"temperature": t}) - 1 / 3).max()
        for t in (1.0, 100.0, 1e6, 1e12)
    ]
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] < 1e-9


def test_normalized_large_alpha_is_uniform() -> None:
    counts = np.array([[3, 1, 0], [1000, 0, 7], [0, 0, 0]])
    gaps = [
        np.abs(soft_labels(counts, "normalized", {"alpha": a}) - 1 / 3).max()
        for a in (0.0, 1.0, 100.0, 1e6, 1e12)
    ]
    assert gaps == sorted(gaps, reverse=True)
    assert gaps[-1] < 1e-9
    np.testing.assert_allclose(
        soft_labels(counts, "normalized", {"alpha": 1.7e308}), 1 / 3, rtol=1e-15
    )


def test_softmax_normalized_is_near_uniform_at_t1() -> None:
    # A unanimous item over K = 10 classes gets only e / (e + 9) of the mass, as documented.
    out = soft_labels(np.array([50, 0, 0, 0, 0, 0, 0, 0, 0, 0]), "softmax-normalized")
    assert out[0] == pytest.approx(E / (E + 9), rel=1e-14)
    assert out[0] < 0.24


def test_huge_counts_and_extreme_temperatures() -> None:
    counts = np.array([[10**9, 0, 3], [10**12, 10**12, 0]])
    for t in (1e-6, 1.0, 1e6):
        for method in ("softmax", "softmax-normalized"):
            out = soft_labels(counts, method, {"temperature": t})
            assert np.isfinite(out).all()
            np.testing.assert_allclose(out.sum(axis=1), 1.0, atol=1e-15)
    np.testing.assert_array_equal(
        soft_labels(counts, "softmax", {"temperature": 1e-6}), [[1, 0, 0], [0.5, 0.5, 0]]
    )


# --- the published CIFAR-10H soft labels ------------------------------------------------------


def test_cifar10h_published_probs() -> None:
    present = (CIFAR10H / "counts.npy").exists() and (CIFAR10H / "probs.npy").exists()
    require_reference(
        present, f"CIFAR-10H counts.npy, probs.npy in {CIFAR10H} (../shared/data beside the clone)"
    )
    counts = np.load(CIFAR10H / "counts.npy")
    probs = np.load(CIFAR10H / "probs.npy")
    assert counts.shape == probs.shape == (10000, 10)
    out = soft_labels(counts, "normalized")
    assert np.abs(out - probs).max() == 0.0
    np.testing.assert_array_equal(majority_labels(counts), np.argmax(probs, axis=1))


# --- resolve ----------------------------------------------------------------------------------


def test_methods_listed_in_order() -> None:
    assert list(COUNT_METHODS) == ["normalized", "softmax", "softmax-normalized", "majority"]
    for name, m in COUNT_METHODS.items():
        assert m.name == name
        assert m.summary and "\n" not in m.summary
        assert m.source
    assert list(COUNT_METHODS["normalized"].model_fields) == ["alpha"]
    assert list(COUNT_METHODS["softmax"].model_fields) == ["temperature"]
    assert list(COUNT_METHODS["softmax-normalized"].model_fields) == ["temperature"]
    assert list(COUNT_METHODS["majority"].model_fields) == []


def test_resolve_fills_defaults_and_parses_strings() -> None:
    m = resolve("normalized", {})
    assert type(m) is COUNT_METHODS["normalized"]
    assert m.params() == {"alpha": 0.0}
    assert resolve("softmax", {}).params() == {"temperature": 1.0}
    assert resolve("softmax", {"temperature": " 0.5 "}).params() == {"temperature": 0.5}
    assert resolve("softmax-normalized", {"temperature": 2}).params() == {"temperature": 2.0}
    assert resolve("normalized", {"alpha": "1e-3"}).params() == {"alpha": 0.001}
    assert resolve("normalized", {"alpha": None}).params() == {"alpha": 0.0}
    assert resolve("majority", {}).params() == {}
    # A float parameter stays a float (the fit cache's key is its JSON: 2.0, not 2).
    assert isinstance(resolve("softmax", {"temperature": 2}).params()["temperature"], float)
    np.testing.assert_allclose(
        soft_labels(D, "normalized", {"alpha": "1"}), [4 / 7, 2 / 7, 1 / 7], rtol=1e-15
    )


def test_resolve_unknown_method() -> None:
    with pytest.raises(ParamError) as info:
        resolve("mace", {})
    assert info.value.field == "method"
    for name in COUNT_METHODS:
        assert name in info.value.reason
    with pytest.raises(ParamError) as info:
        soft_labels(D, "Normalized")
    assert info.value.field == "method"


@pytest.mark.parametrize(
    ("method", "params", "field"),
    [
        ("normalized", {"beta": 1}, "beta"),
        ("normalized", {"temperature": 1}, "temperature"),
        ("softmax", {"alpha": 1}, "alpha"),
        ("softmax-normalized", {"alpha": "0"}, "alpha"),
        ("normalized", {"alpha": -1}, "alpha"),
        ("normalized", {"alpha": "-1"}, "alpha"),
        ("normalized", {"alpha": "inf"}, "alpha"),
        ("normalized", {"alpha": "nan"}, "alpha"),
        ("normalized", {"alpha": True}, "alpha"),
        ("softmax", {"temperature": 0}, "temperature"),
        ("softmax", {"temperature": "0"}, "temperature"),
        ("softmax", {"temperature": -1.0}, "temperature"),
        ("softmax", {"temperature": "abc"}, "temperature"),
        ("softmax", {"temperature": "nan"}, "temperature"),
        ("softmax", {"temperature": float("inf")}, "temperature"),
        ("softmax-normalized", {"temperature": 0}, "temperature"),
        ("softmax-normalized", {"temperature": ""}, "temperature"),
        ("majority", {"alpha": 0}, "alpha"),
        ("majority", {"temperature": "1"}, "temperature"),
        ("majority", {"k": 1}, "k"),
    ],
)
def test_resolve_rejects(method: str, params: dict[str, object], field: str) -> None:
    with pytest.raises(ParamError) as info:
        resolve(method, params)
    assert info.value.field == field
    with pytest.raises(ParamError):
        soft_labels(D, method, params)
