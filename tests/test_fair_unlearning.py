"""Cross-domain fair unlearning (seed 000): selection glue, client work, protocol, routes,
report."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from flwr.app import Array, ArrayRecord

from clients.fedunl_client import FedunlClient, relabel_to_other_classes
from experiments.fair_tables import build_fair_report
from experiments.run import PresetError, load_preset, parse_sets, plan_runs, run_preset
from experiments.simulate import simulate
from fedunl_flwr.client_app import load_run_config
from fedunl_flwr.config import ConfigError
from fedunl_flwr.data.scenarios import federated_data, get_scenario
from fedunl_flwr.data.tensors import images_to_tensor
from fedunl_flwr.federation import ClientInfo, Federation
from fedunl_flwr.phases import model_for
from fedunl_flwr.protocol import (
    ActivationsReply,
    AttributionReply,
    decode_entries,
    encode_entries,
    split_activation_key,
)
from fedunl_flwr.records import get_weights, set_weights, state_keys
from fedunl_flwr.store import PhaseStore
from strategies import get_unlearning_method
from strategies.fair_protocol import WeightedSum
from strategies.fedcccu import FedCCCU, select_fedcccu_units
from strategies.neuron_zeroing import select_activation_units
from strategies.unlearning import validate_request

SCENARIO = "digits-real-noniid-offline"
ROUNDS, EPOCHS = 2, 2  # unlearn-rounds, unlearn-local-epochs
BASE = {
    "scenario": SCENARIO, "samples-per-client": 150, "test-samples-per-client": 60,
    "num-server-rounds": 4, "local-epochs": 2, "unlearn-rounds": ROUNDS,
    "unlearn-local-epochs": EPOCHS, "forget-scope": "class", "forget-clients": "0",
    "zero-units": 40, "attribution-top-n": 20, "attribution-steps": 4,
    "attribution-samples": 16,
    # Membership inference needs a retrained model per request: the contract test and
    # tests/test_verification.py check it for the routes.
    "mia-feature": "off",
}
ROUTES = ("delete-retrain", "relabel-poison", "neuron-zeroing", "fedcccu",
          "delete-retrain-all")


# --- helpers ---------------------------------------------------------------------------
def federated(data_dir: Path):
    config = load_run_config({}, {**BASE, "data-dir": str(data_dir)})
    return federated_data(config)


def train_counts(data_dir: Path) -> list[np.ndarray]:
    data = federated(data_dir)
    return [np.bincount(c.y_train, minlength=data.num_classes) for c in data.clients]


def forget_class(data_dir: Path) -> int:
    """Class 0 if client 0 holds it (as in the paper), else client 0's largest class."""
    counts = train_counts(data_dir)[0]
    return 0 if counts[0] > 0 else int(np.argmax(counts))


def summary(folder: Path) -> dict:
    return json.loads((Path(folder) / "summary.json").read_text())


def hand_federation(counts: list[list[int]]) -> Federation:
    clients = {p: ClientInfo(p, 100 + p, sum(c), 10, tuple(c)) for p, c in enumerate(counts)}
    return Federation(clients, [str(c) for c in range(len(counts[0]))])


# --- server-side selection glue (hand-made client lists) ------------------------------
def test_fedcccu_selection_ranks_dominance_ratio_ascending():
    lists = {
        0: {0: [("a", 0, 1.0), ("a", 1, 0.5), ("b", 2, 0.8), ("b", 3, -0.1)]},
        1: {0: [("a", 0, 0.9), ("b", 2, 0.2)], 1: [("a", 1, 9.0)]},
        2: {0: [("a", 1, 0.6)], 1: [("b", 2, 5.0)]},
    }
    chosen = select_fedcccu_units(lists, [0], [0], 3)
    # R: b2 = 0.2/0.8 = 0.25, a0 = 0.9/1.0 = 0.9, a1 = 0.6/0.5 = 1.2; b3 has S_forget < 0.
    # Other classes' lists (class 1: a1 = 9.0, b2 = 5.0) do not count.
    assert [(c["site"], c["unit"]) for c in chosen] == [("b", 2), ("a", 0), ("a", 1)]
    assert [c["ratio"] for c in chosen] == pytest.approx([0.25, 0.9, 1.2])
    assert chosen[0]["s_forget"] == 0.8 and chosen[0]["s_max_other"] == 0.2
    assert [(c["site"], c["unit"]) for c in select_fedcccu_units(lists, [0], [0], 1)] == \
        [("b", 2)]


