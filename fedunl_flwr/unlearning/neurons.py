"""Neuron attribution (FedCCCU integrated gradients), activation statistics, ranking and zeroing."""

from __future__ import annotations

import math
import operator
from collections.abc import Iterable, Iterator

import numpy as np
import torch
from torch import nn

from fedunl_flwr.models import NeuronSite

Entry = tuple[str, int, float]


def _model_device_dtype(model: nn.Module) -> tuple[torch.device, torch.dtype]:
    """Device and floating dtype of the model's parameters (CPU/float32 when it has none)."""
    for param in model.parameters():
        if param.is_floating_point():
            return param.device, param.dtype
    return torch.device("cpu"), torch.get_default_dtype()


def _sites(model: nn.Module, sites: list[NeuronSite] | None) -> list[NeuronSite]:
    """The requested sites (default: all of the model's), checked, each name once."""
    if sites is None:
        sites = model.neuron_sites()  # type: ignore[operator]
    modules = dict(model.named_modules())
    unique: dict[str, NeuronSite] = {}
    for site in sites:
        if site.name not in modules:
            raise ValueError(f"neuron site {site.name!r} is not a module of the model")
        unique.setdefault(site.name, site)
    return list(unique.values())


def _as_tensor(values: torch.Tensor | np.ndarray) -> torch.Tensor:
    return values if isinstance(values, torch.Tensor) else torch.from_numpy(np.asarray(values))


def _batches(count: int, batch_size: int) -> Iterator[slice]:
    for start in range(0, count, batch_size):
        yield slice(start, min(start + batch_size, count))


def expansion_point(model: nn.Module, site_name: str) -> str | None:
    """The outermost module containing ``site_name`` that is an element of an
    ``nn.Sequential``, or None.

    Such a module's input reaches the rest of the network only through its output, so
    the batch may be repeated at its input (a residual block's shortcut sees the
    repeated rows too); before it, every layer can run on the samples once.
    """
    parts = site_name.split(".")
    modules = dict(model.named_modules())
    for depth in range(1, len(parts)):
        parent = modules[".".join(parts[:depth - 1])] if depth > 1 else model
        if isinstance(parent, nn.Sequential):
            return ".".join(parts[:depth])
    return None


