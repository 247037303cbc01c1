"""FedMemEraser, fine-tuning and retraining (seed 001): requests, client work, end to end."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from clients.fedunl_client import FedunlClient
from fedunl_flwr.config import ConfigError, RunConfig, pyproject_defaults
from fedunl_flwr.data.scenarios import ClientData
from fedunl_flwr.federation import ClientInfo, Federation
from fedunl_flwr.metrics.memorization import MEMORIZATION_GROUP_LABELS
from fedunl_flwr.records import get_weights
from fedunl_flwr.training_records import CSL_FOLDER, client_record_path
from fedunl_flwr.unlearning.parameter_selection import (
    RHO_CANDIDATES,
    rho_closing_gap,
    selection_count,
)
from strategies import get_unlearning_method
from strategies.fedmemeraser import FedMemEraser
from strategies.finetune import FineTune
from strategies.retrain import Retrain
from strategies.unlearning import (
    UnlearningRequest,
    forget_holders,
    remaining_participants,
    validate_request,
)

CLASSES = [str(c) for c in range(10)]


def make_federation(counts: list[list[int]]) -> Federation:
    """Fake connected clients with the given per-class training counts (no Ray)."""
    clients = {pid: ClientInfo(pid, 100 + pid, sum(c), 20, tuple(c))
               for pid, c in enumerate(counts)}
    return Federation(clients, CLASSES)


def config_with(**overrides) -> RunConfig:
    values = {**pyproject_defaults(), **{k.replace("_", "-"): v for k, v in overrides.items()}}
    return RunConfig.from_mapping(values)


def validate(config: RunConfig, federation: Federation) -> UnlearningRequest:
    """The server's check of ``config``'s request for its ``strategy``."""
    method = get_unlearning_method(config.strategy)
    assert method is not None
    return validate_request(method, config, federation)


FOUR = make_federation([[10] * 10, [10] * 10, [10] * 10, [0, 5, 5, 5, 5, 5, 5, 5, 5, 5]])


# --- requests are rejected before any work --------------------------------------------
@pytest.mark.parametrize("name", ["fedmemeraser", "finetune", "retrain"])
def test_leaving_every_client_is_rejected(name) -> None:
    config = config_with(strategy=name, forget_scope="client", forget_clients="0,1,2,3")
    with pytest.raises(ConfigError, match="nobody would remain"):
        validate(config, FOUR)


def test_unknown_sample_ids_and_clients_are_rejected() -> None:
    config = config_with(strategy="fedmemeraser", forget_scope="samples",
                         forget_samples="0:1,2,100")
    with pytest.raises(ConfigError, match=r"outside 0..99"):
        validate(config, FOUR)
    config = config_with(strategy="fedmemeraser", forget_scope="samples",
                         forget_samples="7:1")
    with pytest.raises(ConfigError, match="unknown client 7"):
        validate(config, FOUR)


@pytest.mark.parametrize("rho", [-0.1, 1.5])
def test_rho_out_of_range_is_rejected(rho: float) -> None:
    with pytest.raises(ConfigError, match="rho must be in"):
        config_with(strategy="fedmemeraser", rho=rho)


def test_other_bad_fedmemeraser_settings_are_rejected() -> None:
    with pytest.raises(ConfigError, match="selection must be one of"):
        validate(
            config_with(strategy="fedmemeraser", selection="largest", forget_scope="client",
                        forget_clients="0"), FOUR)
    with pytest.raises(ConfigError, match="unlearn-rounds must be >= 1"):
        validate(
            config_with(strategy="fedmemeraser", gradient_source="update", unlearn_rounds=0,
                        forget_scope="client", forget_clients="0"), FOUR)
    with pytest.raises(ConfigError, match="rho-rule must be 'fixed' or 'heldout'"):
        config_with(strategy="fedmemeraser", rho_rule="adaptive")
    with pytest.raises(ConfigError, match=r"rho-rule 'heldout' .* forget-scope 'client'"):
        validate(config_with(strategy="fedmemeraser", rho_rule="heldout",
                             forget_scope="class", forget_classes="0"), FOUR)
    # Client 3 holds no sample of class 0: naming it is an error ...
    with pytest.raises(ConfigError, match="holds no training sample"):
        validate(
            config_with(strategy="fedmemeraser", forget_scope="class", forget_classes="0",
                        forget_clients="3"), FOUR)
    # ... and a class nobody holds gives an empty D_u.
    nobody = make_federation([[0, 5, 5, 5, 5, 5, 5, 5, 5, 5]] * 3)
    with pytest.raises(ConfigError, match="D_u is empty"):
        validate(config_with(strategy="finetune", forget_scope="class",
                                              forget_classes="0"), nobody)
    # Forgetting every sample of every client leaves nothing to train on.
    one = make_federation([[2, 0, 0, 0, 0, 0, 0, 0, 0, 0]])
    with pytest.raises(ConfigError, match="leaves no training data"):
        validate(config_with(strategy="retrain", forget_scope="samples",
                                             forget_samples="0:0,1"), one)


def test_request_scopes_give_holders_and_remaining_clients() -> None:
    config = config_with(strategy="fedmemeraser", forget_scope="class", forget_classes="0")
    request = validate(config, FOUR)
    assert request.clients == (0, 1, 2, 3)  # a class across all clients
    assert forget_holders(request, FOUR) == [0, 1, 2]  # client 3 has no class 0
    assert remaining_participants(request, FOUR) == [0, 1, 2, 3]
    config = config_with(strategy="fedmemeraser", forget_scope="client", forget_clients="1,2")
    request = validate(config, FOUR)
    assert forget_holders(request, FOUR) == [1, 2]
    assert remaining_participants(request, FOUR) == [0, 3]


def test_registry_knows_the_seed_001_strategies() -> None:
    assert isinstance(get_unlearning_method("fedmemeraser"), FedMemEraser)
    assert isinstance(get_unlearning_method("finetune"), FineTune)
    assert isinstance(get_unlearning_method("retrain"), Retrain)


# --- client work (no Ray) ---------------------------------------------------------------
@pytest.fixture()
def tiny_client(tmp_path: Path) -> FedunlClient:
    rng = np.random.default_rng(0)
    data = ClientData(0, "synthetic", rng.integers(0, 255, (40, 12, 12), dtype=np.uint8),
                      np.arange(40) % 4, rng.integers(0, 255, (8, 12, 12), dtype=np.uint8),
                      np.arange(8) % 4)
    config = config_with(results_dir=str(tmp_path), model="cnn", model_width=4,
                         batch_size=8, scenario="mnist-iid")
    return FedunlClient(data, config, "cnn", 1, tuple("abcd"))


def test_client_records_csl_only_when_the_original_asks(tiny_client: FedunlClient,
                                                        tmp_path: Path) -> None:
    weights = get_weights(tiny_client.model)
    phase = "mnist-iid/train-0123456789ab"
    path = client_record_path(tmp_path, phase, CSL_FOLDER, 0)
    record = {"records-to": phase}
    assert not tiny_client.query_csl(None, {"forget-all": True, **record}).available
    tiny_client.fit(weights, {"phase": "train", "server-round": 1, **record})
    first = np.load(path)["csl"].copy()
    assert first.shape == (40,) and (first > 0).all()
    tiny_client.fit(weights, {"phase": "train", "server-round": 2, **record})
    second = np.load(path)["csl"]
    assert (second > first).all()
    # No records-to (retraining, unlearning) or a changed training set: nothing recorded.
    tiny_client.fit(weights, {"phase": "train", "server-round": 3})
    tiny_client.fit(weights, {"phase": "train", "server-round": 3, "exclude-classes": "0",
                              **record})
    np.testing.assert_array_equal(np.load(path)["csl"], second)
    reply = tiny_client.query_csl(None, {"forget-classes": "1", **record})
    assert reply.available and reply.rounds == 2
    assert list(reply.positions) == list(range(1, 40, 4))
    np.testing.assert_allclose(reply.csl, second[1::4])
    assert not tiny_client.query_csl(None, {"forget-classes": "1"}).available
    tiny_client.fit(weights, {"phase": "train", "server-round": 1, **record})  # a fresh training
    assert np.load(path)["rounds"].tolist() == [1]


@pytest.mark.parametrize("folder", ["../train-0123456789ab", "mnist-iid/train-0123",
                                    "/etc/train-0123456789ab", "a/b/train-0123456789ab",
                                    "mnist-iid/retrain-0123456789ab"])
def test_client_refuses_a_records_folder_outside_a_training_phase(
        tiny_client: FedunlClient, folder: str) -> None:
    weights = get_weights(tiny_client.model)
    with pytest.raises(ValueError, match="records-to"):
        tiny_client.fit(weights, {"phase": "train", "server-round": 1, "records-to": folder})
    with pytest.raises(ValueError, match="records-to"):
        tiny_client.query_csl(None, {"forget-all": True, "records-to": folder})


def test_client_queries_answer_on_the_right_samples(tiny_client: FedunlClient) -> None:
    weights = get_weights(tiny_client.model)
    reply = tiny_client.query_per_sample(weights, {"forget-samples": "3,1,7"})
    assert reply.positions == (1, 3, 7)
    assert len(reply.true_prob) == 3 and set(reply.correct) <= {0, 1}
    assert all(0.0 <= p <= 1.0 for p in reply.true_prob)
    grads = tiny_client.query_mean_gradient(weights, {"exclude-classes": "0"})
    assert grads.num_samples == 30
    names = dict(tiny_client.model.named_parameters())
    assert set(grads.gradient) == set(names)
    forget = tiny_client.query_mean_gradient(weights, {"data": "forget", "forget-all": True})
    assert forget.num_samples == 40
    loss = tiny_client.query_local_loss(weights, {"exclude-samples": "0,1"})
    assert loss.num_examples == 38 and loss.loss_sum > 0
    with pytest.raises(ValueError, match=r"outside 0..39"):
        tiny_client.query_per_sample(weights, {"forget-samples": "40"})


def test_forget_gap_weights_the_held_out_classes_like_the_forget_data(
        tiny_client: FedunlClient) -> None:
    """D_u = samples 1, 3, 7 (classes 1, 3, 3): held-out accuracy is class 1's at weight
    1/3 and class 3's at 2/3, over the 4 test samples of those classes."""
    import torch

    weights = get_weights(tiny_client.model)
    with torch.no_grad():
        tiny_client.model.eval()
        predicted = tiny_client.model(tiny_client.x_test).argmax(1)
    hit = (predicted == tiny_client.y_test).double()
    by_class = {c: float(hit[tiny_client.y_test == c].mean()) for c in (1, 3)}
    per_sample = tiny_client.query_per_sample(weights, {"forget-samples": "3,1,7"})
    reply = tiny_client.query_forget_gap(weights, {"forget-samples": "3,1,7"})
    assert (reply.forget_count, reply.heldout_count) == (3, 4)
    assert reply.forget_accuracy == pytest.approx(sum(per_sample.correct) / 3)
    assert reply.heldout_accuracy == pytest.approx(by_class[1] / 3 + 2 * by_class[3] / 3)
    # A real SuperNode's minimum: 3 forget samples are too few to answer over.
    with pytest.raises(PermissionError, match="only 3 sample"):
        tiny_client.query_forget_gap(weights, {"forget-samples": "3,1,7",
                                               "node-minimum-samples": 10})


