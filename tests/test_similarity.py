"""The similar-user lookup shared by offline evaluation and the gateway."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from core.similarity import SimilarityIndex, array_backend, user_vectors
from tests.conftest import community_matrix


def _brute_force(queries: sp.csr_matrix, known: sp.csr_matrix) -> np.ndarray:
    q = user_vectors(queries).toarray()
    k = user_vectors(known).toarray()
    return q @ k.T


def test_query_matches_dense_cosine_and_orders_best_first():
    known = community_matrix(n_users=90, n_artists=60, seed=3)
    queries = community_matrix(n_users=12, n_artists=60, seed=4)
    idx, sims = SimilarityIndex(known).query(queries, n=7)
    dense = _brute_force(queries, known)
    for row in range(queries.shape[0]):
        expected = np.sort(dense[row])[::-1][:7]
        np.testing.assert_allclose(sims[row], expected, rtol=1e-5)
        np.testing.assert_allclose(dense[row, idx[row]], sims[row], rtol=1e-5)


def test_ties_go_to_the_lower_user_index():
    known = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0], [1, 0, 0], [1, 0, 0]], np.float32))
    idx, sims = SimilarityIndex(known).query(sp.csr_matrix(np.array([[3, 0, 0]], np.float32)), 2)
    assert idx.tolist() == [[0, 2]]
    np.testing.assert_allclose(sims, [[1.0, 1.0]])


def test_no_shared_artist_gives_empty_slots_and_exclude_skips_the_user_itself():
    known = sp.csr_matrix(np.array([[1, 0, 0], [1, 1, 0], [0, 0, 0]], np.float32))
    index = SimilarityIndex(known)
    idx, sims = index.query(sp.csr_matrix(np.array([[0, 0, 5]], np.float32)), 3)
    assert idx.tolist() == [[-1, -1, -1]] and sims.tolist() == [[0, 0, 0]]
    idx, _ = index.query(known[[0, 1]], 3, exclude=np.array([0, -1]))
    assert idx[0].tolist() == [1, -1, -1]
    assert idx[1].tolist()[:2] == [1, 0]


def test_query_rejects_a_history_over_other_artists():
    with pytest.raises(ValueError, match="artists"):
        SimilarityIndex(sp.csr_matrix((3, 4), dtype=np.float32)).query(sp.csr_matrix((1, 5)), 2)


def _cuda_device() -> bool:
    try:
        import cupy

        return cupy.cuda.runtime.getDeviceCount() > 0
    except Exception:
        return False


def test_backend_choice_follows_the_machine():
    assert array_backend("cpu").name == "cpu"
    has_gpu = _cuda_device()
    assert array_backend("auto").name == ("gpu" if has_gpu else "cpu")
    if not has_gpu:  # asking for the GPU where there is none is an error, not a silent CPU
        with pytest.raises(ValueError, match="needs CuPy and a CUDA device"):
            array_backend("gpu")
    with pytest.raises(ValueError, match="unknown backend"):
        array_backend("tpu")


class _DeviceArrays:
    """NumPy dressed as CuPy (``asnumpy``; a stable ``argsort`` like CuPy's): runs the device
    branches of the similarity code on a machine without a GPU."""

    def __getattr__(self, name):
        return getattr(np, name)

    @staticmethod
    def asnumpy(a):
        return np.asarray(a)

    @staticmethod
    def argsort(a, axis=-1):
        return np.argsort(a, axis=axis, kind="stable")


def test_the_device_code_path_gives_the_cpu_answers():
    from core.similarity import ArrayBackend

    device = ArrayBackend("gpu", _DeviceArrays(), sp)
    known = community_matrix(n_users=90, n_artists=60, seed=5)
    queries = community_matrix(n_users=9, n_artists=60, seed=6)
    exclude = np.array([0, -1, 2, -1, 4, -1, 6, -1, 8])
    cpu = SimilarityIndex(known).query(queries, 6, exclude=exclude)
    gpu = SimilarityIndex(known, device).query(queries, 6, exclude=exclude)
    np.testing.assert_array_equal(cpu[0], gpu[0])
    np.testing.assert_allclose(cpu[1], gpu[1])


def test_one_row_queries_take_the_fast_path_and_agree_with_the_batched_product():
    plays = community_matrix(n_users=150, n_artists=90, seed=8)
    index = SimilarityIndex(plays[:100])
    batch_idx, batch_sims = index.query(plays[100:], 7)
    for i in range(50):
        idx, sims = index.query(plays[100 + i], 7)
        np.testing.assert_allclose(sims[0], batch_sims[i], rtol=1e-5, atol=1e-6)
        close = np.isclose(sims[0][:, None], sims[0][None, :], rtol=1e-5)
        assert (idx[0] == batch_idx[i]).all() or close.sum() > len(idx[0])  # only ties may swap