def test_fedcccu_selection_unit_absent_from_others_is_most_dominant():
    lists = {0: {0: [("a", 0, 2.0), ("a", 1, 1.0)]}, 1: {0: [("a", 0, 1.0)]}, 2: {}}
    chosen = select_fedcccu_units(lists, [0], [0], 2)
    assert [(c["site"], c["unit"], c["ratio"]) for c in chosen] == [("a", 1, 0.0),
                                                                   ("a", 0, 0.5)]
    assert chosen[0]["s_max_other"] == 0.0


def test_fedcccu_selection_several_requesting_clients_and_classes():
    lists = {
        0: {0: [("a", 0, 1.0), ("a", 1, 0.4)], 1: [("a", 5, 1.0)]},
        1: {0: [("a", 1, 0.8)], 1: [("a", 0, 2.0)]},   # requesting too
        2: {0: [("a", 0, 0.5), ("a", 1, 0.4)], 1: [("a", 5, 0.1), ("a", 0, 0.1)]},
    }
    chosen = select_fedcccu_units(lists, [0, 1], [0, 1], 1)
    # class 0: S_forget = max over clients 0, 1: a0 = 1.0, a1 = 0.8; others (client 2 only):
    # R(a0) = 0.5, R(a1) = 0.5 -> tie broken by S_forget: a0. Class 1: R(a5) = 0.1,
    # R(a0) = 0.1 / 2.0 = 0.05 -> a0 again, already chosen: the union has one entry.
    assert [(c["class"], c["site"], c["unit"]) for c in chosen] == [(0, "a", 0)]
    both = select_fedcccu_units(lists, [0, 1], [0, 1], 2)
    assert {(c["site"], c["unit"]) for c in both} == {("a", 0), ("a", 1), ("a", 5)}
    assert all(c["s_max_other"] in (0.5, 0.4, 0.1) for c in both)


def test_activation_selection_pools_requesting_clients_by_sample_count():
    def reply(pid, count, means):
        return ActivationsReply(pid, (0,), (count,),
                                {(0, site): np.asarray(v, dtype=np.float64)
                                 for site, v in means.items()})

    replies = {0: reply(0, 1, {"s": [4.0, 0.0, 1.0], "t": [0.0]}),
               1: reply(1, 3, {"s": [0.0, 2.0, 1.0], "t": [1.2]})}
    # pooled: s = [1.0, 1.5, 1.0], t = [0.9]
    chosen = select_activation_units(replies, [0], 2)
    assert [(c["site"], c["unit"]) for c in chosen] == [("s", 1), ("s", 0)]
    assert chosen[0]["activation"] == pytest.approx(1.5) and chosen[0]["samples"] == 4
    with pytest.raises(ValueError, match="no requesting client reported samples of class 3"):
        select_activation_units(replies, [3], 2)


