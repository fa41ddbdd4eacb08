"""Request handling shared by the Python-backend runners (``model.py`` on onnxruntime,
``model_gpu.py`` on a GPU): validation, joining a dynamic batch into one computation, and
splitting the answers back, one per request.

Triton hands ``execute`` a list of requests. Each is checked alone: a caller's bad tensors (an id
outside the vocabulary, a non-finite weight, a negative count, different batch sizes) are
answered INVALID_ARG for that request only. The valid ones are joined into one computation,
padding a ragged second dimension with zeros (False for masks), which the scorers' zero weights
and masks ignore; when they cannot be joined (or the joined run fails) each is run alone, and a
failure then is the model's own (INTERNAL). A request's outputs are trimmed to its own width:
its ``k`` (top-K models) or its number of candidates (candidate models), whatever the batch's.
Export copies this file beside the runners (as ``request_batching.py``), so it imports nothing
of the project and nothing of Triton: the runners pass in what touches Triton.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


class InvalidRequest(ValueError):
    """The caller's tensors cannot be scored."""


def read_bounds(manifest_path: str) -> dict[str, int]:
    """Input name -> number of rows its values index (from the version's manifest); raises
    OSError or ValueError for a missing or unreadable manifest."""
    with open(manifest_path) as f:
        manifest = json.load(f)
    return {
        spec["name"]: int(manifest[spec["indexes"]])
        for spec in manifest.get("inputs", [])
        if spec.get("indexes") in ("users", "artists") and spec["indexes"] in manifest
    }


def check(names: Sequence[str], arrays: Sequence[np.ndarray], bounds: dict[str, int]) -> None:
    """Raise :class:`InvalidRequest` for tensors no model could score."""
    rows = {a.shape[0] for a in arrays}
    if len(rows) != 1:
        raise InvalidRequest(f"inputs have different batch sizes {sorted(rows)}")
    for name, a in zip(names, arrays, strict=True):
        if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
            raise InvalidRequest(f"{name} holds non-finite values")
        if a.dtype.kind in "iu" and a.size:
            low, high = int(a.min()), int(a.max())
            bound = bounds.get(name)
            if low < 0 or (bound is not None and high >= bound):
                limit = f"0..{bound - 1}" if bound is not None else ">= 0"
                raise InvalidRequest(f"{name} values must be in {limit}, got {low}..{high}")


def pad_to(parts: Sequence[np.ndarray], width: int) -> list[np.ndarray]:
    """Each ``[rows, w, ...]`` part padded to ``[rows, width, ...]`` with zeros (False for
    booleans); only the second dimension grows."""
    return [
        p
        if p.shape[1] == width
        else np.pad(p, [(0, 0), (0, width - p.shape[1])] + [(0, 0)] * (p.ndim - 2))
        for p in parts
    ]


def join(per_request: Sequence[Sequence[np.ndarray]]) -> list[np.ndarray]:
    """One array per input: the requests' rows stacked, ragged second dimensions padded."""
    joined = []
    for j in range(len(per_request[0])):
        parts = [arrays[j] for arrays in per_request]
        width = max(p.shape[1] for p in parts)
        joined.append(np.concatenate(pad_to(parts, width)))
    return joined


def own_width(names: Sequence[str], arrays: Sequence[np.ndarray]) -> int | None:
    """How many output columns are the request's own: its ``k`` (its largest) for a top-K model,
    its number of candidates for a candidate model (a padded join widens both); None for models
    whose outputs have no such dimension."""
    names = list(names)
    if "k" in names:
        return int(arrays[names.index("k")].max())
    if "candidates" in names:
        return arrays[names.index("candidates")].shape[1]
    return None


def execute(
    per_request: Sequence[Sequence[np.ndarray]],
    names: Sequence[str],
    bounds: dict[str, int],
    run: Callable[[list[np.ndarray]], Sequence[np.ndarray]],
    respond: Callable[[list[np.ndarray]], Any],
    fail: Callable[[str, Exception | None], Any],
) -> list[Any]:
    """Answer one dynamic batch: one response per request, in order.

    ``per_request``: each request's input arrays, in ``names`` order. ``run(joined)`` computes
    the outputs (one row per joined row). ``respond(outputs)`` builds a request's response from
    its own rows and columns (:func:`own_width`); ``fail(message, error)`` an error response:
    ``error`` is the exception when the model failed on valid tensors (INTERNAL), None when the
    caller's tensors were bad (INVALID_ARG)."""
    responses: list[Any] = [None] * len(per_request)
    valid = []
    for i, arrays in enumerate(per_request):
        try:
            check(names, arrays, bounds)
            valid.append(i)
        except InvalidRequest as exc:
            responses[i] = fail(f"invalid request: {exc}", None)

    def answer(arrays: Sequence[np.ndarray], outputs: Sequence[np.ndarray]) -> Any:
        limit = own_width(names, arrays)
        return respond([o if limit is None else o[:, :limit] for o in outputs])

    try:
        results = run(join([per_request[i] for i in valid])) if valid else []
    except Exception:  # ragged shapes the join cannot pad, or the batch failed: one at a time
        for i in valid:
            try:
                responses[i] = answer(per_request[i], run(join([per_request[i]])))
            except Exception as exc:  # valid tensors, so the model itself failed
                responses[i] = fail(f"model error: {exc}", exc)
        return responses
    start = 0
    for i in valid:
        n = per_request[i][0].shape[0]
        responses[i] = answer(per_request[i], [out[start : start + n] for out in results])
        start += n
    return responses


class TritonResponses:
    """``execute`` and its responses, the same for both runners (``model.py``,
    ``model_gpu.py``): a subclass sets ``inputs``, ``outputs``, ``out_dtypes`` and ``bounds``
    in ``initialize`` and defines ``_run(joined)``. ``triton_python_backend_utils`` exists only
    inside Triton, so it is imported when a method first needs it."""

    def execute(self, requests):
        import triton_python_backend_utils as pb_utils

        per_request = [
            [pb_utils.get_input_tensor_by_name(r, name).as_numpy() for name in self.inputs]
            for r in requests
        ]
        return execute(per_request, self.inputs, self.bounds, self._run, self._respond, self._fail)

    def _respond(self, outputs):
        import triton_python_backend_utils as pb_utils

        tensors = [
            pb_utils.Tensor(name, np.ascontiguousarray(part, dtype=dtype))
            for name, dtype, part in zip(self.outputs, self.out_dtypes, outputs, strict=True)
        ]
        return pb_utils.InferenceResponse(output_tensors=tensors)

    @staticmethod
    def _fail(message, error):
        import triton_python_backend_utils as pb_utils

        if error is not None:  # valid tensors, so the model itself failed
            pb_utils.Logger.log_error(f"model error on a valid request: {error!r}")
        code = pb_utils.TritonError.INVALID_ARG if error is None else pb_utils.TritonError.INTERNAL
        return pb_utils.InferenceResponse(
            output_tensors=[], error=pb_utils.TritonError(message, code)
        )
