"""Tests of the FedMemEraser parameter selection strategies and re-initialisation."""

from __future__ import annotations

import math

import pytest
import torch

from fedunl_flwr.initialization import init_rule
from fedunl_flwr.unlearning.parameter_selection import (
    RHO_CANDIDATES,
    SELECTION_STRATEGIES,
    adaptive_rho,
    class_weighted_accuracy,
    depth_split_index,
    eligible_parameter_names,
    reinitialize_parameters,
    rho_closing_gap,
    select_depth_parameters,
    select_localized_parameters,
    select_parameters,
    select_redundant_parameters,
    select_salun_parameters,
    selection_count,
)


def two_layer_grads() -> dict[str, torch.Tensor]:
    """Two weight tensors (10 entries in all) plus a bias that must be ignored by default."""
    return {
        "conv.weight": torch.tensor([[0.5, -0.05], [0.9, 0.02]]),  # 4 entries
        "conv.bias": torch.tensor([0.0, 0.0]),
        "fc.weight": torch.tensor([[-0.01, 0.7, 0.03], [0.8, -0.04, 0.6]]),  # 6 entries
    }


def test_eligible_names_exclude_1d_scalars_and_buffers_by_default() -> None:
    params = {
        "conv.weight": torch.zeros(4, 3, 3, 3),
        "conv.bias": torch.zeros(4),
        "bn.weight": torch.zeros(4),
        "bn.running_mean": torch.zeros(4),
        "bn.running_var": torch.ones(4),
        "bn.num_batches_tracked": torch.tensor(3),
        "fc.weight": torch.zeros(2, 4),
    }
    assert eligible_parameter_names(params) == ["conv.weight", "fc.weight"]
    assert eligible_parameter_names(params, include_1d=True) == [
        "conv.weight",
        "conv.bias",
        "bn.weight",
        "fc.weight",
    ]


def test_redundant_selects_lowest_entries_globally_across_tensors() -> None:
    grads = two_layer_grads()
    # |g| over the 10 weight entries: 0.5 .05 .9 .02 | .01 .7 .03 .8 .04 .6
    # the 4 smallest (rho = 0.4): .01 (fc), .02 (conv), .03 (fc), .04 (fc)
    masks = select_redundant_parameters(grads, 0.4)
    assert set(masks) == {"conv.weight", "fc.weight"}
    assert masks["conv.weight"].tolist() == [[False, False], [False, True]]
    assert masks["fc.weight"].tolist() == [[True, False, True], [False, True, False]]
    assert masks["conv.weight"].dtype == torch.bool


def test_redundant_count_is_exact_and_ties_go_to_earlier_entries() -> None:
    grads = {"a.weight": torch.ones(2, 2), "b.weight": torch.ones(3, 2)}
    masks = select_redundant_parameters(grads, 0.3)  # round(0.3 * 10) = 3 of 10 equal values
    assert masks["a.weight"].tolist() == [[True, True], [True, False]]
    assert not masks["b.weight"].any()


def test_rho_zero_one_and_out_of_range() -> None:
    grads = two_layer_grads()
    assert not any(m.any() for m in select_redundant_parameters(grads, 0.0).values())
    assert all(m.all() for m in select_redundant_parameters(grads, 1.0).values())
    for bad in (-0.1, 1.5, float("nan")):
        with pytest.raises(ValueError, match="rho"):
            select_redundant_parameters(grads, bad)


def test_selection_count_rounds_half_up() -> None:
    assert selection_count(0.25, 10) == 3
    assert selection_count(0.3, 10) == 3
    assert selection_count(0.0, 7) == 0
    assert selection_count(1.0, 7) == 7


def test_include_1d_ranks_biases_too() -> None:
    grads = two_layer_grads()
    masks = select_redundant_parameters(grads, 0.25, include_1d=True)  # 3 of 12 entries
    # the two zero biases are the smallest, then .01 in fc
    assert masks["conv.bias"].tolist() == [True, True]
    assert masks["fc.weight"].tolist() == [[True, False, False], [False, False, False]]
    assert not masks["conv.weight"].any()


def test_salun_selects_largest_forget_gradient_entries() -> None:
    grads = two_layer_grads()
    masks = select_salun_parameters(grads, 0.3)  # the 3 largest |g|: .9 (conv), .8, .7 (fc)
    assert masks["conv.weight"].tolist() == [[False, False], [True, False]]
    assert masks["fc.weight"].tolist() == [[False, True, False], [True, False, False]]