def integrated_gradient_attribution(
    model: nn.Module,
    inputs: torch.Tensor | np.ndarray,
    labels: torch.Tensor | np.ndarray,
    steps: int,
    sites: list[NeuronSite] | None = None,
    batch_size: int = 64,
) -> dict[int, dict[str, np.ndarray]]:
    """Per-class integrated-gradient attribution of every unit (FedCCCU eq. 2-4).

    For a sample ``x`` of class ``c`` and a site with activations ``beta``, the whole
    layer is scaled jointly to ``(j/m) * beta`` for ``j = 1..m`` and
    ``g_j = dP(c|x) / da`` is taken at ``a = (j/m) * beta`` (``P`` = softmax of the
    model's output). The unit's attribution is ``sum_spatial(beta * mean_j g_j)``;
    scores are averaged over the samples of each class. The target class of a sample
    is its own label.

    Each batch of ``B`` samples is repeated ``m`` times (one row per step, a per-row
    scale) so one forward and one backward pass per site and batch give all units
    and all steps; the effective batch is ``batch_size * steps`` rows. The rows are
    repeated at the site's :func:`expansion_point`, so the layers before it run once per
    sample, not ``m`` times (per-row operations: the same numbers). Runs in eval
    mode on the model's device without parameter gradients; the model's mode,
    ``requires_grad`` flags and hooks are restored afterwards.

    Parameters
    ----------
    model : nn.Module
        The model (a ``SiteModel`` unless ``sites`` is given).
    inputs : torch.Tensor | np.ndarray
        Samples, shape ``(N, ...)``.
    labels : torch.Tensor | np.ndarray
        Integer class of each sample, shape ``(N,)``.
    steps : int
        Riemann steps ``m`` (>= 1).
    sites : list[NeuronSite], optional
        Sites to score; default ``model.neuron_sites()``. A repeated site name is
        scored once.
    batch_size : int (default: 64)
        Samples per pass (before the ``steps``-fold repetition).

    Returns
    -------
    dict[int, dict[str, np.ndarray]]
        ``{class: {site name: float64 scores, shape (num_units,)}}`` for every class
        present in ``labels``.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sites = _sites(model, sites)
    modules = dict(model.named_modules())
    device, dtype = _model_device_dtype(model)
    inputs_t, labels_t = _as_tensor(inputs), _as_tensor(labels).long()
    if len(inputs_t) != len(labels_t):
        raise ValueError(f"{len(inputs_t)} inputs but {len(labels_t)} labels")
    if len(labels_t) == 0:
        return {}
    classes = torch.unique(labels_t)  # sorted
    counts = torch.bincount(torch.searchsorted(classes, labels_t), minlength=len(classes))
    sums = {site.name: torch.zeros(len(classes), site.num_units, dtype=torch.float64,
                                   device=device) for site in sites}
    classes_dev = classes.to(device)
    fractions = torch.arange(1, steps + 1, dtype=dtype, device=device) / steps

    was_training = model.training
    grad_flags = [(param, param.requires_grad) for param in model.parameters()]
    captured: dict[str, torch.Tensor] = {}
    expansions = {site.name: expansion_point(model, site.name) for site in sites}

    def scale_hook(_module: nn.Module, _args: object, output: torch.Tensor) -> torch.Tensor:
        beta = output.detach()
        alpha = captured["alpha"].view(-1, *([1] * (beta.dim() - 1)))
        scaled = (beta * alpha).requires_grad_(True)
        captured["beta"], captured["scaled"] = beta, scaled
        return scaled

    try:
        model.eval()
        for param, _ in grad_flags:
            param.requires_grad_(False)
        with torch.enable_grad():
            for part in _batches(len(labels_t), batch_size):
                x = inputs_t[part].to(device=device, dtype=dtype)
                y = labels_t[part].to(device)
                rows = len(y)
                x_rep = x.repeat_interleave(steps, dim=0)
                y_rep = y.repeat_interleave(steps)
                captured["alpha"] = fractions.repeat(rows)
                class_rows = torch.searchsorted(classes_dev, y)
                for site in sites:
                    handles = [modules[site.name].register_forward_hook(scale_hook)]
                    entry = expansions[site.name]
                    if entry is not None:  # the layers before it run on the rows once
                        handles.append(modules[entry].register_forward_pre_hook(
                            lambda _m, args: (args[0].repeat_interleave(steps, dim=0),
                                              *args[1:])))
                    try:
                        probs = torch.softmax(model(x if entry is not None else x_rep),
                                              dim=1)
                    finally:
                        for handle in handles:
                            handle.remove()
                    target = probs.gather(1, y_rep[:, None]).sum()
                    (grad,) = torch.autograd.grad(target, captured["scaled"])
                    shape = (rows, steps, *grad.shape[1:])
                    mean_grad = grad.view(shape).mean(dim=1)
                    beta = captured["beta"].view(shape)[:, 0]
                    att = beta * mean_grad
                    if att.dim() > 2:  # conv units: sum over spatial positions
                        att = att.flatten(2).sum(dim=2)
                    sums[site.name].index_add_(0, class_rows, att.to(torch.float64))
                    captured.pop("scaled"), captured.pop("beta")
    finally:
        captured.clear()
        for param, flag in grad_flags:
            param.requires_grad_(flag)
        model.train(was_training)

    counts_dev = counts.to(device=device, dtype=torch.float64)[:, None]
    means = {name: (total / counts_dev).cpu().numpy() for name, total in sums.items()}
    return {int(c): {name: means[name][row] for name in means}
            for row, c in enumerate(classes.tolist())}


def mean_activations(
    model: nn.Module,
    inputs: torch.Tensor | np.ndarray,
    sites: list[NeuronSite] | None = None,
    batch_size: int = 256,
) -> dict[str, np.ndarray]:
    """Mean post-activation of each unit over samples and spatial positions.

    Parameters
    ----------
    model : nn.Module
        The model (a ``SiteModel`` unless ``sites`` is given); run in eval mode on
        its device, mode restored afterwards.
    inputs : torch.Tensor | np.ndarray
        Samples, shape ``(N, ...)``, ``N >= 1``.
    sites : list[NeuronSite], optional
        Sites to measure; default ``model.neuron_sites()``. A repeated site name is
        measured once.
    batch_size : int (default: 256)
        Samples per forward pass.

    Returns
    -------
    dict[str, np.ndarray]
        ``{site name: float64 means, shape (num_units,)}``.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    sites = _sites(model, sites)
    modules = dict(model.named_modules())
    device, dtype = _model_device_dtype(model)
    inputs_t = _as_tensor(inputs)
    if len(inputs_t) == 0:
        raise ValueError("mean_activations needs at least one input")
    sums = {site.name: torch.zeros(site.num_units, dtype=torch.float64, device=device)
            for site in sites}
    positions = {site.name: 0 for site in sites}

    def make_hook(name: str):
        def hook(_module: nn.Module, _args: object, output: torch.Tensor) -> None:
            flat = output.detach().transpose(0, 1).reshape(output.shape[1], -1)
            sums[name] += flat.to(torch.float64).sum(dim=1)
            positions[name] += flat.shape[1]
        return hook

    was_training = model.training
    handles = []
    try:
        model.eval()
        handles = [modules[site.name].register_forward_hook(make_hook(site.name))
                   for site in sites]
        with torch.no_grad():
            for part in _batches(len(inputs_t), batch_size):
                model(inputs_t[part].to(device=device, dtype=dtype))
    finally:
        for handle in handles:
            handle.remove()
        model.train(was_training)
    return {name: (total / positions[name]).cpu().numpy() for name, total in sums.items()}


