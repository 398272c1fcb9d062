"""What to explain: one target type mapping a batched model output to one scalar per sample.

A target is framework-neutral. It computes with the array namespace of the output it is given
(NumPy, or the framework's own tensors on the model's device; see ``backends.arrays``):

* ``scores(output)``: the (N,) scores being explained, for reports and finite differences;
* ``seed(output)``: d(sum of scores)/d(output), the output-space seed of the vector-Jacobian product.
  Because every score is a function of the output alone, backpropagating this seed from the output
  gives exactly the gradient of the score with respect to anything upstream.

Resolved choices are NumPy until ``on(ops)`` moves them where the model runs, once per explanation,
so that a chunk loop builds its seeds without a copy between host and device.

Data-dependent choices (the predicted class, the predicted-pixel mask) are fixed once by
``resolve(output)`` on the unperturbed input, so finite differences and integration paths explain
the same quantity throughout.

``Custom(fn)`` is the one exception: ``fn`` receives the framework's own output tensor and returns
one score per sample, so it may use any differentiable operation of that framework.
"""

from __future__ import annotations

from collections import abc
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device

from .errors import UsageError


def _per_sample(value: int | abc.Sequence[int] | np.ndarray, n: int, what: str) -> np.ndarray:
    arr = np.asarray(value, dtype=np.int64).reshape(-1)
    if arr.size == 1:
        return np.repeat(arr, n)
    if arr.size != n:
        raise UsageError(f"{what}: got {arr.size} values for a batch of {n}",
                         hint="give one value for all samples or one per sample")
    return arr


def _softmax(z, axis: int):
    xp = array_namespace(z)
    e = xp.exp(z - xp.max(z, axis=axis, keepdims=True))
    return e / xp.sum(e, axis=axis, keepdims=True)


# A class probability above which the softmax is saturated: d p / d logit = p (1 - p) < 1e-4, so the
# gradients of a probability score vanish into float noise (likewise below 1 - SATURATION). The one
# threshold of ``xaiready check``'s saturation check and of the explanation health check. Benchmark CNN
# (32 test inputs): 31 % exceed it (median top p 0.9994), so the health check warns only when a
# probability score is explained; logits are unaffected.
SATURATION = 1 - 1e-4


def _host(a) -> np.ndarray:
    """A small resolved array (class indices) as NumPy, for reports: one copy, after the passes."""
    return a if isinstance(a, np.ndarray) else np.asarray(a.cpu() if hasattr(a, "cpu") else a)