def test_localized_picks_channels_per_layer() -> None:
    weights = {
        "conv.weight": torch.ones(4, 1, 2, 3),  # 4 channels of 6 entries
        "fc.weight": torch.ones(2, 3),
    }
    conv_grad = torch.zeros(4, 1, 2, 3)
    conv_grad[0].fill_(1.0)  # score 1.0
    conv_grad[1].view(-1)[:] = torch.tensor([10.0, 0, 0, 0, 0, 0])  # top-5 mean 2.0
    conv_grad[2].fill_(0.1)  # score 0.1
    conv_grad[3].view(-1)[:] = torch.tensor([3.0, 3.0, 3.0, 0, 0, 0])  # top-5 mean 1.8
    grads = {"conv.weight": conv_grad,
             "fc.weight": torch.tensor([[0.1, 0.2, 0.3], [1.0, 1.0, 1.0]])}
    masks = select_localized_parameters(weights, grads, 0.5)
    # conv: 2 of 4 channels with the highest score -> channels 1 (2.0) and 3 (1.8)
    chosen_conv = [bool(masks["conv.weight"][c].all()) for c in range(4)]
    assert chosen_conv == [False, True, False, True]
    assert masks["conv.weight"].sum().item() == 12  # whole channels
    # fc: 1 of 2 rows -> row 1 (mean 1.0 vs 0.2)
    assert masks["fc.weight"].tolist() == [[False, False, False], [True, True, True]]
    low = select_localized_parameters(weights, grads, 0.5, largest=False)
    assert [bool(low["conv.weight"][c].all()) for c in range(4)] == [True, False, True, False]


def test_localized_uses_weight_times_gradient() -> None:
    weights = {"fc.weight": torch.tensor([[10.0, 10.0], [1.0, 1.0]])}
    grads = {"fc.weight": torch.tensor([[0.1, 0.1], [0.5, 0.5]])}  # |w*g|: 1.0 vs 0.5
    masks = select_localized_parameters(weights, grads, 0.5)
    assert masks["fc.weight"].tolist() == [[True, True], [False, False]]


def layered_grads() -> dict[str, torch.Tensor]:
    return {
        "l0.weight": torch.tensor([[0.9, 0.1]]),  # 2 entries
        "l1.weight": torch.tensor([[0.2, 0.8]]),  # 2 entries
        "l2.weight": torch.tensor([[0.3, 0.7, 0.5]]),  # 3 entries
        "l3.weight": torch.tensor([[0.4, 0.6, 0.05]]),  # 3 entries
    }


def test_deep_and_shallow_rank_inside_their_part_only() -> None:
    """Defect 1j: rho counts over ALL ranked entries (10 here), as in the authors' code."""
    grads = layered_grads()
    deep = select_depth_parameters(grads, 0.3, "deep")  # default split 2: l2, l3 (6 entries)
    assert not deep["l0.weight"].any() and not deep["l1.weight"].any()
    assert deep["l2.weight"].tolist() == [[False, True, True]]  # 3 = 0.3 * 10 largest: .7 .6 .5
    assert deep["l3.weight"].tolist() == [[False, True, False]]
    assert int(sum(m.sum() for m in deep.values())) == 3
    shallow = select_depth_parameters(grads, 0.3, "shallow")  # l0, l1 (4 entries): .9 .8 .2
    assert shallow["l0.weight"].tolist() == [[True, False]]
    assert shallow["l1.weight"].tolist() == [[True, True]]
    assert not shallow["l2.weight"].any() and not shallow["l3.weight"].any()
    # 0.5 * 10 = 5 entries exceed the shallow part (4): the part is capped, never overflows
    capped = select_depth_parameters(grads, 0.5, "shallow")
    assert int(sum(m.sum() for m in capped.values())) == 4


def test_depth_split_index_and_whole_layer_selection() -> None:
    grads = layered_grads()  # sizes 2, 2, 3, 3 (10 entries)
    assert depth_split_index(grads, 0.3) == 3  # l3 alone holds 3 >= 3
    assert depth_split_index(grads, 0.4) == 2  # l2 + l3 hold 6 >= 4
    assert depth_split_index(grads, 0.0) == 4
    assert depth_split_index(grads, 1.0) == 0
    deep = select_depth_parameters(grads, 1.0, "deep", split_index=3)
    assert [bool(m.all()) for m in deep.values()] == [False, False, False, True]
    shallow = select_depth_parameters(grads, 1.0, "shallow", split_index=3)
    assert [bool(m.all()) for m in shallow.values()] == [True, True, True, False]
    with pytest.raises(ValueError, match="empty"):
        select_depth_parameters(grads, 0.5, "deep", split_index=4)
    with pytest.raises(ValueError, match="split_index"):
        select_depth_parameters(grads, 0.5, "deep", split_index=5)
    with pytest.raises(ValueError, match="part"):
        select_depth_parameters(grads, 0.5, "middle")  # type: ignore[arg-type]