# --- end to end on real offline data ----------------------------------------------------
BASE = {"scenario": "fashion-mnist-iid", "num-clients": 4, "samples-per-client": 200,
        "test-samples-per-client": 50, "num-server-rounds": 4, "model": "cnn",
        "model-width": 16, "local-epochs": 2, "unlearn-rounds": 2, "retrain-seeds": 1,
        "heldout-retrains": True, "model-init": "kaiming-relu", "aggregation": "mean",
        "forget-scope": "client", "forget-clients": "0", "rho": 0.6,
        # Membership inference is tests/test_verification.py's and the contract test's.
        "mia-feature": "off"}


@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_dir) -> dict[str, dict[str, Path]]:
    """Original (trained once), FedMemEraser, fine-tune, retrain; a sample-level run."""
    from experiments.simulate import simulate

    results = tmp_path_factory.mktemp("memorization-results")
    base = {**BASE, "results-dir": str(results), "data-dir": str(data_dir)}
    out = {name: simulate({**base, "strategy": name}, engine="inprocess")
           for name in ("fedmemeraser", "finetune", "retrain")}
    out["heldout"] = simulate({**base, "strategy": "fedmemeraser", "rho-rule": "heldout"},
                              engine="inprocess")
    out["samples"] = simulate({**base, "strategy": "fedmemeraser", "forget-scope": "samples",
                               "forget-clients": "", "gradient-source": "gradient",
                               "reset-tensors": "weights", "rho": 0.4,
                               "forget-samples": "0:" + ",".join(map(str, range(20)))
                               + ";2:5,6,7"}, engine="inprocess")
    return out