def test_fair_aggregation_equals_fedavg_over_trained_and_cached_models():
    rng = np.random.default_rng(0)
    cached = [(rng.normal(size=(3, 2)).astype(np.float32), 50),
              (rng.normal(size=(3, 2)).astype(np.float32), 30)]
    trained = [(rng.normal(size=(3, 2)).astype(np.float32), 20),
               (rng.normal(size=(3, 2)).astype(np.float32), 10)]
    total = WeightedSum()
    for weights, n in cached:
        total.add(ArrayRecord({"w": Array(weights)}), n)
    trained_avg = sum(w * n for w, n in trained) / 30
    combined = total.average_with(ArrayRecord({"w": Array(trained_avg)}), 30)["w"].numpy()
    expected = sum(w.astype(np.float64) * n for w, n in cached + trained) / 110
    assert combined.dtype == np.float32
    np.testing.assert_allclose(combined, expected, rtol=1e-5)
    # A requesting client left with no sample contributes nothing.
    only_cached = total.average_with(None, 0)["w"].numpy()
    np.testing.assert_allclose(only_cached, (cached[0][0] * 50 + cached[1][0] * 30) / 80,
                               rtol=1e-5)


def test_wrong_scope_and_bad_requests_fail_validation_with_clear_messages():
    federation = hand_federation([[5, 0, 3], [0, 4, 4], [2, 2, 2]])
    base = load_run_config({}, {"forget-scope": "class", "forget-clients": "0",
                                "forget-classes": "0"})
    for name in ROUTES:
        method = get_unlearning_method(name)
        assert method is not None and method.scopes == ("class",)
        request = validate_request(method, base, federation)
        assert request.clients == (0,) and request.classes == (0,)
    cases = [({"forget-scope": "client"}, "handles forget-scope class, not 'client'"),
             ({"forget-clients": "7"}, r"forget-clients \[7\] unknown"),
             ({"forget-classes": "3"}, r"forget-classes \[3\] out of range 0..2"),
             ({"forget-classes": "1"}, r"client 0 holds no training sample of class\(es\) \[1\]"),
             ({"forget-classes": ""}, "needs forget-classes")]
    for change, message in cases:
        config = load_run_config({}, {"forget-scope": "class", "forget-clients": "0",
                                      "forget-classes": "0", **change})
        with pytest.raises(ConfigError, match=message):
            validate_request(FedCCCU(), config, federation)


# --- client work -----------------------------------------------------------------------
def test_relabel_never_keeps_the_original_label():
    labels = torch.arange(10).repeat(200)
    relabelled = relabel_to_other_classes(labels, [0, 3], 10, torch.Generator().manual_seed(1))
    chosen = torch.isin(labels, torch.tensor([0, 3]))
    # never the original label nor another forgotten class (seed 000: "other non-target
    # classes"), and every one of the 8 non-target classes is drawn
    assert not bool(torch.isin(relabelled[chosen], torch.tensor([0, 3])).any())
    assert torch.equal(relabelled[~chosen], labels[~chosen])
    assert set(relabelled[labels == 0].tolist()) == {1, 2, 4, 5, 6, 7, 8, 9}
    with pytest.raises(ValueError, match="every class"):
        relabel_to_other_classes(labels, list(range(10)), 10, torch.Generator())


@pytest.fixture(scope="module")
def real_client(data_dir):
    data = federated(data_dir)
    config = load_run_config({}, {**BASE, "data-dir": str(data_dir)})
    scenario = get_scenario(SCENARIO)
    return FedunlClient(data.clients[0], config, scenario.default_model, scenario.in_channels,
                        data.class_names)


def test_client_relabel_and_delete_training_sets(real_client, data_dir):
    cls = forget_class(data_dir)
    y = real_client.y_train
    _, relabelled = real_client.training_set({"relabel-classes": str(cls)})
    assert len(relabelled) == len(y)
    assert bool((relabelled[y == cls] != cls).all())
    assert torch.equal(relabelled[y != cls], y[y != cls])
    _, kept = real_client.training_set({"exclude-classes": str(cls)})
    assert len(kept) == int((y != cls).sum()) and not bool((kept == cls).any())