def test_reinitialize_touches_only_masked_entries() -> None:
    gen = torch.Generator().manual_seed(1)
    params = {
        "conv.weight": torch.randn(16, 8, 3, 3, generator=gen) * 10,  # far outside the bound
        "conv.bias": torch.randn(16, generator=gen) * 10,
        "bn.num_batches_tracked": torch.tensor(7),
    }
    masks = {
        "conv.weight": torch.rand(16, 8, 3, 3, generator=gen) < 0.4,
        "conv.bias": torch.tensor([True, False] * 8),
    }
    originals = {k: v.clone() for k, v in params.items()}
    new = reinitialize_parameters(params, masks, torch.Generator().manual_seed(123),
                                  "kaiming-relu")
    for name, tensor in params.items():
        assert torch.equal(tensor, originals[name])  # inputs untouched
        assert new[name] is not tensor
    for name, mask in masks.items():
        keep = ~mask
        assert torch.equal(new[name][keep], params[name][keep])  # bit-identical
        redrawn = new[name][mask]
        rule = init_rule(name, params, "kaiming-relu")
        assert rule is not None
        bound = rule.bound
        assert redrawn.abs().max().item() <= bound
        assert not torch.equal(redrawn, params[name][mask])
    assert new["conv.bias"][masks["conv.bias"]].abs().max().item() <= 0.1
    assert torch.equal(new["bn.num_batches_tracked"], torch.tensor(7))


def test_reinitialize_variance_is_uniform_variance() -> None:
    params = {"fc.weight": torch.zeros(512, 400)}
    masks = {"fc.weight": torch.ones(512, 400, dtype=torch.bool)}
    new = reinitialize_parameters(params, masks, torch.Generator().manual_seed(0), "kaiming-relu")
    bound = math.sqrt(6 / 400)
    variance = new["fc.weight"].double().var().item()
    assert variance == pytest.approx(bound**2 / 3, rel=0.02)
    assert abs(new["fc.weight"].double().mean().item()) < 0.01 * bound


def test_reinitialize_is_deterministic_per_seed() -> None:
    params = {"fc.weight": torch.zeros(20, 10), "fc.bias": torch.zeros(20)}
    masks = {"fc.weight": torch.ones(20, 10, dtype=torch.bool),
             "fc.bias": torch.ones(20, dtype=torch.bool)}
    first = reinitialize_parameters(params, masks, torch.Generator().manual_seed(5))
    second = reinitialize_parameters(params, masks, torch.Generator().manual_seed(5))
    third = reinitialize_parameters(params, masks, torch.Generator().manual_seed(6))
    assert all(torch.equal(first[k], second[k]) for k in params)
    assert not torch.equal(first["fc.weight"], third["fc.weight"])


def test_reinitialize_rejects_bad_masks() -> None:
    params = {"fc.weight": torch.zeros(2, 2)}
    gen = torch.Generator().manual_seed(0)
    with pytest.raises(ValueError, match="shape"):
        reinitialize_parameters(params, {"fc.weight": torch.ones(3, dtype=torch.bool)}, gen)
    with pytest.raises(ValueError, match="lacks"):
        reinitialize_parameters(params, {"other": torch.ones(2, 2, dtype=torch.bool)}, gen)


def test_dispatcher_routes_and_validates() -> None:
    grads = two_layer_grads()
    assert set(SELECTION_STRATEGIES) == {"redundant", "salun", "localized", "deep", "shallow"}
    by_name = select_parameters("redundant", rho=0.4, grad_stats=grads)
    direct = select_redundant_parameters(grads, 0.4)
    assert all(torch.equal(by_name[k], direct[k]) for k in direct)
    salun = select_parameters("salun", rho=0.3, forget_grad_stats=grads)
    assert salun["conv.weight"].tolist() == [[False, False], [True, False]]
    with pytest.raises(ValueError,
                       match="valid strategies: deep, localized, redundant, salun, shallow"):
        select_parameters("magnitude", rho=0.3, grad_stats=grads)
    with pytest.raises(ValueError, match="grad_stats"):
        select_parameters("redundant", rho=0.3)
    with pytest.raises(ValueError, match="forget_grad_stats"):
        select_parameters("salun", rho=0.3, grad_stats=grads)
    with pytest.raises(ValueError, match="weights"):
        select_parameters("localized", rho=0.3, forget_grad_stats=grads)
    with pytest.raises(ValueError, match="rho"):
        select_parameters("redundant", rho=2.0, grad_stats=grads)