def _summary(paths: dict[str, Path]) -> dict:
    return json.loads((paths["unlearn"] / "summary.json").read_text())


def _arrays(folder: Path, name: str) -> dict[str, np.ndarray]:
    with np.load(folder / f"{name}.npz") as data:
        return {k: data[k] for k in data.files}


@pytest.mark.simulation
def test_fedmemeraser_summary_holds_the_seed_001_evaluation(runs) -> None:
    summary = _summary(runs["fedmemeraser"])
    table = pd.DataFrame(summary["group_table"]).set_index("group")
    assert list(table.index) == [*MEMORIZATION_GROUP_LABELS, "D_u"]
    assert {"unlearned_mean", "retrained_mean", "retrained_std", "delta"} <= set(table.columns)
    mem = summary["memorization"]
    assert mem["num_forget_samples"] == 200 and mem["forget_clients"] == [0]
    samples = pd.read_csv(runs["fedmemeraser"]["unlearn"] / "du_samples.csv")
    # Authors' groups: negative scores clipped to 0, score-0 samples in no group.
    outside = samples["group"].eq("none")
    assert sum(mem["group_sizes"]) == 200 - int(outside.sum())
    assert (samples.loc[outside, "mem_score"] <= samples["mem_score"].clip(lower=0).min()).all()
    # Held-out retrains: model 0 scores, model 1 is the reference; no shared init.
    assert mem["scoring_retrains"] == [0] and mem["reference_retrains"] == [1]
    assert len(mem["group_accuracy"]["retrained"]) == 1
    assert mem["retrain_noise_floor"]["compared"].startswith("scoring set")
    assert table.loc["D_u", "unlearned_mean"] == pytest.approx(summary["du_accuracy"]["unlearned"])
    test = summary["test_accuracy"]
    assert test["test_set"].startswith("the scenario's real test set")
    assert 0 <= test["unlearned"] <= 100 and len(test["retrained"]) == 1
    fairness = summary["local_fairness"]
    assert fairness["clients"] == [1, 2, 3] and fairness["unlearned"] >= 0
    assert len(fairness["retrained"]) == 1
    timing = summary["time_analysis"]
    assert timing["budget_rounds"] == 2 and timing["peak_tolerance"] == 0.0
    assert [row[0] for row in timing["unlearn"]["curve"]] == [1, 2]
    assert [row[0] for row in timing["retrain"]["curve"]] == [1, 2]  # same budget
    assert timing["unlearn"]["time_to_peak"] > 0 and timing["speedup"] > 0
    assert len(timing["retrain"]["per_seed"]) == 2 and timing["retrain_measured_in_this_run"]
    assert summary["csl_agreement"]["available"] and summary["csl_agreement"]["rounds"] == 4
    assert -1 <= summary["csl_agreement"]["cosine"] <= 1
    assert len(samples) == 200 and samples["csl"].gt(0).all()