def test_client_attribution_reply_holds_only_top_n_per_class(real_client):
    weights = get_weights(real_client.model)
    reply = real_client.query_attribution(weights, {"steps": 2, "top-n": 5,
                                                    "samples-per-class": 4})
    content = reply.to_content()  # what travels: the entries and counts, no arrays
    assert set(content) == {"metrics", "info"}
    assert AttributionReply.from_content(content) == reply
    lists = reply.lists
    held = sorted(torch.unique(real_client.y_train).tolist())
    assert sorted(lists) == held
    sites = {s.name for s in real_client.model.neuron_sites()}
    for entries in lists.values():
        assert len(entries) == 5
        assert all(site in sites for site, _, _ in entries)
        scores = [score for _, _, score in entries]
        assert scores == sorted(scores, reverse=True)
    counts = reply.class_samples
    assert all(n <= 4 for n in counts) and reply.num_samples == sum(counts)
    assert reply.seconds > 0
    metrics, info = encode_entries(lists)
    assert decode_entries(metrics, info) == lists


def test_client_activation_reply_is_per_class_means(real_client, data_dir):
    cls = forget_class(data_dir)
    missing = [c for c in range(10) if not bool((real_client.y_train == c).any())]
    classes = [cls, *missing[:1]]
    reply = real_client.query_activations(get_weights(real_client.model),
                                          {"classes": ",".join(map(str, classes))})
    sites = {s.name: s.num_units for s in real_client.model.neuron_sites()}
    assert reply.class_samples[0] == int((real_client.y_train == cls).sum())
    assert set(reply.means) == {(cls, site) for site in sites}  # a class not held: none
    for (_, site), value in reply.means.items():
        assert value.shape == (sites[site],)
    decoded = ActivationsReply.from_content(reply.to_content())  # keys "<class>|<site>"
    assert set(decoded.means) == set(reply.means)
    assert all(split_activation_key(k)[0] == cls for k in reply.to_content()["arrays"])


# --- every route end to end (one shared original model) --------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir) -> dict[str, dict[str, Path]]:
    results = tmp_path_factory.mktemp("fair-runs")
    cls = forget_class(data_dir)
    return {name: simulate({**BASE, "results-dir": str(results), "strategy": name,
                            "forget-classes": str(cls)}, engine="inprocess")
            for name in ROUTES}


@pytest.mark.simulation
def test_every_route_writes_before_and_after_accuracy(runs):
    trains = {paths["train"] for paths in runs.values()}
    assert len(trains) == 1  # the original model was trained once and shared
    for name, paths in runs.items():
        result = summary(paths["unlearn"])
        assert result["strategy"] == name and result["phase"] == "unlearn"
        for block in (result, result["before"]):
            assert sorted(block["per_client_class_accuracy"], key=int) == \
                [str(p) for p in range(9)]
            assert set(block["per_client_class_accuracy"]["0"]) == {str(c) for c in range(10)}
        assert 0 <= result["global_accuracy_after"] <= 1


@pytest.mark.simulation
@pytest.mark.parametrize("name", ["delete-retrain", "relabel-poison"])
def test_fair_protocol_non_requesting_clients_do_no_training(runs, name):
    result = summary(runs[name]["unlearn"])
    assert result["client_epochs"] == ROUNDS * EPOCHS * 1
    assert result["trained_clients"] == [0]
    assert result["cached_clients"] == list(range(1, 9))
    assert result["client_epochs_by_client"] == {"0": ROUNDS * EPOCHS,
                                                 **{str(p): 0 for p in range(1, 9)}}
    history = pd.read_csv(Path(runs[name]["unlearn"]) / "metrics.csv")
    assert history["clients_trained"].tolist() == [1] * ROUNDS


@pytest.mark.simulation
def test_fair_protocol_others_keep_the_global_model_or_their_cached_one(runs, data_dir):
    """Seed 000 Table 4: the others retain the pretrained global model (default); their
    cached final local models are the option."""
    default = summary(runs["delete-retrain"]["unlearn"])
    assert default["others_contribute"] == "the original global model"
    results = Path(runs["delete-retrain"]["train"]).parents[1]
    cached = simulate({**BASE, "results-dir": str(results), "strategy": "delete-retrain",
                       "forget-classes": str(forget_class(data_dir)), "fair-others": "cached"},
                      engine="inprocess")
    assert cached["train"] == runs["delete-retrain"]["train"]  # same original model
    assert summary(cached["unlearn"])["others_contribute"] == "their cached final local models"
    with np.load(cached["unlearn"] / "global.npz") as a, \
            np.load(runs["delete-retrain"]["unlearn"] / "global.npz") as b:
        assert any(not np.array_equal(a[k], b[k]) for k in a.files)