def test_selection_then_reinit_on_a_real_model() -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.LazyLinear(10),
    )
    model(torch.zeros(2, 3, 6, 6))
    # Clones: load_state_dict below writes into the model's tensors, which a plain
    # state_dict() would share, so the final comparison could not fail.
    state = {k: v.clone() for k, v in model.state_dict().items()}
    grads = {k: torch.randn_like(v) for k, v in state.items() if v.is_floating_point()}
    masks = select_parameters("redundant", rho=0.3, grad_stats=grads)
    assert set(masks) == {"0.weight", "4.weight"}
    total = sum(state[k].numel() for k in masks)
    assert sum(int(m.sum()) for m in masks.values()) == selection_count(0.3, total)
    # Not seed 0: the model drew its weights from the global RNG seeded 0 with the same
    # bound, and a reset on that stream would give back exactly the initial values.
    new = reinitialize_parameters(state, masks, torch.Generator().manual_seed(1))
    model.load_state_dict(new)
    after = model.state_dict()
    assert torch.equal(after["1.running_var"], state["1.running_var"])
    assert torch.equal(after["1.weight"], state["1.weight"])  # unranked 1-D tensor kept
    changed = ~torch.isclose(after["0.weight"], state["0.weight"])
    assert torch.equal(changed, masks["0.weight"])  # exactly the selected entries moved
    # With reset-tensors 'all' the BatchNorm affine entries are ranked too (not its buffers).
    masks_all = select_parameters("redundant", rho=0.3, grad_stats=grads, include_1d=True)
    assert set(masks_all) == {"0.weight", "0.bias", "1.weight", "1.bias", "4.weight", "4.bias"}


def test_adaptive_rho_takes_the_order_below_the_knee() -> None:
    # 100 entries: 90 tiny (1e-8), 5 at 3e-6, 5 important at 2e-5. P95 interpolates to
    # about 3.9e-6: the knee's order is 1e-6, so redundant means below 1e-7: the 90 tiny.
    values = torch.tensor([1e-8] * 90 + [3e-6] * 5 + [2e-5] * 5)
    rho, threshold = adaptive_rho({"w.weight": values.reshape(10, 10)})
    knee = float(torch.quantile(values.double(), 0.95))
    assert threshold == pytest.approx(10.0 ** (math.floor(math.log10(knee)) - 1))
    assert rho == pytest.approx(0.9)
    flat = torch.full((10, 10), 1e-3)
    assert adaptive_rho({"w.weight": flat}) == (0.0, pytest.approx(1e-4))
    assert adaptive_rho({"w.weight": torch.zeros(3, 3)}) == (0.0, 0.0)


def test_class_weighted_accuracy_reweights_held_out_classes_to_the_forget_mix() -> None:
    # Held-out: class 0 at 9/10, class 1 at 1/10, class 2 at 5/10. D_u holds 30 of class
    # 0, 10 of class 1, none of class 2: (30 * 0.9 + 10 * 0.1) / 40 = 0.7, over 20 samples.
    assert class_weighted_accuracy([9, 1, 5], [10, 10, 10], [30, 10, 0]) == (
        pytest.approx(0.7), 20)
    # A class D_u holds but the held-out data lacks drops out of the weights.
    assert class_weighted_accuracy([9, 0], [10, 0], [1, 5]) == (pytest.approx(0.9), 10)
    assert class_weighted_accuracy([0, 0], [0, 0], [1, 1]) == (0.0, 0)
    with pytest.raises(ValueError, match="one entry per class"):
        class_weighted_accuracy([1], [2, 3], [1, 1])


def test_rho_closing_gap_takes_the_first_candidate_within_one_standard_error() -> None:
    # 100 forget and 100 held-out samples. Gaps 0.30, 0.10, 0.05: the standard error of
    # the third (pooled 0.775) is sqrt(0.775 * 0.225 * 0.02) = 0.059 >= 0.05.
    forget = [(0.95, 100), (0.85, 100), (0.80, 100), (0.5, 100)]
    heldout = [(0.65, 100), (0.75, 100), (0.75, 100), (0.5, 100)]
    assert rho_closing_gap([0.0, 0.2, 0.4, 0.6], forget, heldout) == 2
    # z = 2 accepts the 0.10 gap (error 0.0589, twice 0.118).
    assert rho_closing_gap([0.0, 0.2, 0.4, 0.6], forget, heldout, z=2.0) == 1
    # Nothing memorized: the original's own gap is closed, so nothing is reset.
    assert rho_closing_gap([0.0, 0.5], [(0.7, 50), (0.4, 50)], [(0.72, 50), (0.4, 50)]) == 0
    # No candidate closes it: the largest.
    assert rho_closing_gap([0.0, 0.5], [(1.0, 500), (1.0, 500)], [(0.5, 500), (0.5, 500)]) == 1
    assert RHO_CANDIDATES[0] == 0.0 and RHO_CANDIDATES[-1] == 0.9 and len(RHO_CANDIDATES) == 10
    with pytest.raises(ValueError, match="must increase"):
        rho_closing_gap([0.5, 0.1], forget[:2], heldout[:2])
    with pytest.raises(ValueError, match="no forget or held-out"):
        rho_closing_gap([0.1], [(0.5, 0)], [(0.5, 10)])
