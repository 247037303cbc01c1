"""Verification beyond accuracy, declared by every method: the planted backdoor's attack
success rate and membership inference on D_u (``fedunl_flwr.metrics.verification``),
for the original, the unlearned and each reference retrained model.

The backdoor check runs when ``backdoor-clients`` planted one (the server triggers the
scenario's real test images itself); membership inference unless ``mia-feature`` is
``off``: the clients holding remaining data report per-sample outputs on it (members),
the D_u holders on D_u (``query.per_sample``, evaluation only: a real SuperNode refuses
it unless its node config allows), and the server scores the test set (non-members; one
half trains the attack, the other half is the threshold attack's non-member target). A
check that cannot run (the server has no test set; real SuperNodes that refuse
per-sample outputs) is named in ``skipped`` and the run goes on.
"""

from __future__ import annotations

from logging import INFO

import numpy as np
import torch
from flwr.app import ArrayRecord
from flwr.serverapp import Grid
from flwr.supercore import log

from fedunl_flwr.config import parse_int_list
from fedunl_flwr.federation import ClientError
from fedunl_flwr.metrics.verification import (
    apply_trigger,
    attack_success_rate,
    mia_efficacy,
    mia_feature_values,
    threshold_attack_accuracy,
)
from fedunl_flwr.models import get_device
from fedunl_flwr.phases import (
    TrainedModel,
    central_test_outputs,
    central_test_tensors,
    model_for,
)
from fedunl_flwr.records import from_record, set_weights
from fedunl_flwr.seeding import numpy_generator
from fedunl_flwr.summaries import ModelScores, VerificationChecks, VerificationEvaluation
from strategies.memorization_eval import per_sample, split_retrained
from strategies.retrain import obtain_retrained
from strategies.unlearning import UnlearningRun, forget_holders, remaining_participants


def verification_summary(grid: Grid, run: UnlearningRun, unlearned: TrainedModel
                         ) -> VerificationEvaluation:
    """Both checks for the original, the unlearned and the reference retrained models."""
    config, federation, request = run.config, run.federation, run.request
    backdoor = config.backdoor_clients.strip()
    if not backdoor and config.mia_feature == "off":
        return VerificationEvaluation(VerificationChecks(None, [], "off", None, None,
                                                         ["no backdoor planted, mia off"]))
    retrained = obtain_retrained(grid, config, federation, request, run.run_store)
    _, reference = split_retrained(len(retrained.models), config.heldout_retrains)
    models = [run.original.arrays, unlearned.arrays,
              *(retrained.models[j].arrays for j in reference)]
    test = central_test_tensors(config)
    skipped = []
    if test is None:
        skipped.append("the server cannot read the scenario's test set")
    model = model_for(config, federation.num_classes).to(get_device())
    asr = None
    if backdoor and test is not None:
        asr = _scores([backdoor_asr(model, arrays, test, config.backdoor_target)
                       for arrays in models])
    efficacy = threshold = None
    if config.mia_feature != "off" and test is not None:
        try:
            results = [membership_inference(grid, run, arrays) for arrays in models]
        except ClientError as err:  # real SuperNodes refuse per-sample outputs by default
            skipped.append(f"membership inference: {err}")
        else:
            efficacy = _scores([r[0] for r in results])
            threshold = _scores([r[1] for r in results])
    checks = VerificationChecks(
        asr, sorted(set(parse_int_list(backdoor, "backdoor-clients"))) if backdoor else [],
        config.mia_feature, efficacy, threshold, skipped)
    log(INFO, "fedunl: verification (original / unlearned / retrained): backdoor ASR %s, "
        "MIA efficacy %s", _show(asr), _show(efficacy))
    return VerificationEvaluation(checks)


def membership_inference(grid: Grid, run: UnlearningRun, arrays: ArrayRecord
                         ) -> tuple[float, float]:
    """MIA efficacy on D_u and the threshold attack's balanced accuracy (%) of ``arrays``:
    members are the remaining clients' training samples, non-members the test set's
    halves (one trains the attack, the other is the threshold attack's target)."""
    config, federation, request = run.config, run.federation, run.request
    outputs = central_test_outputs(config, federation.num_classes, arrays)
    assert outputs is not None, "membership inference needs the server's test sets"
    nonmembers = np.concatenate([mia_feature_values(o, config.mia_feature)
                                 for o in outputs])
    shadow, target = np.array_split(numpy_generator(config.seed, "mia", "halves")
                                    .permutation(len(nonmembers)), 2)
    members = mia_feature_values(
        per_sample(grid, federation, request, remaining_participants(request, federation),
                   arrays, remaining=True), config.mia_feature)
    targets = mia_feature_values(
        per_sample(grid, federation, request, forget_holders(request, federation), arrays),
        config.mia_feature)
    return (mia_efficacy(members, nonmembers[shadow], targets,
                         numpy_generator(config.seed, "mia", "attack")),
            threshold_attack_accuracy(members, nonmembers[shadow], targets,
                                      nonmembers[target]))


@torch.no_grad()
def backdoor_asr(model: torch.nn.Module, arrays: ArrayRecord,
                 test: list[tuple[torch.Tensor, torch.Tensor]], target: int) -> float:
    """Attack success rate (%) of ``arrays`` on the triggered test images."""
    set_weights(model, from_record(arrays))
    model.eval()
    device = next(model.parameters()).device
    predictions, labels = [], []
    for x, y in test:
        for start in range(0, len(y), 512):
            batch = apply_trigger(x[start:start + 512]).to(device)
            predictions.append(model(batch).argmax(dim=1).cpu().numpy())
        labels.append(y.numpy())
    return attack_success_rate(np.concatenate(predictions), np.concatenate(labels), target)


def _scores(values: list[float]) -> ModelScores:
    return ModelScores(values[0], values[1], list(values[2:]))


def _show(scores: ModelScores | None) -> str:
    if scores is None:
        return "n/a"
    return (f"{scores.original:.1f} / {scores.unlearned:.1f} / "
            + ", ".join(f"{v:.1f}" for v in scores.retrained))
