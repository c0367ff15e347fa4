"""Confident learning: which given labels out-of-fold class probabilities contradict.

An implementation of Northcutt, Jiang and Chuang, "Confident Learning: Estimating Uncertainty
in Dataset Labels" (JAIR 70, 2021), written from the paper (cleanlab is AGPL-3.0 and not a
dependency). NumPy only; the probabilities must be *out of fold* (from a model that never saw
the example), or memorised labels hide the errors.

1. Per-class thresholds: ``t_j`` = the mean probability of class ``j`` over the examples
   labelled ``j`` (the model's self-confidence on that class).
2. The confident joint ``C[i, j]``: examples labelled ``i`` whose probability of ``j`` reaches
   ``t_j`` (the most probable such class when several do). Examples no class reaches are not
   counted.
3. Label issues, by ``method``:

   - ``"confident_learning"``: the examples off the diagonal of ``C`` (labelled ``i``,
     confidently ``j != i``);
   - ``"prune_by_noise_rate"``: ``C`` calibrated to the class counts estimates how many
     examples labelled ``i`` are really ``j``; for each pair, that many examples labelled
     ``i`` (times ``noise_factor``) with the largest margin ``p_j - p_i`` are flagged;
   - ``"both"``: examples flagged by both rules.

   An example the model predicts as its given label is never flagged.
4. Ranking: by normalised margin, ``p_given - max_(k != given) p_k``; the score
   ``(1 - margin) / 2`` lies in [0, 1], higher = more likely wrong (for two classes it is
   ``1 - p_given``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import numpy.typing as npt

from cvprep.errors import ParameterError

Method = Literal["confident_learning", "prune_by_noise_rate", "both"]
METHODS: tuple[Method, ...] = ("confident_learning", "prune_by_noise_rate", "both")


@dataclass(frozen=True)
class LabelIssues:
    """The examples whose labels look wrong, most likely wrong first.

    Attributes
    ----------
    indices : ndarray of int
        Rows of the probability matrix, ranked by ``scores`` (highest first).
    suggested : ndarray of int
        For each, the class the model believes: its confident class when that is not the
        given one, else the most probable other class.
    scores : ndarray of float
        For each, ``(1 - normalised margin) / 2`` in [0, 1].
    thresholds : ndarray of float
        The per-class self-confidence thresholds ``t_j``.
    joint : ndarray of int
        The confident joint ``C`` (rows: given label, columns: confident class).
    """

    indices: npt.NDArray[np.intp]
    suggested: npt.NDArray[np.intp]
    scores: npt.NDArray[np.float64]
    thresholds: npt.NDArray[np.float64]
    joint: npt.NDArray[np.int64]


def _validated(
    probabilities: npt.ArrayLike, labels: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]:
    probs = np.asarray(probabilities, np.float64)
    given = np.asarray(labels)
    if probs.ndim != 2 or probs.shape[1] < 2:
        raise ParameterError(
            f"`probabilities` should be an N×K matrix with K >= 2. Received shape {probs.shape}"
        )
    if given.shape != (probs.shape[0],) or not np.issubdtype(given.dtype, np.integer):
        raise ParameterError(
            f"`labels` should be {probs.shape[0]} integers. Received shape {given.shape}, "
            f"dtype {given.dtype}"
        )
    if given.size and (given.min() < 0 or given.max() >= probs.shape[1]):
        raise ParameterError(f"`labels` should be in [0, {probs.shape[1] - 1}]")
    if not np.all(np.isfinite(probs)) or probs.min(initial=0) < 0:
        raise ParameterError("`probabilities` should be finite and non-negative")
    return probs, given.astype(np.intp)


def self_confidence_thresholds(
    probabilities: npt.ArrayLike, labels: npt.ArrayLike
) -> npt.NDArray[np.float64]:
    """``t_j``: the mean probability of class ``j`` over the examples labelled ``j``.

    A class without examples gets threshold 1: only a certain prediction counts for it.

    Examples
    --------
    >>> probs = [[0.9, 0.1], [0.7, 0.3], [0.2, 0.8], [0.4, 0.6]]
    >>> self_confidence_thresholds(probs, [0, 0, 1, 1]).round(2).tolist()
    [0.8, 0.7]
    """
    probs, given = _validated(probabilities, labels)
    classes = probs.shape[1]
    sums = np.bincount(given, weights=probs[np.arange(len(given)), given], minlength=classes)
    counts = np.bincount(given, minlength=classes)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 1.0)


def confident_classes(
    probabilities: npt.ArrayLike, thresholds: npt.ArrayLike
) -> npt.NDArray[np.intp]:
    """Per example, the most probable class among those reaching their threshold; -1 when
    none does."""
    probs = np.asarray(probabilities, np.float64)
    # A hair of slack, so that an example exactly at a class's mean counts for it.
    above = probs >= np.asarray(thresholds, np.float64) - 1e-9
    masked = np.where(above, probs, -1.0)
    return np.where(above.any(axis=1), masked.argmax(axis=1), -1)


def confident_joint(
    probabilities: npt.ArrayLike, labels: npt.ArrayLike
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]:
    """The confident joint ``C`` (K×K counts) and the thresholds it used.

    Examples
    --------
    >>> probs = [[0.9, 0.1], [0.8, 0.2], [0.1, 0.9], [0.2, 0.8], [0.95, 0.05]]
    >>> joint, thresholds = confident_joint(probs, [0, 0, 1, 1, 1])  # the last: labelled 1
    >>> thresholds.round(3).tolist()  # row 1 (0.8 < 0.85) reaches no threshold
    [0.85, 0.583]
    >>> joint.tolist()
    [[1, 0], [1, 2]]
    """
    probs, given = _validated(probabilities, labels)
    thresholds = self_confidence_thresholds(probs, given)
    confident = confident_classes(probs, thresholds)
    classes = probs.shape[1]
    counted = confident >= 0
    joint = np.zeros((classes, classes), np.int64)
    np.add.at(joint, (given[counted], confident[counted]), 1)
    return joint, thresholds


def calibrated_joint(joint: npt.ArrayLike, labels: npt.ArrayLike) -> npt.NDArray[np.float64]:
    """``C`` rescaled so each row sums to the number of examples with that label (the
    paper's calibration, Eq. 2); a row without confident examples keeps its label."""
    counts = np.asarray(joint, np.float64)
    classes = counts.shape[0]
    per_label = np.bincount(np.asarray(labels), minlength=classes).astype(np.float64)
    rows = counts.sum(axis=1, keepdims=True)
    calibrated = np.where(rows > 0, counts / np.maximum(rows, 1), np.eye(classes))
    return calibrated * per_label[:, None]


def margin_scores(
    probabilities: npt.ArrayLike, labels: npt.ArrayLike
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.intp]]:
    """Per example: ``(1 - normalised margin) / 2`` in [0, 1] and the most probable other
    class.

    Examples
    --------
    >>> scores, other = margin_scores([[0.9, 0.1], [0.3, 0.7]], [0, 0])
    >>> scores.round(2).tolist(), other.tolist()
    ([0.1, 0.7], [1, 1])
    """
    probs, given = _validated(probabilities, labels)
    rows = np.arange(len(given))
    others = probs.copy()
    others[rows, given] = -np.inf
    other = others.argmax(axis=1)
    margin = probs[rows, given] - probs[rows, other]
    return np.clip((1.0 - margin) / 2.0, 0.0, 1.0), other