@pytest.mark.simulation
def test_gradient_statistic_resets_only_the_selected_weight_entries(runs) -> None:
    """gradient-source 'gradient', reset-tensors 'weights': the reset acts on the original."""
    original = _arrays(runs["samples"]["train"], "global")
    folder = runs["samples"]["unlearn"]
    reset, masks = _arrays(folder, "reset"), _arrays(folder, "reset-mask")
    final = _arrays(folder, "global")
    assert list(reset) == list(original)
    eligible = [k for k, v in original.items() if v.ndim >= 2]
    assert sorted(masks) == sorted(eligible)
    total = sum(original[k].size for k in eligible)
    assert sum(int(m.sum()) for m in masks.values()) == selection_count(0.4, total)
    for name, value in original.items():
        mask = masks.get(name, np.zeros(value.shape, dtype=bool))
        np.testing.assert_array_equal(reset[name][~mask], value[~mask])  # untouched
        assert (reset[name][mask] != value[mask]).all()  # re-drawn
    # Fine-tuning then moved the weights away from the reset model.
    assert any(not np.array_equal(final[k], reset[k]) for k in eligible)
    summary = _summary(runs["samples"])
    assert summary["reset"]["selected_fraction"] == pytest.approx(0.4, abs=1e-4)


@pytest.mark.simulation
def test_update_statistic_resets_every_tensor_kind_after_round_one(runs) -> None:
    """The authors' reading (the default): every trainable tensor is ranked, the reset
    follows the first round's aggregation and draws from the model's own init scheme."""
    import math

    from fedunl_flwr.initialization import init_rule

    original = _arrays(runs["fedmemeraser"]["train"], "global")
    folder = runs["fedmemeraser"]["unlearn"]
    reset, masks = _arrays(folder, "reset"), _arrays(folder, "reset-mask")
    assert {k for k, v in original.items() if v.ndim == 1} <= set(masks)  # biases, GN
    total = sum(original[k].size for k in masks)
    assert sum(int(m.sum()) for m in masks.values()) == selection_count(0.6, total)
    tensors = {k: __import__("torch").from_numpy(v) for k, v in reset.items()}
    for name, mask in masks.items():
        rule = init_rule(name, tensors, "kaiming-relu")
        assert rule is not None
        bound = rule.bound
        assert np.abs(reset[name][mask]).max() <= bound + 1e-7
    # The unmasked entries are the round-1 aggregate, not the original: one round trained.
    weight = "hidden.fc.weight"
    kept = ~masks[weight]
    assert not np.array_equal(reset[weight][kept], original[weight][kept])
    summary = _summary(runs["fedmemeraser"])
    assert summary["reset"]["gradient_source"] == "update"
    assert summary["reset"]["reset_tensors"] == "all"
    assert not math.isnan(summary["time_analysis"]["unlearn"]["curve"][0][2])