@pytest.mark.simulation
def test_unfair_contrast_has_every_client_retrain(runs):
    result = summary(runs["delete-retrain-all"]["unlearn"])
    assert result["client_epochs"] == ROUNDS * EPOCHS * 9
    assert result["trained_clients"] == list(range(9))
    assert result["cached_clients"] == []


@pytest.mark.simulation
@pytest.mark.parametrize("name", ["neuron-zeroing", "fedcccu"])
def test_zeroed_units_are_zero_in_the_stored_model(runs, name, data_dir):
    result = summary(runs[name]["unlearn"])
    assert result["client_epochs"] == 0 and result["trained_clients"] == []
    zeroed = [(site, unit) for site, unit in result["zeroed_units"]]
    assert 1 <= len(zeroed) <= BASE["zero-units"]
    # The stopping rule: one unit at a time until the requester's forget-class accuracy
    # is at or below chance (or the cap); each step is reported.
    steps = result["zeroing_steps"]
    assert result["zero_stop"] and result["forget_target"] == pytest.approx(0.1)
    assert [s["units"] for s in steps] == list(range(len(zeroed) + 1))
    assert all(s["forget_accuracy"] > 0.1 for s in steps[:-1])
    assert steps[-1]["forget_accuracy"] <= 0.1 or len(zeroed) == BASE["zero-units"]
    assert set(result["collateral_damage"]) == {str(p) for p in range(1, 9)}
    if name == "neuron-zeroing":
        assert result["queried_clients"] == [0]
    else:
        assert result["queried_clients"] == list(range(9))
        ratios = [item["ratio"] for item in result["selected_units"]]
        assert ratios == sorted(ratios) and all(math.isfinite(r) for r in ratios)
        assert result["attribution_seconds"] > 0
    config = load_run_config({}, {**BASE, "data-dir": str(data_dir)})
    model = model_for(config, 10)
    stored = PhaseStore(Path(runs[name]["unlearn"]), {}).read_arrays("global")
    set_weights(model, [stored[k] for k in state_keys(model)])
    modules = dict(model.named_modules())
    sites = {s.name: s for s in model.neuron_sites()}
    for site, unit in zeroed:
        for module_name in sites[site].zero_modules:
            module = modules[module_name]
            assert float(module.weight[unit].detach().abs().max()) == 0.0
            if module.bias is not None:
                assert float(module.bias[unit].detach()) == 0.0
    # ... and those units output zero on real inputs
    captured = {}
    handles = [modules[site].register_forward_hook(
        lambda _m, _a, out, site=site: captured.__setitem__(site, out.detach()))
        for site in {s for s, _ in zeroed}]
    x = images_to_tensor(federated(data_dir).clients[0].x_test[:16], 1)
    model.eval()
    with torch.no_grad():
        model(x)
    for handle in handles:
        handle.remove()
    for site, unit in zeroed:
        assert float(captured[site][:, unit].abs().max()) == 0.0


