"""Sequence outputs (B, T, K): the best CTC path, or a given label sequence through the CTC loss."""

from __future__ import annotations

from collections import abc
from dataclasses import dataclass, field, replace

import numpy as np
from array_api_compat import array_namespace, device

from ..errors import UsageError
from .base import Target, _check_batch, _host, softmax


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
        p = softmax(z, 2)
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