@pytest.mark.simulation
def test_heldout_rho_rule_keeps_the_first_reset_that_closes_the_gap(runs) -> None:
    """rho-rule 'heldout': every candidate was asked of the leaving client, the kept rho
    is the first whose reset leaves D_u within one standard error of held-out data, and
    the stored reset is that rho's."""
    summary = _summary(runs["heldout"])
    reset = summary["reset"]
    search = reset["rho_search"]
    assert [c["rho"] for c in search] == list(RHO_CANDIDATES)
    print("heldout rule:", [(c["rho"], round(c["forget_accuracy"], 3),
                             round(c["heldout_accuracy"], 3)) for c in search])
    # Resetting 90% of the entries leaves a model near chance: the candidates differ.
    assert search[-1]["forget_accuracy"] < search[0]["forget_accuracy"] - 0.2
    assert reset["selected_fraction"] == pytest.approx(reset["rho"], abs=1e-3)
    assert reset["rho_rule"] == "heldout" and reset["rho"] in RHO_CANDIDATES
    masks = _arrays(runs["heldout"]["unlearn"], "reset-mask")
    assert sum(int(m.sum()) for m in masks.values()) == reset["selected_entries"]
    assert all(c["forget_count"] == 200 and c["heldout_count"] == search[0]["heldout_count"] > 0
               for c in search)
    assert RHO_CANDIDATES[rho_closing_gap(
        RHO_CANDIDATES, [(c["forget_accuracy"], c["forget_count"]) for c in search],
        [(c["heldout_accuracy"], c["heldout_count"]) for c in search])] == reset["rho"]