@pytest.mark.simulation
@pytest.mark.parametrize("name", ["neuron-zeroing", "fedcccu"])
def test_editing_routes_forget_on_the_requesting_client(runs, name, data_dir):
    """The requester's forget-class test accuracy drops to the stopping rule's target
    (chance, 10%) well before the cap (seed 000 Table 5, client 0).

    Measured with 1 and with 2 torch threads (two reduction orders): both routes go
    50% -> 0-10% with 7-8 units of the 40 allowed. A cap of 5, as before, left FedCCCU at
    40% or 50% depending on the CPU: one test sample of ten decided the verdict.

    The retraining routes are not asserted to forget: under the fair protocol the other
    clients keep the class in the aggregate, which is seed 000's own finding (Delete keeps
    the class under Real-Noniid); at this test scale they leave it unchanged."""
    result = summary(runs[name]["unlearn"])
    cls = str(forget_class(data_dir))
    before = result["before"]["per_client_class_accuracy"]["0"][cls]
    after = result["per_client_class_accuracy"]["0"][cls]
    units = len(result["zeroed_units"])
    print(name, "client 0 forget-class accuracy", before, "->", after, "with", units, "units")
    assert before >= 0.4
    assert after <= result["forget_target"]
    assert units <= BASE["zero-units"] // 2  # the target, not the cap, stopped it


@pytest.mark.simulation
@pytest.mark.parametrize("name", ["neuron-zeroing", "fedcccu"])
def test_the_unit_cap_stops_the_editing_routes(runs, name, data_dir):
    """With a cap below what the target needs, the route zeroes exactly the cap."""
    results = Path(runs[name]["train"]).parents[1]
    capped = simulate({**BASE, "results-dir": str(results), "strategy": name,
                       "forget-classes": str(forget_class(data_dir)), "zero-units": 2},
                      engine="inprocess")
    assert capped["train"] == runs[name]["train"]  # the same original model
    result = summary(capped["unlearn"])
    assert len(result["zeroed_units"]) == 2
    assert [s["units"] for s in result["zeroing_steps"]] == [0, 1, 2]
    assert result["zeroing_steps"][-1]["forget_accuracy"] > result["forget_target"]


@pytest.mark.simulation
@pytest.mark.parametrize("name, change", [("delete-retrain", "exclude-classes"),
                                          ("relabel-poison", "relabel-classes")])
def test_retraining_routes_forget_in_the_requesters_local_model(runs, real_client, name,
                                                                change, data_dir):
    """The retraining routes' own step forgets: from the original global model, the
    requester's local training of the route (ROUNDS x EPOCHS epochs without the class, or
    with it relabelled) drops its D_u accuracy (its training samples of the class; its test
    split holds too few of them to measure). Under the fair protocol the aggregate then
    keeps the class (the others still teach it: seed 000's finding)."""
    cls = forget_class(data_dir)
    with np.load(Path(runs[name]["train"]) / "global.npz") as stored:
        original = [stored[k] for k in state_keys(real_client.model)]

    def class_accuracy(weights) -> float:
        set_weights(real_client.model, weights)
        held = real_client.y_train == cls
        assert held.sum() >= 10
        with torch.no_grad():
            predicted = real_client.model.eval()(real_client.x_train[held]).argmax(1)
        return float((predicted == cls).float().mean())

    local, _, _ = real_client.fit(original, {change: str(cls), "phase": "unlearn",
                                             "local-epochs": ROUNDS * EPOCHS})
    before, after = class_accuracy(original), class_accuracy(local)
    print(name, "requester's local model, D_u accuracy", before, "->", after)
    assert after < before - 0.5


@pytest.mark.simulation
def test_fair_protocol_with_two_requesting_clients(runs, tmp_path, data_dir):
    counts = train_counts(data_dir)
    shared = [c for c in range(10) if counts[0][c] > 0 and counts[1][c] > 0]
    assert shared, "clients 0 and 1 share no class at these sizes"
    results_dir = Path(runs["delete-retrain"]["train"]).parents[1]
    paths = simulate({**BASE, "results-dir": str(results_dir), "strategy": "delete-retrain",
                      "forget-clients": "0,1", "forget-classes": str(shared[0])},
                     engine="inprocess")
    result = summary(paths["unlearn"])
    assert result["trained_clients"] == [0, 1]
    assert result["client_epochs"] == ROUNDS * EPOCHS * 2
    assert result["cached_clients"] == list(range(2, 9))


