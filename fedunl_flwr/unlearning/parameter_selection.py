"""Parameter selection and re-initialisation for FedMemEraser and its Table F4 alternatives."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

import torch
from torch import Tensor

from fedunl_flwr.initialization import init_rule, is_buffer_name

__all__ = [
    "RHO_CANDIDATES",
    "SELECTION_STRATEGIES",
    "class_weighted_accuracy",
    "depth_split_index",
    "eligible_parameter_names",
    "reinitialize_parameters",
    "rho_closing_gap",
    "select_depth_parameters",
    "select_localized_parameters",
    "select_parameters",
    "select_redundant_parameters",
    "select_salun_parameters",
    "selection_count",
]

#: Strategy name -> what it selects. ``redundant`` is FedMemEraser (Alg. 1); the others are the
#: Table F4 (App. F.3) comparisons, which need the forgetting clients' gradient.
SELECTION_STRATEGIES: dict[str, str] = {
    "redundant": (
        "FedMemEraser (Alg. 1, step 5): the rho fraction of eligible entries with the smallest "
        "|mean gradient of the remaining clients|, ranked globally over all eligible tensors."
    ),
    "salun": (
        "SalUn selection (App. F.3): the rho fraction of eligible entries with the largest "
        "|gradient of the loss on the forget data|, ranked globally."
    ),
    "localized": (
        "Localized selection (App. F.3, Torkzadehmahani et al. 2024): per layer, the rho fraction "
        "of output channels with the largest score, score = mean of the top-5 |w * g_forget| "
        "entries of the channel; a chosen channel is selected whole."
    ),
    "deep": (
        "Deep-layers selection (App. F.3): SalUn selection restricted to the deep layers, i.e. "
        "the eligible tensors at or after split_index in state-dict order; rho is the fraction "
        "of that part's entries."
    ),
    "shallow": (
        "Shallow-layers selection (App. F.3): SalUn selection restricted to the shallow layers, "
        "i.e. the eligible tensors before split_index in state-dict order; rho is the fraction "
        "of that part's entries."
    ),
}

DepthPart = Literal["deep", "shallow"]


def eligible_parameter_names(
    params: Mapping[str, Tensor], *, include_1d: bool = False
) -> list[str]:
    """Names of the tensors a selection strategy may pick from, in mapping order.

    Parameters
    ----------
    params
        Ordered mapping ``name -> tensor`` (a ``state_dict()`` or ``dict(named_parameters())``).
    include_1d
        Also include floating 1-D tensors (biases, norm weights/biases). The paper's text
        re-initialises conv/linear weights only; the authors' code ranks all tensors
        (run-config ``reset-tensors``).

    Returns
    -------
    list[str]
        Floating-point tensors with ``ndim >= 2`` (conv and linear weights), plus floating 1-D
        tensors when ``include_1d``. Scalars, integer tensors and running statistics
        (names ending in :data:`BUFFER_NAME_SUFFIXES`) are never eligible.
    """
    names: list[str] = []
    for name, tensor in params.items():
        if not torch.is_tensor(tensor):
            raise TypeError(
                f"params[{name!r}] is a {type(tensor).__name__}, expected a torch.Tensor")
        if not tensor.is_floating_point() or is_buffer_name(name):
            continue
        if tensor.ndim >= 2 or (include_1d and tensor.ndim == 1):
            names.append(name)
    return names


def _check_rho(rho: float, what: str = "rho") -> float:
    if isinstance(rho, bool) or not isinstance(rho, (int, float)):
        raise ValueError(f"{what} must be a number in [0, 1], got {rho!r}")
    value = float(rho)
    if not math.isfinite(value) or not 0.0 <= value <= 1.0:
        raise ValueError(f"{what} must be in [0, 1] (a fraction, e.g. 0.4 for 40%), got {rho!r}")
    return value


def selection_count(rho: float, total: int) -> int:
    """Number of entries a fraction ``rho`` of ``total`` selects: ``rho * total`` rounded half up.

    Parameters
    ----------
    rho
        Fraction in [0, 1].
    total
        Number of candidate entries (>= 0).

    Returns
    -------
    int
        ``floor(rho * total + 0.5)``, clipped to ``[0, total]``.

    Raises
    ------
    ValueError
        If ``rho`` is not in [0, 1] or ``total`` is negative.
    """
    value = _check_rho(rho)
    if total < 0:
        raise ValueError(f"total must be >= 0, got {total}")
    return min(total, max(0, math.floor(value * total + 0.5)))


def _resolve_names(
    tensors: Mapping[str, Tensor], names: Sequence[str] | None, include_1d: bool, what: str
) -> list[str]:
    if names is None:
        return eligible_parameter_names(tensors, include_1d=include_1d)
    resolved = list(names)
    missing = [n for n in resolved if n not in tensors]
    if missing:
        raise ValueError(f"{what} has no tensor named {missing[:5]} (asked for in names)")
    if len(set(resolved)) != len(resolved):
        raise ValueError("names contains duplicates")
    return resolved


def _global_rank_masks(
    scores: Mapping[str, Tensor], names: Sequence[str], rho: float, *, largest: bool,
    count: int | None = None,
) -> dict[str, Tensor]:
    """Select ``selection_count(rho, total)`` entries (or ``count``, capped at the total)
    over ``names`` by one global ranking.

    Ties are broken by position in the concatenation of the flattened tensors (in ``names``
    order, row-major inside a tensor): the earlier entry wins, for both directions.
    """
    _check_rho(rho)
    flat = [scores[n].detach().abs().reshape(-1).to("cpu", torch.float64) for n in names]
    sizes = [f.numel() for f in flat]
    total = sum(sizes)
    count = selection_count(rho, total) if count is None else min(count, total)
    chosen = torch.zeros(total, dtype=torch.bool)
    if count > 0:
        values = torch.cat(flat)
        if torch.isnan(values).any():
            raise ValueError("the scores used for ranking contain NaN")
        key = -values if largest else values
        order = torch.argsort(key, stable=True)
        chosen[order[:count]] = True
    masks: dict[str, Tensor] = {}
    for name, part in zip(names, torch.split(chosen, sizes), strict=True):
        tensor = scores[name]
        masks[name] = part.reshape(tensor.shape).to(tensor.device)
    return masks


def select_redundant_parameters(
    grad_stats: Mapping[str, Tensor],
    rho: float,
    names: Sequence[str] | None = None,
    *,
    include_1d: bool = False,
) -> dict[str, Tensor]:
    """FedMemEraser's redundant parameters: the lowest ``rho`` fraction of entries by ``|g|``.

    Parameters
    ----------
    grad_stats
        ``name -> statistic`` with the parameters' shapes: the remaining clients' averaged
        gradient (Alg. 1, step 4) or averaged model update. Its absolute value is ranked.
    rho
        Fraction of eligible entries to select, in [0, 1]. 0 selects none, 1 selects all.
    names
        Tensors to rank over (default: :func:`eligible_parameter_names` of ``grad_stats``).
    include_1d
        Passed to :func:`eligible_parameter_names` when ``names`` is None.

    Returns
    -------
    dict[str, Tensor]
        ``name -> bool mask`` (same shape and device as the statistic) for every ranked name.
        Exactly ``selection_count(rho, total)`` entries are True, chosen by one GLOBAL ranking
        of ``|g|`` ascending over all ranked tensors; ties go to the earlier entry in the
        concatenation of the flattened tensors in ``names`` order.

    Raises
    ------
    ValueError
        If ``rho`` is outside [0, 1], a name is unknown, or the statistic contains NaN.
    """
    ranked = _resolve_names(grad_stats, names, include_1d, "grad_stats")
    return _global_rank_masks(grad_stats, ranked, rho, largest=False)


def select_salun_parameters(
    forget_grad_stats: Mapping[str, Tensor],
    rho: float,
    names: Sequence[str] | None = None,
    *,
    include_1d: bool = False,
) -> dict[str, Tensor]:
    """SalUn-style salient parameters: the highest ``rho`` fraction of entries by ``|g_forget|``.

    App. F.3 of the FedMemEraser paper: "The SalUn Selection selects parameters with the highest
    gradient magnitudes, based on the principles of saliency maps"; these baselines use the
    unlearning data D_u, so the statistic is the gradient of the loss on the forget data
    (Fan et al. 2024 threshold that gradient; here a fraction ``rho`` replaces their threshold so
    that all strategies select comparable amounts).

    Parameters
    ----------
    forget_grad_stats
        ``name -> gradient of the loss on the forget data`` (same shapes as the parameters).
    rho
        Fraction of eligible entries to select, in [0, 1].
    names, include_1d
        As in :func:`select_redundant_parameters`.

    Returns
    -------
    dict[str, Tensor]
        ``name -> bool mask``; exactly ``selection_count(rho, total)`` True entries, chosen by one
        global ranking of ``|g_forget|`` descending; ties go to the earlier entry.

    Raises
    ------
    ValueError
        If ``rho`` is outside [0, 1], a name is unknown, or the gradient contains NaN.
    """
    ranked = _resolve_names(forget_grad_stats, names, include_1d, "forget_grad_stats")
    return _global_rank_masks(forget_grad_stats, ranked, rho, largest=True)


def _channel_scores(weight: Tensor, grad: Tensor, top_k: int) -> Tensor:
    """Mean of the ``top_k`` largest ``|w * g|`` entries of each output channel (row 0 axis)."""
    product = (weight.detach().to("cpu", torch.float64)
               * grad.detach().to("cpu", torch.float64)).abs()
    rows = product.reshape(product.shape[0], -1) if product.ndim >= 2 else product.reshape(-1, 1)
    k = min(top_k, rows.shape[1])
    return torch.topk(rows, k, dim=1).values.mean(dim=1)


def select_localized_parameters(
    weights: Mapping[str, Tensor],
    grads: Mapping[str, Tensor],
    rho: float,
    top_k: int = 5,
    *,
    largest: bool = True,
    names: Sequence[str] | None = None,
    include_1d: bool = False,
) -> dict[str, Tensor]:
    """Localized selection: whole output channels chosen per layer by ``|w * g|``.

    For each ranked tensor, an output channel is a slice along dim 0 (a conv filter, a row of a
    linear weight; for a 1-D tensor, each entry). Its score is the mean of its ``top_k`` largest
    ``|w * g|`` entries (all entries if it has fewer). In EACH tensor, the
    ``selection_count(rho, n_channels)`` channels with the largest score are chosen (App. F.3:
    "chooses channel-wise neurons with the highest magnitude of the weighted gradient");
    ``largest=False`` chooses the smallest instead. Ties go to the lower channel index. A chosen
    channel selects all of its entries.

    Parameters
    ----------
    weights
        ``name -> parameter value`` (the global model).
    grads
        ``name -> gradient`` of the same shapes (for Table F4: the gradient on the forget data).
    rho
        Fraction of channels to choose in every layer, in [0, 1].
    top_k
        Number of largest entries averaged per channel (>= 1).
    largest
        Choose the highest-scoring channels (default, the paper) or the lowest.
    names, include_1d
        As in :func:`select_redundant_parameters` (names default to the eligible ``weights``).

    Returns
    -------
    dict[str, Tensor]
        ``name -> bool mask`` for every ranked name.

    Raises
    ------
    ValueError
        If ``rho`` is outside [0, 1], ``top_k < 1``, a name is missing from either mapping, or
        shapes differ.
    """
    _check_rho(rho)
    if isinstance(top_k, bool) or not isinstance(top_k, int) or top_k < 1:
        raise ValueError(f"top_k must be an integer >= 1, got {top_k!r}")
    ranked = _resolve_names(weights, names, include_1d, "weights")
    masks: dict[str, Tensor] = {}
    for name in ranked:
        if name not in grads:
            raise ValueError(f"grads has no tensor named {name!r}")
        weight, grad = weights[name], grads[name]
        if weight.shape != grad.shape:
            raise ValueError(
                f"shape mismatch for {name!r}: weight {tuple(weight.shape)} "
                f"vs grad {tuple(grad.shape)}"
            )
        if weight.ndim == 0:
            raise ValueError(f"{name!r} is a scalar; it has no output channels")
        scores = _channel_scores(weight, grad, top_k)
        if torch.isnan(scores).any():
            raise ValueError(f"the |w * g| scores of {name!r} contain NaN")
        n_channels = scores.numel()
        count = selection_count(rho, n_channels)
        chosen = torch.zeros(n_channels, dtype=torch.bool)
        if count > 0:
            order = torch.argsort(-scores if largest else scores, stable=True)
            chosen[order[:count]] = True
        view_shape = (n_channels,) + (1,) * (weight.ndim - 1)
        masks[name] = chosen.reshape(view_shape).expand(weight.shape).clone().to(weight.device)
    return masks


def depth_split_index(
    params: Mapping[str, Tensor],
    deep_fraction: float,
    names: Sequence[str] | None = None,
    *,
    include_1d: bool = False,
) -> int:
    """Layer index at which the deep part starts so that it holds a given share of the entries.

    Parameters
    ----------
    params
        Ordered ``name -> tensor`` mapping (only shapes are used).
    deep_fraction
        Share of the eligible entries the deep part must hold, in [0, 1].
    names, include_1d
        Tensors to split (default: the eligible ones, in mapping order).

    Returns
    -------
    int
        The largest ``s`` in ``[0, len(names)]`` such that the tensors ``names[s:]`` hold at least
        ``selection_count(deep_fraction, total)`` entries, i.e. the shortest suffix of layers
        holding that share. ``select_depth_parameters(..., rho=1.0, split_index=s)`` then selects
        those whole layers (``part="deep"``) or all the others (``part="shallow"``).
    """
    ranked = _resolve_names(params, names, include_1d, "params")
    sizes = [params[n].numel() for n in ranked]
    needed = selection_count(deep_fraction, sum(sizes))
    held = 0
    for index in range(len(ranked), 0, -1):
        if held >= needed:
            return index
        held += sizes[index - 1]
    return 0


def select_depth_parameters(
    forget_grad_stats: Mapping[str, Tensor],
    rho: float,
    part: DepthPart,
    *,
    split_index: int | None = None,
    names: Sequence[str] | None = None,
    include_1d: bool = False,
) -> dict[str, Tensor]:
    """Deep- or shallow-layers selection: SalUn ranking restricted to one side of a layer split.

    The ranked tensors ``names`` (default: eligible tensors in state-dict order; every tensor,
    bias or weight, counts as one layer, as in the authors' code) are split at
    ``split_index = s``: the shallow part is ``names[:s]``, the deep part ``names[s:]``. As in
    the authors' code, ``rho`` counts over ALL ranked entries: ``selection_count(rho, n_all)``
    entries (at most the whole part) with the largest ``|g_forget|`` inside the chosen part
    are selected by one ranking over the part (App. F.3: "adopts the selection strategy of
    SalUn but restricts the selection to deep layers"), so both variants reset as many
    entries as the other strategies at the same ``rho`` whenever the part is big enough.
    The other part is never selected (the authors' code then fills up with zero-statistic
    entries of the other part; we cap at the part instead). Combine ``rho=1`` with
    :func:`depth_split_index` to reset "the last layers holding a given share".

    Parameters
    ----------
    forget_grad_stats
        ``name -> gradient on the forget data`` (or any statistic whose magnitude is ranked).
    rho
        Fraction of ALL ranked entries to select (capped at the part's size), in [0, 1].
    part
        ``"deep"`` or ``"shallow"``.
    split_index
        First index of the deep part, in ``[0, len(names)]``. Default ``len(names) // 2`` (the
        first half of the layers is shallow, the rest deep).
    names, include_1d
        As in :func:`select_redundant_parameters`.

    Returns
    -------
    dict[str, Tensor]
        ``name -> bool mask`` for every ranked name (all False outside the part).

    Raises
    ------
    ValueError
        If ``part`` is unknown, ``split_index`` is out of range or leaves the part empty, or
        ``rho`` is outside [0, 1].
    """
    if part not in ("deep", "shallow"):
        raise ValueError(f"part must be 'deep' or 'shallow', got {part!r}")
    _check_rho(rho)
    ranked = _resolve_names(forget_grad_stats, names, include_1d, "forget_grad_stats")
    split = len(ranked) // 2 if split_index is None else split_index
    if isinstance(split, bool) or not isinstance(split, int) or not 0 <= split <= len(ranked):
        raise ValueError(
            f"split_index must be an integer in [0, {len(ranked)}], got {split_index!r}")
    inside = ranked[split:] if part == "deep" else ranked[:split]
    if not inside:
        raise ValueError(
            f"the {part} part is empty: split_index={split} with {len(ranked)} ranked tensors"
        )
    total = sum(forget_grad_stats[n].numel() for n in ranked)
    masks = _global_rank_masks(forget_grad_stats, inside, rho, largest=True,
                               count=selection_count(rho, total))
    result: dict[str, Tensor] = {}
    for name in ranked:
        if name in masks:
            result[name] = masks[name]
        else:
            tensor = forget_grad_stats[name]
            result[name] = torch.zeros(tensor.shape, dtype=torch.bool, device=tensor.device)
    return result


#: Percentile of |statistic| where seed 001 App. H.3 sees the "sharp rise" of importance
#: begin ("within the top few percent of parameters").
ADAPTIVE_KNEE_PERCENTILE: float = 95.0


def adaptive_rho(
    grad_stats: Mapping[str, Tensor],
    names: Sequence[str] | None = None,
    *,
    include_1d: bool = False,
    knee_percentile: float = ADAPTIVE_KNEE_PERCENTILE,
) -> tuple[float, float]:
    """Seed 001 App. H.3's pruning-ratio rule: rho = share of entries an order of
    magnitude below the important ones.

    The importance of an entry is ``|statistic|``. The paper reads the important entries
    off the sharp rise at the top of the sorted importances and calls "the next lower
    order of magnitude" redundant. Here: the knee is the ``knee_percentile`` percentile of
    the importances, its order of magnitude ``10^k`` (``k = floor(log10(knee))``) marks
    the important entries, and the redundant ones are those below ``10^(k-1)``.

    Returns
    -------
    tuple[float, float]
        ``(rho, threshold)``: the fraction of ranked entries below ``threshold = 10^(k-1)``.
    """
    ranked = _resolve_names(grad_stats, names, include_1d, "grad_stats")
    values = torch.cat([grad_stats[n].detach().abs().reshape(-1).to("cpu", torch.float64)
                        for n in ranked])
    if values.numel() == 0:
        raise ValueError("adaptive_rho needs at least one ranked entry")
    knee = float(torch.quantile(values, knee_percentile / 100.0))
    if knee <= 0:
        return 0.0, 0.0
    threshold = 10.0 ** (math.floor(math.log10(knee)) - 1)
    return float((values < threshold).double().mean()), threshold


#: The rhos the request-adaptive rule (``rho-rule = "heldout"``) tries, smallest first:
#: 0 (nothing memorized, plain fine-tuning) to 0.9 in steps of 0.1.
RHO_CANDIDATES: tuple[float, ...] = tuple(round(0.1 * k, 1) for k in range(10))


def class_weighted_accuracy(class_correct: Sequence[float], class_total: Sequence[float],
                            weights: Sequence[float]) -> tuple[float, int]:
    """Accuracy on held-out data re-weighted to another class mix.

    ``sum_c w_c * correct_c / total_c / sum_c w_c`` over the classes that have both a
    weight and held-out samples: the accuracy a model would reach on unseen samples drawn
    with the class mix ``weights`` (e.g. the class counts of the forget data D_u).

    Returns
    -------
    tuple[float, int]
        The accuracy in [0, 1] and the number of held-out samples it rests on (0 and 0
        when no class has both).
    """
    if not len(class_correct) == len(class_total) == len(weights):
        raise ValueError("class_correct, class_total and weights need one entry per class")
    used = [(w, c / t, t) for c, t, w in zip(class_correct, class_total, weights, strict=True)
            if w > 0 and t > 0]
    if not used:
        return 0.0, 0
    mass = sum(w for w, _, _ in used)
    return (sum(w * accuracy for w, accuracy, _ in used) / mass,
            int(sum(t for _, _, t in used)))


def rho_closing_gap(candidates: Sequence[float], forget: Sequence[tuple[float, int]],
                    heldout: Sequence[tuple[float, int]], z: float = 1.0) -> int:
    """Index of the smallest rho whose reset closes the forget data's generalisation gap.

    A model retrained without D_u has never seen it, so it is as accurate on D_u as on
    unseen data of the same classes; the original, which trained on D_u, is more
    accurate on it the more it memorized. Candidate k (``forget[k]`` and ``heldout[k]``:
    accuracy and sample count of the candidate's reset model on D_u and on held-out data
    re-weighted to D_u's classes) closes the gap when
    ``acc_u - acc_h <= z * sqrt(a(1-a)/n_u + a(1-a)/n_h)`` with ``a`` the pooled
    accuracy: within ``z`` standard errors of the difference of two proportions.

    Returns
    -------
    int
        The first candidate (in the given, increasing order) that closes the gap; the
        last one when none does.
    """
    if not candidates or not len(candidates) == len(forget) == len(heldout):
        raise ValueError("rho_closing_gap needs one forget and one heldout accuracy per "
                         "candidate")
    if list(candidates) != sorted(candidates):
        raise ValueError(f"rho candidates must increase, got {list(candidates)}")
    for k, ((acc_u, n_u), (acc_h, n_h)) in enumerate(zip(forget, heldout, strict=True)):
        if n_u <= 0 or n_h <= 0:
            raise ValueError(f"candidate rho {candidates[k]}: no forget or held-out samples")
        pooled = (acc_u * n_u + acc_h * n_h) / (n_u + n_h)
        error = math.sqrt(pooled * (1 - pooled) * (1 / n_u + 1 / n_h))
        if acc_u - acc_h <= z * error:
            return k
    return len(candidates) - 1


def reinitialize_parameters(
    params: Mapping[str, Tensor],
    masks: Mapping[str, Tensor],
    generator: torch.Generator,
    scheme: str = "pytorch",
) -> dict[str, Tensor]:
    """Re-draw the masked entries from the tensor's own initialisation (Alg. 1, step 6).

    For every name in ``params`` (in mapping order) that has a mask, a full tensor of the
    parameter's shape is drawn from its rule under ``scheme``
    (:func:`fedunl_flwr.initialization.init_rule`: the distribution the model was built
    from) using ``generator``, and the entries under the mask take those values. Drawing
    the full shape makes the value an entry receives independent of which other entries
    are masked.

    Parameters
    ----------
    params
        Ordered ``name -> tensor`` mapping (not modified).
    masks
        ``name -> bool tensor`` of the parameter's shape; names without a mask are copied.
    generator
        Source of randomness (a stream independent of the model's initialisation).
    scheme
        The model's initialisation scheme (run-config ``model-init``).

    Returns
    -------
    dict[str, Tensor]
        NEW tensors for every name in ``params``; unmasked entries are bit-for-bit copies.

    Raises
    ------
    ValueError
        If a mask names an unknown tensor, has the wrong shape or dtype, or selects entries
        of a tensor without an initialisation rule (running statistics, integer, scalar).
    """
    unknown = [name for name in masks if name not in params]
    if unknown:
        raise ValueError(f"masks name tensors that params lacks: {unknown[:5]}")
    result: dict[str, Tensor] = {}
    for name, tensor in params.items():
        copy = tensor.detach().clone()
        mask = masks.get(name)
        if mask is not None:
            if mask.dtype != torch.bool:
                raise ValueError(f"mask for {name!r} must be a bool tensor, got {mask.dtype}")
            if mask.shape != tensor.shape:
                raise ValueError(
                    f"mask for {name!r} has shape {tuple(mask.shape)}, "
                    f"the tensor {tuple(tensor.shape)}"
                )
            rule = init_rule(name, params, scheme)
            if rule is None:
                if bool(mask.any()):
                    raise ValueError(
                        f"{name!r} ({tensor.dtype}, ndim {tensor.ndim}) cannot be re-drawn")
            else:
                fresh = rule.draw(tensor.shape, generator).to(tensor.device, tensor.dtype)
                copy = torch.where(mask.to(tensor.device), fresh, copy)
        result[name] = copy
    return result


def select_parameters(
    strategy: str,
    *,
    rho: float,
    grad_stats: Mapping[str, Tensor] | None = None,
    weights: Mapping[str, Tensor] | None = None,
    forget_grad_stats: Mapping[str, Tensor] | None = None,
    include_1d: bool = False,
    top_k: int = 5,
    split_index: int | None = None,
) -> dict[str, Tensor]:
    """Select parameters with one of :data:`SELECTION_STRATEGIES`.

    Parameters
    ----------
    strategy
        ``"redundant"`` (needs ``grad_stats``), ``"salun"`` (needs ``forget_grad_stats``),
        ``"localized"`` (needs ``weights`` and ``forget_grad_stats``), ``"deep"`` / ``"shallow"``
        (need ``forget_grad_stats``; ``split_index`` as in :func:`select_depth_parameters`).
    rho
        Selection fraction in [0, 1] (meaning per strategy: see :data:`SELECTION_STRATEGIES`).
    grad_stats
        Remaining clients' averaged gradient or update.
    weights
        Global model parameters.
    forget_grad_stats
        Gradient of the loss on the forget data.
    include_1d
        Also rank 1-D tensors (biases, norm parameters).
    top_k
        Entries averaged per channel by ``"localized"``.
    split_index
        Layer split for ``"deep"`` / ``"shallow"``.

    Returns
    -------
    dict[str, Tensor]
        ``name -> bool mask``, ready for :func:`reinitialize_parameters`.

    Raises
    ------
    ValueError
        On an unknown strategy (the message lists the valid names), a missing required input,
        or invalid ``rho``.
    """
    if strategy not in SELECTION_STRATEGIES:
        valid = ", ".join(sorted(SELECTION_STRATEGIES))
        raise ValueError(f"unknown selection strategy {strategy!r}; valid strategies: {valid}")
    _check_rho(rho)
    if strategy == "redundant":
        if grad_stats is None:
            raise ValueError("strategy 'redundant' needs grad_stats (remaining clients' gradient)")
        return select_redundant_parameters(grad_stats, rho, include_1d=include_1d)
    if forget_grad_stats is None:
        raise ValueError(
            f"strategy {strategy!r} needs forget_grad_stats (gradient on the forget data)")
    if strategy == "salun":
        return select_salun_parameters(forget_grad_stats, rho, include_1d=include_1d)
    if strategy == "localized":
        if weights is None:
            raise ValueError("strategy 'localized' needs weights (the global model's parameters)")
        return select_localized_parameters(
            weights, forget_grad_stats, rho, top_k=top_k, include_1d=include_1d
        )
    part: DepthPart = "deep" if strategy == "deep" else "shallow"
    return select_depth_parameters(
        forget_grad_stats, rho, part, split_index=split_index, include_1d=include_1d
    )