@pytest.mark.simulation
def test_fedmemeraser_forgets_more_than_fine_tuning(runs) -> None:
    """The route forgets: on its most memorized samples FedMemEraser ends below the
    original, below fine-tuning (which keeps what it memorized) and closer to the
    retrained model, and on D_u below fine-tuning. (At this CI scale the original is
    still improving, so D_u may rise above it.)

    The most memorized samples are the top two groups pooled (20 samples): the top group
    alone holds 10, and FedMemEraser's 20% against fine-tuning's 30% there was one sample.
    Measured with 1 and 2 torch threads: top two 30% (FedMemEraser) vs 50% (fine-tuning)
    vs 30% (retrained), i.e. 4 samples apart; D_u 55-56% vs 62% (12+ of 200 samples)."""
    memeraser, finetune = _summary(runs["fedmemeraser"]), _summary(runs["finetune"])
    ours = memeraser["memorization"]["group_accuracy"]
    tuned = finetune["memorization"]["group_accuracy"]
    sizes = memeraser["memorization"]["group_sizes"]

    def top_two(accuracies: list[float]) -> float:
        return (accuracies[0] * sizes[0] + accuracies[1] * sizes[1]) / (sizes[0] + sizes[1])

    retrained = top_two(ours["retrained"][0])
    print("top two groups / D_u: original", top_two(ours["original"]), ours["original"][-1],
          "fedmemeraser", top_two(ours["unlearned"]), ours["unlearned"][-1],
          "finetune", top_two(tuned["unlearned"]), tuned["unlearned"][-1],
          "retrained", retrained, "group sizes", sizes)
    assert top_two(ours["unlearned"]) < top_two(ours["original"])
    assert top_two(ours["unlearned"]) < top_two(tuned["unlearned"])
    assert abs(top_two(ours["unlearned"]) - retrained) < abs(top_two(tuned["unlearned"])
                                                            - retrained)
    assert ours["unlearned"][-1] < tuned["unlearned"][-1]


@pytest.mark.simulation
def test_finetune_and_retrain_share_the_retrained_models(runs) -> None:
    memeraser, finetune = _summary(runs["fedmemeraser"]), _summary(runs["finetune"])
    retrain = _summary(runs["retrain"])
    stores = memeraser["memorization"]["retrained_models"]["stores"]
    assert finetune["memorization"]["retrained_models"]["stores"] == stores
    assert retrain["retrain"]["stores"] == stores
    assert retrain["retrain"]["trained_in_this_run"] == [False, False]
    assert "reset" not in finetune and "group_table" in finetune
    # Same original and retrained models: the groups and the retrained columns agree.
    assert (finetune["memorization"]["group_accuracy"]["retrained"]
            == memeraser["memorization"]["group_accuracy"]["retrained"])
    # Retraining keeps its per-round history (time and test accuracy).
    history = pd.read_csv(runs["retrain"]["unlearn"] / "metrics.csv")
    assert list(history["round"]) == [1, 2, 3, 4] and history["accuracy"].notna().all()
    # The leaving client never trained in retraining.
    stored = json.loads((Path(stores[0]) / "summary.json").read_text())
    assert stored["participants"] == [1, 2, 3]


@pytest.mark.simulation
def test_sample_level_request_with_gradient_statistic(runs) -> None:
    summary = _summary(runs["samples"])
    mem = summary["memorization"]
    assert mem["num_forget_samples"] == 23 and mem["forget_clients"] == [0, 2]
    assert summary["reset"]["gradient_source"] == "gradient"
    assert summary["local_fairness"]["clients"] == [0, 1, 2, 3]
    samples = pd.read_csv(runs["samples"]["unlearn"] / "du_samples.csv")
    assert samples.loc[samples["client"] == 2, "position"].tolist() == [5, 6, 7]
    stores = mem["retrained_models"]["stores"]
    assert stores != _summary(runs["fedmemeraser"])["memorization"]["retrained_models"]["stores"]