def _not_held(data_dir: Path) -> tuple[int, int]:
    counts = train_counts(data_dir)
    for pid, row in enumerate(counts):
        missing = np.flatnonzero(row == 0)
        if len(missing):
            return pid, int(missing[0])
    pytest.skip("every client holds every class at these sizes")


@pytest.mark.simulation
@pytest.mark.parametrize("case", ["unknown client", "class out of range", "class not held",
                                  "wrong scope"])
def test_bad_requests_are_rejected_before_any_training(case, tmp_path, data_dir):
    request, message = {
        "unknown client": ({"forget-clients": "9", "forget-classes": "0"},
                           r"forget-clients \[9\] unknown"),
        "class out of range": ({"forget-clients": "0", "forget-classes": "10"},
                               r"forget-classes \[10\] out of range 0..9"),
        "wrong scope": ({"forget-scope": "client", "forget-clients": "0",
                         "strategy": "neuron-zeroing"},
                        "'neuron-zeroing' handles forget-scope class, not 'client'"),
    }.get(case, (None, None))
    if case == "class not held":
        pid, cls = _not_held(data_dir)
        request = {"forget-clients": str(pid), "forget-classes": str(cls)}
        message = rf"client {pid} holds no training sample of class\(es\) \[{cls}\]"
    with pytest.raises(ConfigError, match=message):
        simulate({**BASE, "results-dir": str(tmp_path), "strategy": "delete-retrain",
                  **request}, engine="inprocess")
    written = list(tmp_path.rglob("*"))
    assert not [p for p in written if p.name.startswith(("train-", "unlearn-"))], written


# --- report and runner -----------------------------------------------------------------
@pytest.mark.simulation
def test_report_builder_writes_the_papers_tables(runs, tmp_path):
    written = build_fair_report({name: paths["unlearn"] for name, paths in runs.items()},
                                tmp_path)
    names = {p.name for p in written}
    for stem in ("table4_global", "table5_forget_class", "table7_per_class", "cost"):
        assert {f"{stem}.csv", f"{stem}.md"} <= names
    assert (tmp_path / "figure4_accuracy.png").stat().st_size > 1000
    assert "report.md" in names
    cls = summary(runs["fedcccu"]["unlearn"])["request"]["classes"][0]
    table4 = pd.read_csv(tmp_path / "table4_global.csv", header=[0, 1], index_col=0)
    routes = ["Delete", "Relabel", "Zeroing", "FedCCCU", "Delete-All"]
    assert [c for top, c in table4.columns if top == "Global Accuracy"] == ["Original", *routes]
    zeroing = summary(runs["neuron-zeroing"]["unlearn"])
    assert table4[("Global Accuracy", "Zeroing")].iloc[0] == pytest.approx(
        100 * zeroing["global_accuracy_after"], abs=1e-3)
    assert table4[("Global Accuracy", "Original")].iloc[0] == pytest.approx(
        100 * zeroing["global_accuracy_before"], abs=1e-3)
    forget = table4[(f"Client 0 (label_{cls}) Accuracy", "FedCCCU")].iloc[0]
    value = summary(runs["fedcccu"]["unlearn"])["per_client_class_accuracy"]["0"][str(cls)]
    assert forget == pytest.approx(100 * value, abs=1e-3)
    table5 = pd.read_csv(tmp_path / "table5_forget_class.csv", index_col=0)
    assert len(table5) == 9 and list(table5.columns) == ["test samples", "Original", *routes]
    assert (table5["test samples"] >= 0).all()
    table7 = pd.read_csv(tmp_path / "table7_per_class.csv", index_col=[0, 1])
    assert len(table7) == 3 * 10 and list(table7.columns) == ["test samples", "Before", *routes]
    assert "(↓)" in (tmp_path / "table7_per_class.md").read_text()
    assert (tmp_path / "figure2_distribution.png").stat().st_size > 1000