@dataclass(frozen=True)
class Target:
    """Base: subclasses implement ``_resolve``, ``scores`` and ``seed``."""

    framework_fn = None  # only Custom sets it

    @property
    def resolved(self) -> bool:
        """True once data-dependent choices are fixed (see ``resolve``)."""
        return True

    def resolve(self, output: np.ndarray, *, channel_axis: int = 1) -> Target:
        """Fix data-dependent choices against the unperturbed output."""
        return self

    def take(self, index) -> Target:
        """The resolved target for the samples ``index`` (e.g. a batch of IG path points); ``index`` is
        NumPy, or native to the device the target was moved to with ``on``."""
        return self

    def on(self, ops) -> Target:
        """This target with its resolved arrays where ``ops`` (a backend's ArrayOps) keeps arrays."""
        return self

    def scores(self, output: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def seed(self, output: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def describe(self) -> dict[str, Any]:
        raise NotImplementedError


@dataclass(frozen=True)
class Class(Target):
    """Class ``k`` of a classifier's (N, K) output; ``k=None`` means the predicted class.

    ``score`` is ``"logit"`` (the raw output, default), ``"probability"`` (softmax of it) or
    ``"log-probability"``.
    """

    k: int | abc.Sequence[int] | None = None
    score: str = "logit"
    _k: np.ndarray | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        if self.score not in ("logit", "probability", "log-probability"):
            raise UsageError(f"unknown class score '{self.score}'",
                             hint="use logit, probability or log-probability")

    def resolve(self, output, *, channel_axis=1):
        out = _as_2d(output, "Class")
        n, classes = out.shape
        k = out.argmax(axis=1) if self.k is None else _per_sample(self.k, n, "class index")
        if (k < 0).any() or (k >= classes).any():
            raise UsageError(f"class index {k.tolist()} is out of range for {classes} classes",
                             hint=f"use --target 0..{classes - 1}")
        return replace(self, _k=k)

    @property
    def resolved(self):
        return self._k is not None

    def take(self, index):
        return replace(self, _k=self._k[index])

    def on(self, ops):
        return self if self._k is None else replace(self, _k=ops.asarray(self._k, dtype="int64"))

    def _classes(self, out):
        """Each sample's class as an (N, 1) index array in ``out``'s namespace and on its device."""
        if self._k is None:
            raise RuntimeError("Class target used before resolve()")
        _check_batch(self._k.shape[0], out.shape[0])
        xp = array_namespace(out)
        return xp.reshape(xp.asarray(self._k, device=device(out)), (-1, 1))

    def scores(self, output):
        out = _as_2d(output, "Class")
        xp = array_namespace(out)
        out = xp.astype(out, xp.float64)
        if self.score != "logit":
            out = _softmax(out, 1)
        picked = xp.take_along_axis(out, self._classes(out), axis=1)[:, 0]
        return xp.log(picked) if self.score == "log-probability" else picked

    def seed(self, output):
        out = _as_2d(output, "Class")
        xp = array_namespace(out)
        out = xp.astype(out, xp.float64)
        k = self._classes(out)
        onehot = xp.astype(xp.arange(out.shape[1], device=device(out))[None, :] == k, xp.float64)
        if self.score == "logit":
            seed = onehot
        else:
            p = _softmax(out, 1)
            seed = onehot - p  # d log p_k / dz
            if self.score == "probability":
                seed = seed * xp.take_along_axis(p, k, axis=1)  # d p_k / dz = p_k (e_k - p)
        return xp.astype(xp.reshape(seed, output.shape), output.dtype)

    def describe(self):
        k = None if self._k is None else _host(self._k).tolist()
        return {"type": "class", "k": k if k is None or len(set(k)) > 1 else k[0], "score": self.score,
                "chosen": "predicted" if self.k is None else "given"}


@dataclass(frozen=True)
class SegmentationRegion(Target):
    """Sum of class-``k`` scores over a region of a (N, K, H, W) map (channel axis set by layout).

    ``mask=None`` means the pixels predicted as ``k``; if no pixel is, the whole map. ``k=None`` is
    the class with most predicted pixels.
    """

    k: int | None = None
    mask: np.ndarray | None = None
    _k: int | None = field(default=None, repr=False, compare=False)
    _mask: np.ndarray | None = field(default=None, repr=False, compare=False)
    _axis: int = field(default=1, repr=False, compare=False)
    _region: str = field(default="", repr=False, compare=False)

    def resolve(self, output, *, channel_axis=1):
        out = np.asarray(output)
        if out.ndim != 4:
            raise UsageError(f"a segmentation target needs a (N, K, H, W) output, got shape {out.shape}",
                             hint="use --task classification or regression for this model")
        axis = channel_axis % 4
        classes = out.shape[axis]
        if classes == 1:  # binary (text, defect) maps: a threshold, never the argmax of one channel
            k = 0 if self.k is None else int(self.k)
            pred = None
        else:
            pred = out.argmax(axis=axis)  # (N, H, W)
            k = int(np.bincount(pred.reshape(-1), minlength=classes).argmax()) if self.k is None else int(self.k)
        if not 0 <= k < classes:
            raise UsageError(f"class index {k} is out of range for {classes} classes",
                             hint=f"use --target 0..{classes - 1}" if classes > 1 else
                             "a one-channel (binary) map has the one class 0: leave --target out")
        shape = out.shape[:axis] + out.shape[axis + 1:]  # (N, H, W)
        if self.mask is not None:
            mask = np.broadcast_to(np.asarray(self.mask, dtype=out.dtype), shape).copy()
            region = "given mask"
        else:
            if pred is None:
                channel = np.take(out, 0, axis=axis)
                as_prob = bool(np.all(channel >= 0) and np.all(channel <= 1))
                # probability > 0.5: the value itself where the output is already in [0, 1] (a sigmoid
                # applied), else sigmoid(logit) > 0.5, i.e. logit > 0
                mask = (channel > (0.5 if as_prob else 0.0)).astype(out.dtype)
                region = ("pixels with probability > 0.5 (the one-channel output read as probabilities)"
                          if as_prob else "pixels with sigmoid(logit) > 0.5 (the one-channel output read as logits)")
            else:
                mask = (pred == k).astype(out.dtype)
                region = "pixels predicted as k"
            empty = mask.reshape(mask.shape[0], -1).sum(1) == 0
            if empty.any():
                mask[empty] = 1.0
                region += " (whole map where none is)"
        return replace(self, _k=k, _mask=mask, _axis=axis, _region=region)

    @property
    def resolved(self):
        return self._mask is not None

    def take(self, index):
        return replace(self, _mask=self._mask[index])

    def on(self, ops):
        return self if self._mask is None else replace(self, _mask=ops.asarray(self._mask, dtype="float64"))

    def _weights(self, out):
        """float64 weights shaped like ``out``: the mask on channel k, zero elsewhere."""
        if self._mask is None:
            raise RuntimeError("SegmentationRegion target used before resolve()")
        _check_batch(self._mask.shape[0], out.shape[0])
        xp = array_namespace(out)
        mask = xp.astype(xp.asarray(self._mask, device=device(out)), xp.float64)
        onehot = xp.astype(xp.arange(out.shape[self._axis], device=device(out)) == self._k, xp.float64)
        shape = [1, 1, 1, 1]
        shape[self._axis] = out.shape[self._axis]
        return xp.expand_dims(mask, axis=self._axis) * xp.reshape(onehot, tuple(shape))

    def scores(self, output):
        xp = array_namespace(output)
        out = xp.astype(output, xp.float64)
        return xp.sum(xp.reshape(out * self._weights(out), (out.shape[0], -1)), axis=1)

    def seed(self, output):
        xp = array_namespace(output)
        return xp.astype(self._weights(output), output.dtype)

    def describe(self):
        region = self._region or ("given mask" if self.mask is not None else "predicted")
        return {"type": "segmentation-region", "k": self._k if self._k is not None else self.k, "region": region,
                "chosen": "given mask" if self.mask is not None else
                "threshold" if region.startswith("pixels with") else "predicted"}


def _log_softmax(z, axis: int):
    xp = array_namespace(z)
    shifted = z - xp.max(z, axis=axis, keepdims=True)
    return shifted - xp.log(xp.sum(xp.exp(shifted), axis=axis, keepdims=True))


_NEG = -1e30  # log(0) in the CTC recursions: finite, so a log-sum-exp of impossible paths is no NaN


def _lse(*terms):
    """Elementwise log(sum(exp(terms))) of same-shaped float64 arrays."""
    xp = array_namespace(terms[0])
    m = terms[0]
    for t in terms[1:]:
        m = xp.maximum(m, t)
    return m + xp.log(sum(xp.exp(t - m) for t in terms))


@dataclass(frozen=True)
class Sequence(Target):
    """A sequence head's (B, T, K) output (CTC recognisers, captioning heads): one score per sample.

    The class axis is the last; ``time_axis`` is 1 for (B, T, K) (default) or 0 for (T, B, K).
    ``blank`` is the CTC blank class.

    * ``labels=None``: the best path, resolved once on the unperturbed output (``best_t`` = argmax of
      step t). The score is the sum of ``log_softmax(output)[t, best_t]`` over the steps that emit a
      character under CTC's collapse rule: ``best_t`` is not blank and not a repeat of ``best_{t-1}``
      (the first step of each run). A best path that is all blank has no such step; its score is then
      the log-probability of the whole (blank) path, and ``describe()`` says so.
    * ``labels=[3, 1, 4]`` (one label sequence for every sample, or one list per sample): the score is
      ``log p(labels | output)`` = minus the CTC loss (no length normalisation), by the CTC forward
      recursion over all T steps; the seed is its exact derivative (forward-backward posteriors).
    * ``path``: a best path given per sample, (T,) or (N, T), as ``pinned`` fixes it for re-explanations.
    """

    blank: int = 0
    labels: abc.Sequence[int] | abc.Sequence[abc.Sequence[int]] | None = None
    time_axis: int = 1
    path: np.ndarray | None = None
    _path: np.ndarray | None = field(default=None, repr=False, compare=False)  # (N, T) best path
    _steps: np.ndarray | None = field(default=None, repr=False, compare=False)  # (N, T) emitting steps
    _ext: np.ndarray | None = field(default=None, repr=False, compare=False)  # (N, S) blank-extended labels
    _ends: np.ndarray | None = field(default=None, repr=False, compare=False)  # (N, S) final states
    _skip: np.ndarray | None = field(default=None, repr=False, compare=False)  # (N, S) s-2 -> s allowed
    _rule: str = field(default="", repr=False, compare=False)

    def __post_init__(self):
        if self.time_axis not in (0, 1):
            raise UsageError(f"time_axis {self.time_axis}: a sequence output is (B, T, K) (time_axis=1) or "
                             "(T, B, K) (time_axis=0)")
        if self.labels is not None and self.path is not None:
            raise UsageError("give a Sequence target labels or a path, not both")

    def _bt(self, output):
        """``output`` as (B, T, K) in its own namespace."""
        if output.ndim != 3:
            raise UsageError(f"a sequence target needs a (B, T, K) output, got shape {tuple(output.shape)}",
                             hint="use --task classification, segmentation or regression for this model")
        if self.time_axis == 0:
            return array_namespace(output).permute_dims(output, (1, 0, 2))
        return output

    def resolve(self, output, *, channel_axis=1):  # the class axis is always the last
        out = self._bt(np.asarray(output))
        n, steps, classes = out.shape
        if not 0 <= self.blank < classes:
            raise UsageError(f"blank class {self.blank} is out of range for {classes} classes",
                             hint=f"use --blank 0..{classes - 1}")
        if self.labels is not None:
            return self._resolve_labels(n, steps, classes)
        if self.path is not None:
            path = np.asarray(self.path, dtype=np.int64)
            path = np.broadcast_to(path.reshape(-1, path.shape[-1]), (n, path.shape[-1])).copy()
            if path.shape[1] != steps or (path < 0).any() or (path >= classes).any():
                raise UsageError(f"a path of {path.shape[1]} steps does not fit an output of {steps} steps "
                                 f"and {classes} classes")
            rule = "given path"
        else:
            path = out.argmax(axis=2)
            rule = "best path"
        prev = np.concatenate([np.full((n, 1), -1, dtype=np.int64), path[:, :-1]], axis=1)
        steps_mask = ((path != self.blank) & (path != prev)).astype(np.float64)
        empty = steps_mask.sum(1) == 0
        rule += ": log-softmax of the best class at each step that emits (not blank, not a repeat)"
        if empty.any():
            steps_mask[empty] = 1.0
            rule += "; all-blank paths score the whole path's log-probability"
        return replace(self, _path=path, _steps=steps_mask, _rule=rule)

    def _resolve_labels(self, n, steps, classes):
        given = list(self.labels)
        per_sample = [list(given)] if not given or np.ndim(given[0]) == 0 else [list(g) for g in given]
        if len(per_sample) == 1:
            per_sample = per_sample * n
        if len(per_sample) != n:
            raise UsageError(f"labels: got {len(per_sample)} label sequences for a batch of {n}",
                             hint="give one label sequence for all samples or one per sample")
        longest = max(len(seq) for seq in per_sample)
        ext = np.full((n, 2 * longest + 1), self.blank, dtype=np.int64)
        ends = np.zeros(ext.shape, dtype=np.float64)
        for i, seq in enumerate(per_sample):
            seq = [int(c) for c in seq]
            if any(c < 0 or c >= classes for c in seq) or self.blank in seq:
                raise UsageError(f"labels {seq}: each label must be a class 0..{classes - 1} other than the "
                                 f"blank {self.blank}")
            repeats = sum(a == b for a, b in zip(seq, seq[1:], strict=False))
            if len(seq) + repeats > steps:
                raise UsageError(f"labels {seq} need at least {len(seq) + repeats} time steps; the output has "
                                 f"{steps}", hint="the label sequence cannot be aligned to this output")
            ext[i, 1:2 * len(seq):2] = seq
            ends[i, 2 * len(seq)] = 1.0
            if seq:
                ends[i, 2 * len(seq) - 1] = 1.0
        before = np.concatenate([np.full((n, 2), -1, dtype=np.int64), ext], axis=1)[:, :ext.shape[1]]
        skip = ((ext != self.blank) & (ext != before)).astype(np.float64)
        return replace(self, _ext=ext, _ends=ends, _skip=skip,
                       _rule="given labels: log p(labels | output), minus the CTC loss")

    @property
    def resolved(self):
        return self._path is not None or self._ext is not None

    def take(self, index):
        if self._ext is not None:
            return replace(self, _ext=self._ext[index], _ends=self._ends[index], _skip=self._skip[index])
        return replace(self, _path=self._path[index], _steps=self._steps[index])

    def on(self, ops):
        if self._ext is not None:
            return replace(self, _ext=ops.asarray(self._ext, dtype="int64"),
                           _ends=ops.asarray(self._ends, dtype="float64"), _skip=ops.asarray(self._skip, dtype="float64"))
        if self._path is not None:
            return replace(self, _path=ops.asarray(self._path, dtype="int64"),
                           _steps=ops.asarray(self._steps, dtype="float64"))
        return self

    def _fixed(self, out, name):
        if not self.resolved:
            raise RuntimeError("Sequence target used before resolve()")
        a = getattr(self, name)
        _check_batch(a.shape[0], out.shape[0])
        return array_namespace(out).asarray(a, device=device(out))

    # best path: the score and its derivative in closed form
    def _onehot_path(self, z):
        xp = array_namespace(z)
        path = self._fixed(z, "_path")
        if path.shape[1] != z.shape[1]:
            raise ValueError(f"target was resolved for {path.shape[1]} time steps but the output has {z.shape[1]}")
        return xp.astype(xp.arange(z.shape[2], device=device(z))[None, None, :] == path[:, :, None], xp.float64)

    def scores(self, output):
        xp = array_namespace(output)
        z = xp.astype(self._bt(output), xp.float64)
        if self._ext is not None:
            return self._ctc(z)[0]
        picked = xp.sum(_log_softmax(z, 2) * self._onehot_path(z), axis=2)  # (N, T)
        return xp.sum(picked * self._fixed(z, "_steps"), axis=1)

    def seed(self, output):
        xp = array_namespace(output)
        z = xp.astype(self._bt(output), xp.float64)
        p = _softmax(z, 2)
        if self._ext is not None:
            occ = self._ctc(z, backward=True)[1]  # d log p(labels) / d log_softmax(z)
            seed = occ - p * xp.sum(occ, axis=2, keepdims=True)
        else:
            seed = (self._onehot_path(z) - p) * self._fixed(z, "_steps")[:, :, None]
        if self.time_axis == 0:
            seed = xp.permute_dims(seed, (1, 0, 2))
        return xp.astype(seed, output.dtype)

    def _ctc(self, z, backward=False):
        """log p(labels | z) per sample, and with ``backward`` its gradient w.r.t. log_softmax(z) (N, T, K):
        the CTC forward(-backward) recursion in log space over the blank-extended labels."""
        xp = array_namespace(z)
        n, steps, classes = z.shape
        ext, ends, skip = (self._fixed(z, a) for a in ("_ext", "_ends", "_skip"))
        ext = xp.astype(ext, xp.int64)
        size = ext.shape[1]
        y = _log_softmax(z, 2)
        emit = xp.take_along_axis(y, xp.broadcast_to(ext[:, None, :], (n, steps, size)), axis=2)  # (N, T, S)
        neg = xp.full((n, size), _NEG, dtype=xp.float64, device=device(z))
        allowed = skip > 0
        pad = neg[:, :2]

        def shift(a, by):
            return xp.concat([pad[:, :by], a[:, :size - by]], axis=1) if size > by else neg

        start = xp.astype(xp.arange(size, device=device(z)) < 2, xp.float64)[None, :]
        alpha = [xp.where(start > 0, emit[:, 0, :], neg)]
        for t in range(1, steps):
            a = alpha[-1]
            alpha.append(emit[:, t, :] + _lse(a, shift(a, 1), xp.where(allowed, shift(a, 2), neg)))
        last = xp.where(ends > 0, alpha[-1], neg)
        m = xp.max(last, axis=1, keepdims=True)
        logp = (m + xp.log(xp.sum(xp.exp(last - m), axis=1, keepdims=True)))[:, 0]
        if not backward:
            return logp, None

        def unshift(b, by):
            return xp.concat([b[:, by:], pad[:, :by]], axis=1) if size > by else neg

        allowed_from = unshift(skip, 2) > 0  # s -> s+2 allowed
        beta = [xp.where(ends > 0, emit[:, steps - 1, :], neg)]
        for t in range(steps - 2, -1, -1):
            b = beta[-1]
            beta.append(emit[:, t, :] + _lse(b, unshift(b, 1), xp.where(allowed_from, unshift(b, 2), neg)))
        beta = beta[::-1]
        post = xp.exp(xp.stack(alpha, axis=1) + xp.stack(beta, axis=1) - emit - logp[:, None, None])  # (N, T, S)
        onehot = xp.astype(ext[:, :, None] == xp.arange(classes, device=device(z))[None, None, :], xp.float64)
        return logp, xp.matmul(post, onehot)

    def describe(self):
        if self._ext is not None or self.labels is not None:
            labels = list(self.labels)
            return {"type": "sequence", "blank": self.blank, "time_axis": self.time_axis, "chosen": "given labels",
                    "labels": labels, "score": "log p(labels), minus the CTC loss"}
        path = None if self._path is None else _host(self._path).tolist()
        return {"type": "sequence", "blank": self.blank, "time_axis": self.time_axis,
                "chosen": "given path" if self.path is not None else "best path", "path": path,
                "text": None if path is None else [_collapse(p, self.blank) for p in path],
                "score": self._rule or "log-softmax of the best class at each emitting step"}


def _collapse(path, blank: int) -> list[int]:
    """The labels a CTC path reads: repeats merged, then blanks dropped."""
    return [int(c) for i, c in enumerate(path) if c != blank and (i == 0 or c != path[i - 1])]


@dataclass(frozen=True)
class Regression(Target):
    """The raw output value at flat ``index`` of each sample (never a loss against itself)."""

    index: int = 0

    def resolve(self, output, *, channel_axis=1):
        size = int(np.prod(np.shape(output)[1:], dtype=np.int64)) if np.ndim(output) > 1 else 1
        if not 0 <= self.index < size:
            raise UsageError(f"output index {self.index} is out of range for {size} output values",
                             hint=f"use --target 0..{size - 1}")
        return self

    def scores(self, output):
        xp = array_namespace(output)
        out = xp.astype(output, xp.float64)
        return xp.reshape(out, (out.shape[0], -1))[:, self.index]

    def seed(self, output):
        xp = array_namespace(output)
        size = max(1, int(np.prod(output.shape[1:], dtype=np.int64)))
        onehot = xp.astype(xp.arange(size, device=device(output)) == self.index, output.dtype)
        rows = xp.ones((output.shape[0], 1), dtype=output.dtype, device=device(output))
        return xp.reshape(rows * onehot[None, :], output.shape)

    def describe(self):
        return {"type": "regression", "index": self.index}


@dataclass(frozen=True)
class Custom(Target):
    """``fn(output) -> (N,)`` written in the model's framework (e.g. torch ops on a torch tensor)."""

    fn: Callable[[Any], Any] = None
    name: str = "custom"

    def __post_init__(self):
        if not callable(self.fn):
            raise UsageError("Custom target needs a callable fn(output) -> one score per sample")

    @property
    def framework_fn(self):  # noqa: D401 - the backend applies it to its own tensors
        return self.fn

    def scores(self, output):
        raise TypeError("Custom targets are evaluated by the backend on framework tensors")

    seed = scores

    def describe(self):
        return {"type": "custom", "name": self.name}


def pinned(target: Target) -> Target:
    """The resolved choices made explicit, so a method re-resolving on a perturbed input keeps them
    (the class predicted on the clean input, not on each noisy copy)."""
    if isinstance(target, Class) and target.resolved:
        return Class(np.asarray(target._k).tolist(), score=target.score)
    if isinstance(target, SegmentationRegion) and target.resolved:
        return SegmentationRegion(target._k, target._mask)
    if isinstance(target, Sequence) and target._path is not None:
        return Sequence(target.blank, time_axis=target.time_axis, path=_host(target._path))
    return target


def runner_up(target: Target, output) -> Class | None:
    """The class each sample ranks next to the explained one (the top class, where another class is
    explained), resolved on ``output``; None for a target or output that has no other class."""
    if not isinstance(target, Class) or not target.resolved:
        return None
    out = np.asarray(output)
    if out.ndim != 2 or out.shape[1] < 2:
        return None
    order = np.argsort(-out, axis=1)
    other = np.where(order[:, 0] == target._k, order[:, 1], order[:, 0])
    return Class(other.tolist(), score=target.score).resolve(out)


def _check_batch(resolved: int, given: int) -> None:
    if resolved != given:
        raise ValueError(f"target was resolved for {resolved} samples but the output has {given}; "
                         "use target.take(sample_index) for replicated samples")


def _as_2d(output, what: str):
    out = output if hasattr(output, "shape") and hasattr(output, "dtype") else np.asarray(output)
    if out.ndim == 1:
        out = out[:, None]
    if out.ndim != 2:
        raise UsageError(f"a {what} target needs a (N, K) output, got shape {out.shape}",
                         hint="pick another task (--task segmentation|regression) or output (--output)")
    return out


def for_task(task: str, target: int | None, mask: np.ndarray | None = None, *, labels=None,
             blank: int | None = None) -> Target:
    """The default target of a task, as the CLI's ``--task``/``--target``/``--target-text``/``--blank``
    choose it."""
    if task == "classification":
        return Class(target)
    if task == "segmentation":  # a one-channel (binary) map thresholds at probability 0.5
        return SegmentationRegion(target, mask)
    if task == "regression":
        return Regression(0 if target is None else int(target))
    if task == "sequence":
        if target is not None:
            raise UsageError("--target K has no meaning for a sequence output",
                             hint="give the label sequence with --target-text 3,1,4, or leave it out (best path)")
        return Sequence(0 if blank is None else int(blank), labels)
    raise UsageError(f"unknown task '{task}'", hint="use classification, segmentation, regression or sequence")


TASKS = ("classification", "segmentation", "regression", "sequence")


def task_of(target: Target) -> str | None:
    """The task a target explains (None for Custom)."""
    kinds = {Class: "classification", SegmentationRegion: "segmentation", Regression: "regression",
             Sequence: "sequence"}
    return next((task for kind, task in kinds.items() if isinstance(target, kind)), None)


def infer_task(output_shape: tuple[int, ...], *, fallback: str | None = None) -> str:
    """The task read off the output's shape where it is unambiguous: (N, K>1) classification,
    (N,) or (N, 1) regression, 4-D segmentation (a one-channel map is binary segmentation).

    Any other shape, (B, T, K) among them (a sequence head, or regression of a 3-D array?), is the
    user's choice: a UsageError, unless the caller names an explicit ``fallback`` task.
    """
    shape = tuple(int(d) for d in output_shape)
    if len(shape) == 4:
        return "segmentation"
    if len(shape) == 2 and shape[1] > 1:
        return "classification"
    if len(shape) in (1, 2):
        return "regression"
    if fallback is not None:
        return fallback
    raise UsageError(f"the model's output has shape {shape}: choose --task sequence|regression|segmentation",
                     hint="in Python pass a target (xr.targets.Sequence(), Regression(i), ...) or task=")