def _rank(entries: Iterable[Entry], top_n: int) -> list[Entry]:
    """Top ``top_n`` entries by score, descending; ties by site name, then unit."""
    if top_n < 0:
        raise ValueError(f"top_n must be >= 0, got {top_n}")
    entries = list(entries)
    for site, unit, score in entries:
        if math.isnan(score):
            raise ValueError(f"score of unit {unit} of site {site!r} is NaN")
    return sorted(entries, key=lambda e: (-e[2], e[0], e[1]))[:top_n]


def _entries(stats: dict[str, np.ndarray]) -> Iterator[Entry]:
    for site, values in stats.items():
        for unit, score in enumerate(np.asarray(values, dtype=np.float64).ravel()):
            yield site, unit, float(score)


def top_units(stats: dict[str, np.ndarray], top_n: int) -> list[Entry]:
    """Top-N ``(site, unit, score)`` of one score map, ranked globally across sites.

    Parameters
    ----------
    stats : dict[str, np.ndarray]
        ``{site name: per-unit scores}`` (e.g. ``mean_activations``'s output).
    top_n : int
        How many units to keep (fewer when the map has fewer).

    Returns
    -------
    list[tuple[str, int, float]]
        Sorted by score descending; ties by site name, then unit index.
    """
    return _rank(_entries(stats), top_n)


def top_units_per_class(scores: dict[int, dict[str, np.ndarray]],
                        top_n: int) -> dict[int, list[Entry]]:
    """Top-N ``(site, unit, score)`` per class, ranked globally across the sites.

    Parameters
    ----------
    scores : dict[int, dict[str, np.ndarray]]
        ``integrated_gradient_attribution``'s output.
    top_n : int
        Units kept per class.

    Returns
    -------
    dict[int, list[tuple[str, int, float]]]
        ``{class: entries}``, each list as ``top_units`` orders it.
    """
    return {c: top_units(stats, top_n) for c, stats in scores.items()}