def test_runner_validates_every_run_before_running(tmp_path):
    assert parse_sets(["forget-classes=0", "unlearn-rounds=2", "learning-rate=1e-3",
                       "forget-clients=0,3", "download=true"]) == {
        "forget-classes": "0", "unlearn-rounds": 2, "learning-rate": 0.001,
        "forget-clients": "0,3", "download": True}
    name, preset = load_preset("fair-digits-cpu")
    assert name == "fair-digits-cpu" and preset["report"] == "fair"
    assert [r["strategy"] for r in preset["runs"]][:len(ROUTES)] == list(ROUTES)
    variants = [(r["strategy"], r.get("fair-others"), r.get("zero-stop"))
                for r in preset["runs"][len(ROUTES):]]
    assert variants == [("delete-retrain", "cached", None), ("relabel-poison", "cached", None),
                        ("neuron-zeroing", None, False), ("fedcccu", None, False)]
    plan_runs(load_preset("fair-images7-cpu")[1], {})
    plan_runs(load_preset("fair-digits-paper")[1], {})  # SVHN downloads: not checked
    for other in ("fair-images9-paper", "fair-images65-paper"):  # ImageNet never downloads
        with pytest.raises(PresetError, match="imagenet-cifar"):
            plan_runs(load_preset(other)[1], {})
    bad = tmp_path / "bad.toml"
    bad.write_text('report = "fair"\n[base]\nscenario = "digits-real-noniid-offline"\n'
                   'forget-clients = "0"\nforget-classes = "0"\n'
                   '[[runs]]\nstrategy = "delete-retrain"\n[[runs]]\nstrategy = "nope"\n')
    with pytest.raises(PresetError, match=r"run 2 .*unknown strategy 'nope'"):
        run_preset(str(bad), {"results-dir": str(tmp_path / "results")})
    assert not (tmp_path / "results").exists()  # nothing ran
    with pytest.raises(PresetError, match="unknown run-config key 'nope'"):
        plan_runs(preset, {"nope": 1})
    with pytest.raises(PresetError, match="unknown preset 'nope'"):
        load_preset("nope")


@pytest.mark.simulation
def test_runner_runs_a_preset_and_writes_its_report(runs, tmp_path, data_dir):
    results_dir = Path(runs["delete-retrain"]["train"]).parents[1]
    preset = tmp_path / "tiny.toml"
    base = {**BASE, "forget-classes": str(forget_class(data_dir))}
    lines = ['description = "tiny"', 'report = "fair"', "[base]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in base.items()]
    lines += ["[[runs]]", 'strategy = "neuron-zeroing"', 'label = "zeroing"']
    preset.write_text("\n".join(lines) + "\n")
    written = run_preset(str(preset), {"results-dir": str(results_dir)})
    out = results_dir / "reports" / "tiny"
    assert (out / "table4_global.csv") in written and (out / "report.md").exists()
    table5 = pd.read_csv(out / "table5_forget_class.csv", index_col=0)
    assert list(table5.columns) == ["test samples", "Original", "zeroing"]


def test_table4_markdown_has_one_row_per_model_and_one_column_per_accuracy():
    import pandas as pd

    from experiments.fair_tables import table4_markdown

    columns = pd.MultiIndex.from_tuples([
        ("", "Data1"), ("", "Model"), ("Global Accuracy", "Original"),
        ("Global Accuracy", "FedCCCU"), ("Client 0 (label_3) Accuracy", "Original"),
        ("Client 0 (label_3) Accuracy", "FedCCCU")])
    frame = pd.DataFrame([["mnist", "cnn", 90.0, 85.5, 80.0, 10.0]], index=["digits"],
                         columns=columns)
    lines = table4_markdown(frame).splitlines()
    assert lines[0] == "Data1: mnist, Model: cnn"
    header = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert header == ["digits", "Global Accuracy", "Client 0 (label_3) Accuracy"]
    rows = {line.split("|")[1].strip(): line for line in lines[4:]}
    assert set(rows) == {"Original", "FedCCCU"} and "10.00%" in rows["FedCCCU"]