def _pruned_by_noise_rate(
    probs: npt.NDArray[np.float64],
    given: npt.NDArray[np.intp],
    joint: npt.NDArray[np.int64],
    noise_factor: float,
) -> npt.NDArray[np.bool_]:
    """For each pair (i, j != i), the round(noise_factor × calibrated C[i, j]) examples
    labelled i with the largest margin p_j - p_i; at least one example of each label is
    kept."""
    flagged = np.zeros(len(given), bool)
    estimate = np.rint(noise_factor * calibrated_joint(joint, given)).astype(np.int64)
    for i in range(probs.shape[1]):
        members = np.flatnonzero(given == i)
        budget = max(0, len(members) - 1)
        for j in range(probs.shape[1]):
            count = min(estimate[i, j], budget) if j != i else 0
            if count <= 0:
                continue
            margin = probs[members, j] - probs[members, i]
            flagged[members[np.argsort(-margin, kind="stable")[:count]]] = True
    return flagged


def find_label_issues(
    probabilities: npt.ArrayLike,
    labels: npt.ArrayLike,
    *,
    method: Method = "confident_learning",
    noise_factor: float = 1.0,
) -> LabelIssues:
    """The examples whose given label the (out-of-fold) probabilities contradict.

    Parameters
    ----------
    probabilities : array_like, shape (N, K)
        Out-of-fold class probabilities (rows need not sum exactly to 1).
    labels : array_like of int, shape (N,)
        The given labels, in [0, K).
    method : {"confident_learning", "prune_by_noise_rate", "both"}
        Which examples are flagged (module docstring).
    noise_factor : float
        ``prune_by_noise_rate`` and ``both`` flag this multiple of the estimated number of
        errors (the paper: 1; below 1 flags fewer, more surely wrong examples).

    Returns
    -------
    LabelIssues
        Flagged rows ranked by score (most likely wrong first), with suggested classes.

    Raises
    ------
    ParameterError
        Shapes or values that are not probabilities and labels, or an unknown ``method``.

    Examples
    --------
    Ten examples of two classes; row 9 is labelled 1 but the model is sure it is a 0:

    >>> probs = np.array([[0.9, 0.1]] * 5 + [[0.2, 0.8]] * 4 + [[0.95, 0.05]])
    >>> labels = np.array([0] * 5 + [1] * 5)
    >>> issues = find_label_issues(probs, labels)
    >>> issues.indices.tolist(), issues.suggested.tolist(), issues.scores.round(2).tolist()
    ([9], [0], [0.95])
    """
    if method not in METHODS:
        raise ParameterError(
            f"`method` should be one of {', '.join(METHODS)}. Received: method={method!r}"
        )
    if not 0 < noise_factor <= 10:
        raise ParameterError(
            f"`noise_factor` should be in (0, 10]. Received: noise_factor={noise_factor}"
        )
    probs, given = _validated(probabilities, labels)
    joint, thresholds = confident_joint(probs, given)
    confident = confident_classes(probs, thresholds)
    off_diagonal = (confident >= 0) & (confident != given)
    if method == "confident_learning":
        flagged = off_diagonal
    else:
        flagged = _pruned_by_noise_rate(probs, given, joint, noise_factor)
        if method == "both":
            flagged &= off_diagonal
    flagged &= probs.argmax(axis=1) != given
    scores, other = margin_scores(probs, given)
    suggested = np.where(off_diagonal, confident, other)
    indices = np.flatnonzero(flagged)
    indices = indices[np.argsort(-scores[indices], kind="stable")]
    return LabelIssues(indices, suggested[indices], scores[indices], thresholds, joint)
