"""The scorers of the GPU route, written once against an array module: NumPy on a CPU, CuPy or
PyTorch on a GPU.

They compute what ``catalogue_scorer`` and ``candidate_scorer`` compute (export/onnx_models.py),
from the same weights, read out of the version's ``model.onnx`` initializers
(``user_half_table``, ``artist_chunks`` or ``artist_half_table``, ``out_kernel``,
``out_bias``)::

    score(request, artist) = sum_g weights[g] * (relu(user_half[users[g]] + artist_half[artist])
                                                 . out_kernel + out_bias)

* catalogue: every artist, then the top ``min(max k of the batch, artists)`` on the device, best
  first (artists int64 ``[B, K]``, scores float32 ``[B, K]``);
* candidates: the artists a request names, ``-inf`` where its mask is False (float32 ``[B, C]``).

The artists (or candidates) are walked in slices sized so that the ``[B, G, slice, hidden]``
intermediate stays within a workspace budget. CI runs this very code with NumPy and checks it
against onnxruntime (tests/test_gpu_route.py); the GPU Python-backend model
(``python_gpu_model.py``) runs it with CuPy, or PyTorch where CuPy does not import (CuPy 14 needs
NumPy 2, and the Python backend needs NumPy < 2).

Export copies this file into every version directory (as ``gpu_scorers.py``) beside the runner,
so it imports nothing of the project: NumPy, and ONNX when reading a model file.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

RUNNERS = ("auto", "cupy", "torch", "numpy")
DEFAULT_WORKSPACE_MB = {"numpy": 16, "cupy": 1024, "torch": 1024}


@dataclass(frozen=True)
class ScorerWeights:
    """The split network, as the scorer graphs hold it (float32, on the host)."""

    user_half: np.ndarray  # [users, hidden]: embedding @ the first Dense layer's user half
    artist_half: np.ndarray  # [artists, hidden]: the artist half, hidden bias included
    out_kernel: np.ndarray  # [hidden]
    out_bias: float

    @property
    def shape(self) -> tuple[int, int, int]:
        return self.user_half.shape[0], self.artist_half.shape[0], self.user_half.shape[1]


def read_weights(model: Any) -> ScorerWeights:
    """The weights of a ``catalogue_scorer`` or ``candidate_scorer`` graph (a path to its
    ``model.onnx`` or an ``onnx.ModelProto``); ValueError for any other graph."""
    import onnx
    from onnx import numpy_helper

    proto = model if isinstance(model, onnx.ModelProto) else onnx.load(str(model))
    tables = {t.name: t for t in proto.graph.initializer}

    def get(name: str) -> np.ndarray:
        if name not in tables:
            raise ValueError(f"the graph has no initializer {name!r}: not a scorer graph")
        return numpy_helper.to_array(tables[name])

    if "artist_half_table" in tables:
        artist_half = get("artist_half_table")
    else:  # catalogue_scorer: [chunks, C, H], zero-padded past the last artist
        chunks = get("artist_chunks")
        n_artists = int(get("n_artists").reshape(-1)[0])
        artist_half = chunks.reshape(-1, chunks.shape[-1])[:n_artists]
    user_half = get("user_half_table")
    kernel = get("out_kernel").reshape(-1)
    if artist_half.shape[1] != user_half.shape[1] or kernel.shape[0] != user_half.shape[1]:
        raise ValueError(f"inconsistent hidden sizes: users {user_half.shape}, artists "
                         f"{artist_half.shape}, out_kernel {kernel.shape}")  # fmt: skip
    f32 = lambda a: np.ascontiguousarray(a, dtype=np.float32)  # noqa: E731
    return ScorerWeights(f32(user_half), f32(artist_half), f32(kernel),
                         float(get("out_bias").reshape(-1)[0]))  # fmt: skip


class ArrayModule:
    """The few array operations the scorers need; NumPy and CuPy share this one."""

    def __init__(self, xp: Any, name: str) -> None:
        self.xp, self.name = xp, name

    def describe(self) -> str:
        return self.name

    def to_device(self, a: np.ndarray) -> Any:
        return self.xp.asarray(a)

    def to_host(self, x: Any) -> np.ndarray:
        return x if self.xp is np else self.xp.asnumpy(x)

    def empty(self, shape: tuple[int, ...]) -> Any:
        return self.xp.empty(shape, dtype=self.xp.float32)

    def relu_(self, x: Any) -> Any:
        return self.xp.maximum(x, 0, out=x)

    def sum(self, x: Any, axis: int) -> Any:
        return x.sum(axis=axis)

    def fill_masked(self, x: Any, mask: Any, value: float) -> Any:
        return self.xp.where(mask, x, self.xp.float32(value))

    def topk(self, x: Any, k: int) -> tuple[Any, Any]:
        """The ``k`` largest of each row, best first: (values, indices)."""
        xp, n = self.xp, x.shape[-1]
        if k >= n:
            idx = xp.argsort(-x, axis=-1)
        else:
            idx = xp.sort(xp.argpartition(-x, k - 1, axis=-1)[:, :k], axis=-1)
            idx = xp.take_along_axis(idx, xp.argsort(-xp.take_along_axis(x, idx, -1), -1), -1)
        return xp.take_along_axis(x, idx, axis=-1), idx

    def synchronize(self) -> None:
        if self.xp is not np:
            self.xp.cuda.get_current_stream().synchronize()


class TorchModule(ArrayModule):
    """The same operations on PyTorch tensors, on one CUDA device."""

    def __init__(self, torch: Any, device: Any) -> None:
        super().__init__(torch, "torch")
        self.device = device

    def describe(self) -> str:
        return f"torch {self.xp.__version__} on {self.xp.cuda.get_device_name(self.device)}"

    def to_device(self, a: np.ndarray) -> Any:
        return self.xp.as_tensor(np.ascontiguousarray(a), device=self.device)

    def to_host(self, x: Any) -> np.ndarray:
        return x.cpu().numpy()

    def empty(self, shape: tuple[int, ...]) -> Any:
        return self.xp.empty(shape, dtype=self.xp.float32, device=self.device)

    def relu_(self, x: Any) -> Any:
        return x.clamp_min_(0)

    def sum(self, x: Any, axis: int) -> Any:
        return x.sum(dim=axis)

    def fill_masked(self, x: Any, mask: Any, value: float) -> Any:
        return x.masked_fill(~mask, value)

    def topk(self, x: Any, k: int) -> tuple[Any, Any]:
        return self.xp.topk(x, k, dim=-1, largest=True, sorted=True)

    def synchronize(self) -> None:
        self.xp.cuda.synchronize(self.device)


def array_module(runner: str = "auto", device_id: int = 0) -> ArrayModule:
    """``numpy``, ``cupy``, ``torch`` or ``auto`` (CuPy when it imports and sees a GPU, else
    PyTorch with CUDA); raises RuntimeError when the runner asked for cannot run here."""
    if runner not in RUNNERS:
        raise ValueError(f"unknown runner {runner!r}; choose one of {', '.join(RUNNERS)}")
    if runner == "numpy":
        return ArrayModule(np, "numpy")
    reasons = []
    if runner in ("auto", "cupy"):
        try:
            import cupy

            cupy.cuda.Device(device_id).use()
            cupy.zeros(1).sum()  # fails here, not on the first request, without a usable GPU
            return ArrayModule(cupy, f"cupy {cupy.__version__} on GPU {device_id}")
        except Exception as exc:  # ImportError, a CUDA error, CuPy 14 under NumPy 1...
            reasons.append(f"cupy: {exc!r}")
    if runner in ("auto", "torch"):
        try:
            import torch

            if not torch.cuda.is_available():
                raise RuntimeError("torch sees no CUDA device")
            return TorchModule(torch, torch.device("cuda", device_id))
        except Exception as exc:
            reasons.append(f"torch: {exc!r}")
    raise RuntimeError(f"no GPU array module for runner {runner!r}: {'; '.join(reasons)}")


class GroupScorer:
    """A weighted group of users against artists, on one array module."""

    def __init__(self, weights: ScorerWeights, module: ArrayModule,
                 workspace_mb: float | None = None) -> None:  # fmt: skip
        self.module = module
        self.n_users, self.n_artists, self.hidden = weights.shape
        self.user_half = module.to_device(weights.user_half)
        self.artist_half = module.to_device(weights.artist_half)
        self.out_kernel = module.to_device(weights.out_kernel)
        self.out_bias = float(weights.out_bias)
        mb = workspace_mb or DEFAULT_WORKSPACE_MB.get(module.xp.__name__, 1024)
        self.workspace_bytes = int(mb * 2**20)

    def _step(self, rows: int) -> int:
        """Artists per slice: ``rows x slice x hidden`` float32 within the workspace."""
        return max(1, self.workspace_bytes // (4 * self.hidden * max(rows, 1)))

    def _weighted(self, members: Any, arts: Any, w: Any) -> Any:
        """members ``[B, G, H]``, arts ``[B or 1, C, H]``, w ``[B, G]`` -> ``[B, C]``."""
        act = self.module.relu_(members[:, :, None, :] + arts[:, None, :, :])  # [B, G, C, H]
        col = act @ self.out_kernel  # [B, G, C]
        col += self.out_bias
        col *= w[:, :, None]
        return self.module.sum(col, 1)

    def catalogue(self, users: np.ndarray, weights: np.ndarray,
                  k: np.ndarray) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
        """Top ``min(max(k), artists)`` artists of each row's weighted group, best first."""
        m = self.module
        k_eff = max(0, min(int(k.max()) if k.size else 0, self.n_artists))
        if k_eff == 0:
            return np.zeros((len(users), 0), np.int64), np.zeros((len(users), 0), np.float32)
        values, idx = m.topk(self._every_artist(users, weights), k_eff)
        return m.to_host(idx).astype(np.int64), m.to_host(values).astype(np.float32)

    def scores(self, users: np.ndarray, weights: np.ndarray) -> np.ndarray:
        """Every artist's score for each row's weighted group, ``[B, artists]`` on the host."""
        return self.module.to_host(self._every_artist(users, weights)).astype(np.float32)

    def _every_artist(self, users: np.ndarray, weights: np.ndarray) -> Any:
        m = self.module
        b, g = users.shape
        members = self.user_half[m.to_device(np.asarray(users, np.int64))]
        w = m.to_device(np.asarray(weights, np.float32))
        scores = m.empty((b, self.n_artists))
        step = self._step(b * g)
        for start in range(0, self.n_artists, step):
            stop = min(start + step, self.n_artists)
            scores[:, start:stop] = self._weighted(members, self.artist_half[None, start:stop], w)
        return scores

    def candidates(self, users: np.ndarray, weights: np.ndarray, candidates: np.ndarray,
                   mask: np.ndarray) -> np.ndarray:  # fmt: skip
        """Each row's weighted group scores of its candidates; ``-inf`` where mask is False."""
        m = self.module
        b, g = users.shape
        c = candidates.shape[1]
        members = self.user_half[m.to_device(np.asarray(users, np.int64))]
        arts = self.artist_half[m.to_device(np.asarray(candidates, np.int64))]  # [B, C, H]
        w = m.to_device(np.asarray(weights, np.float32))
        scores = m.empty((b, c))
        step = self._step(b * g)
        for start in range(0, c, step):
            stop = min(start + step, c)
            scores[:, start:stop] = self._weighted(members, arts[:, start:stop], w)
        scores = m.fill_masked(scores, m.to_device(np.asarray(mask, bool)), -np.inf)
        return m.to_host(scores).astype(np.float32)


def load(model: Any, module: ArrayModule, workspace_mb: float | None = None) -> GroupScorer:
    """A scorer for one version's ``model.onnx`` (path or proto) on ``module``."""
    return GroupScorer(read_weights(model), module, workspace_mb)