@pytest.mark.simulation
def test_report_builder_makes_table_1_and_figure(runs, tmp_path: Path) -> None:
    from experiments.memorization_tables import build_memorization_report

    results = [runs["fedmemeraser"], runs["finetune"], runs["retrain"]]
    files = build_memorization_report({"table": "1", "description": "tiny"}, results,
                                      tmp_path)
    names = sorted(p.name for p in files)
    assert names == ["memorization_1.csv", "memorization_1.md",
                     "memorization_1_bootstrap.csv", "memorization_1_floor.csv",
                     "memorization_1_time.csv", "memorization_1_time.png"]
    markdown = (tmp_path / "memorization_1.md").read_text()
    for text in ("Fashion-MNIST IID", "Ours (n=1)", "Fine-tune (n=1)",
                 "Retrained Baseline (n=1)", "Group (95%,100%]", "Retrain vs retrain"):
        assert text in markdown
    numbers = pd.read_csv(tmp_path / "memorization_1.csv")
    ours = numbers[(numbers["row"] == "Ours") & (numbers["column"] == "D_u")].iloc[0]
    assert ours["mean"] == pytest.approx(_summary(runs["fedmemeraser"])["du_accuracy"]["unlearned"],
                                         abs=1e-3)
    # The bootstrap interval of the D_u difference holds the difference itself.
    noise = pd.read_csv(tmp_path / "memorization_1_bootstrap.csv")
    du = noise[(noise["row"] == "Ours") & (noise["column"] == "D_u")].iloc[0]
    assert du["low"] <= du["difference"] <= du["high"] and du["seeds"] == 1
    assert "Accuracy minus retraining, with bootstrap intervals" in markdown
    assert (tmp_path / "memorization_1_time.png").stat().st_size > 1000
    times = pd.read_csv(tmp_path / "memorization_1_time.csv")
    assert set(times["row"]) == {"Ours", "Fine-tune"} and times["speedup"].gt(0).all()
    h10 = build_memorization_report({"table": "H10"}, [runs["samples"]], tmp_path)
    assert "Ours (n=1)" in next(p for p in h10 if p.suffix == ".md").read_text()
    # Without a table field the layout follows from the runs; labels rename rows.
    inferred = build_memorization_report({"runs": [{}, {"label": "FT"}]},
                                         [runs["fedmemeraser"], runs["finetune"]],
                                         tmp_path / "inferred")
    assert inferred[0].name == "memorization_1.csv"
    assert "FT (n=1)" in next(p for p in inferred if p.suffix == ".md").read_text()
    assert build_memorization_report({}, [runs["samples"]], tmp_path)[0].name == \
        "memorization_H10.csv"


@pytest.mark.simulation
def test_bad_request_leaves_nothing_on_disk(tmp_path: Path, data_dir) -> None:
    from experiments.simulate import simulate

    overrides = {**BASE, "strategy": "fedmemeraser", "forget-clients": "0,1,2,3",
                 "results-dir": str(tmp_path), "data-dir": str(data_dir)}
    with pytest.raises(ConfigError, match="nobody would remain"):
        simulate(overrides, engine="inprocess")
    assert not list(tmp_path.rglob("*.npz"))


def test_no_model_goes_twice_to_a_client_with_the_same_request(tmp_path, data_dir,
                                                              monkeypatch) -> None:
    """A whole FedMemEraser run (original, retrains, unlearning, evaluation) never asks a
    client twice for the same work on the same model: evaluations and queries of a
    model a phase already asked about are answered from what it kept (issue 25 point 5)."""
    import hashlib
    from collections import Counter

    from experiments.simulate import simulate
    from fedunl_flwr.inprocess import InProcessGrid

    sent: Counter = Counter()
    deliver = InProcessGrid._deliver

    def recording(self, message):
        arrays = message.content.array_records.get("arrays")
        if arrays is not None:
            model = hashlib.sha256(b"".join(a.data for a in arrays.values())).hexdigest()
            config = dict(message.content.config_records.get("config", {}))
            config.pop("server-round", None)
            sent[(message.metadata.message_type, model, message.metadata.dst_node_id,
                  repr(sorted(config.items())))] += 1
        return deliver(self, message)

    monkeypatch.setattr(InProcessGrid, "_deliver", recording)
    simulate({**BASE, "num-server-rounds": 2, "unlearn-rounds": 1, "strategy": "fedmemeraser",
              "results-dir": str(tmp_path), "data-dir": str(data_dir)}, engine="inprocess")
    kinds = Counter(kind for kind, *_ in sent)
    assert kinds["evaluate"] > 0 and kinds["train"] > 0 and len(kinds) >= 4, kinds
    assert [key for key, count in sent.items() if count > 1] == []