def dominance_ratios(forget_entries: list[Entry],
                     other_clients_entries: list[list[Entry]]) -> list[Entry]:
    """Dominance ratio ``R = S_max_other / S_forget`` of each forgetting-client unit (eq. 5).

    ``S_max_other`` is the largest score of the same ``(site, unit)`` in any other
    client's list, 0 when no other list has it (so a unit only the forgetting
    client ranks gets ``R = 0``; a negative other score gives ``R < 0``). A unit whose
    ``S_forget <= 0`` does not support the forget class and is not dominant: its
    ``R = +inf``. A unit listed twice by the forgetting client keeps its largest score.

    Parameters
    ----------
    forget_entries : list[tuple[str, int, float]]
        The forgetting client's top-N ``(site, unit, score)`` for the forget class.
    other_clients_entries : list[list[tuple[str, int, float]]]
        Each other client's top-N list for the same class.

    Returns
    -------
    list[tuple[str, int, float]]
        ``(site, unit, R)``, one per unit, in descending ``S_forget`` order (ties by
        site name, then unit), the order ``select_dominant_units`` breaks R-ties by.
    """
    forget: dict[tuple[str, int], float] = {}
    for site, unit, score in forget_entries:
        key = (site, int(unit))
        forget[key] = max(float(score), forget.get(key, -math.inf))
    others: dict[tuple[str, int], float] = {}
    for entries in other_clients_entries:
        for site, unit, score in entries:
            key = (site, int(unit))
            others[key] = max(float(score), others.get(key, -math.inf))
    ratios = []
    for site, unit, s_forget in _rank(((s, u, f) for (s, u), f in forget.items()),
                                        len(forget)):
        ratio = others.get((site, unit), 0.0) / s_forget if s_forget > 0 else math.inf
        ratios.append((site, unit, ratio))
    return ratios


def select_dominant_units(ratios: list[Entry], n: int) -> list[tuple[str, int]]:
    """The ``n`` most dominant units: smallest ``R`` first.

    Parameters
    ----------
    ratios : list[tuple[str, int, float]]
        ``dominance_ratios``'s output; ties in ``R`` keep its order (forget score
        descending, then site name, then unit).
    n : int
        Units to select (all when the list is shorter).

    Returns
    -------
    list[tuple[str, int]]
        ``(site, unit)`` pairs to zero.
    """
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    ordered = sorted(enumerate(ratios), key=lambda item: (item[1][2], item[0]))
    return [(site, unit) for _, (site, unit, _ratio) in ordered[:n]]


def zero_units(model: nn.Module, units: Iterable[tuple[str, int]]) -> None:
    """Zero units in place so each outputs exactly zero for every input.

    For each ``(site, unit)``, output channel/row ``unit`` of every module in the
    site's ``zero_modules`` is zeroed: conv/linear ``weight[unit]`` and ``bias[unit]``,
    BatchNorm ``weight[unit]`` and ``bias[unit]`` (BatchNorm then outputs
    ``0 * normalized + 0 = 0`` in eval and training mode; running stats are kept).
    All pairs are checked before any weight changes.

    Parameters
    ----------
    model : nn.Module
        A ``SiteModel``.
    units : Iterable[tuple[str, int]]
        ``(site name, unit index)`` pairs.

    Raises
    ------
    ValueError
        For an unknown site name or a unit index out of range.
    """
    sites = {site.name: site for site in model.neuron_sites()}  # type: ignore[operator]
    modules = dict(model.named_modules())
    checked = []
    for name, unit in units:
        if name not in sites:
            raise ValueError(f"unknown neuron site {name!r}; the model has {sorted(sites)}")
        unit = operator.index(unit)
        if not 0 <= unit < sites[name].num_units:
            raise ValueError(f"unit {unit} out of range for site {name!r} "
                             f"({sites[name].num_units} units)")
        for module_name in sites[name].zero_modules:
            if getattr(modules.get(module_name), "weight", None) is None:
                raise ValueError(f"module {module_name!r} of site {name!r} has no weight "
                                 "to zero")
        checked.append((sites[name], unit))
    with torch.no_grad():
        for site, unit in checked:
            for module_name in site.zero_modules:
                module = modules[module_name]
                module.weight[unit].zero_()
                if getattr(module, "bias", None) is not None:
                    module.bias[unit].zero_()
