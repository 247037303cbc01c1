"""Verification beyond accuracy: a planted backdoor and membership inference.

Two checks the unlearning tools we are compared with report (``../shared/BASELINES.md``
§7-8), as pure functions on tensors and arrays:

- **Backdoor.** A fixed 3x3 trigger (an X: corners and centre white, the rest black) one
  pixel from the bottom-right corner, written in pixel space on every channel, so gray and
  RGB images both carry it. Chosen training samples of the poisoned clients carry it and
  are relabelled to the target; the attack success rate (ASR) is the share of triggered
  test images whose true label is not the target that a model classifies as the target.
- **Membership inference** (Jia et al. 2023, "Model sparsity can simplify machine
  unlearning", as FedQUIT's ``SVC_MIA``): an SVC (RBF, C = 3, gamma ``auto``) on one
  feature, trained with the remaining clients' training data as members and half of the
  test set as non-members, then applied to D_u; the MIA efficacy is the percent of D_u it
  calls member. Beside it, the threshold attack (Song & Mittal 2021): the threshold that
  best separates the same members and non-members, evaluated as the balanced accuracy
  ½ (share of D_u called member + share of the other test half called non-member).
"""

from __future__ import annotations

import numpy as np
import torch

#: The trigger's pattern (True: white, False: black) and its offset from the corner.
TRIGGER = torch.tensor([[True, False, True], [False, True, False], [True, False, True]])
TRIGGER_MARGIN = 1
#: Pixel values of the model's input scale ([-1, 1], ``data.tensors.images_to_tensor``).
WHITE, BLACK = 1.0, -1.0
#: Cap on each side of the attack's training set (an SVC costs O(n^2)).
MIA_MAX_PER_SIDE = 2000


def apply_trigger(images: torch.Tensor) -> torch.Tensor:
    """A copy of ``(N, C, H, W)`` images with the trigger written near the bottom-right."""
    out = images.clone()
    size = TRIGGER.shape[0]
    height, width = out.shape[-2:]
    if height < size + TRIGGER_MARGIN or width < size + TRIGGER_MARGIN:
        raise ValueError(f"images of {height}x{width} pixels cannot carry the "
                         f"{size}x{size} trigger")
    rows = slice(height - size - TRIGGER_MARGIN, height - TRIGGER_MARGIN)
    cols = slice(width - size - TRIGGER_MARGIN, width - TRIGGER_MARGIN)
    out[..., rows, cols] = torch.where(TRIGGER, WHITE, BLACK).to(out.dtype)
    return out


def backdoor_positions(labels: torch.Tensor, fraction: float, target: int,
                       generator: torch.Generator) -> np.ndarray:
    """Sorted positions of the samples to poison: ``round(fraction x n)`` of the n samples
    whose label is not ``target``, drawn with ``generator``."""
    candidates = torch.nonzero(labels != target).flatten()
    count = round(fraction * len(candidates))
    chosen = candidates[torch.randperm(len(candidates), generator=generator)[:count]]
    return np.sort(chosen.numpy())


def attack_success_rate(predictions: np.ndarray, labels: np.ndarray, target: int) -> float:
    """Percent of the triggered images whose true label is not ``target`` that are
    classified as ``target``."""
    mask = np.asarray(labels) != target
    if not mask.any():
        raise ValueError("no test image outside the backdoor's target class")
    return 100.0 * float(np.mean(np.asarray(predictions)[mask] == target))


def mia_feature_values(outputs: dict[str, np.ndarray], feature: str) -> np.ndarray:
    """The attack's feature, oriented so that a larger value looks more like a member:
    the true-label probability, or minus the (modified) entropy of the prediction."""
    if feature == "confidence":
        return np.asarray(outputs["true_prob"], dtype=np.float64)
    if feature == "entropy":
        return -np.asarray(outputs["entropy"], dtype=np.float64)
    if feature == "m-entropy":
        return -np.asarray(outputs["m_entropy"], dtype=np.float64)
    raise ValueError(f"unknown membership-inference feature {feature!r}")


def at_most(values: np.ndarray, count: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``count`` of ``values``, drawn without replacement."""
    if len(values) <= count:
        return values
    return values[rng.choice(len(values), size=count, replace=False)]


def mia_efficacy(members: np.ndarray, nonmembers: np.ndarray, targets: np.ndarray,
                 rng: np.random.Generator) -> float:
    """Percent of ``targets`` an SVC trained on members (1) against non-members (0) calls
    member. Each side keeps at most ``MIA_MAX_PER_SIDE`` samples (drawn with ``rng``) and
    the classes are weighted by their sizes: subsampling the larger side to the smaller
    made the efficacy swing with the draw (one run: 46% and 100% for two draws)."""
    from sklearn.svm import SVC

    if not len(members) or not len(nonmembers) or not len(targets):
        raise ValueError("membership inference needs members, non-members and targets")
    inside = at_most(members, MIA_MAX_PER_SIDE, rng)
    outside = at_most(nonmembers, MIA_MAX_PER_SIDE, rng)
    features = np.concatenate([inside, outside])[:, None]
    labels = np.concatenate([np.ones(len(inside)), np.zeros(len(outside))])
    attack = SVC(C=3, gamma="auto", kernel="rbf", class_weight="balanced").fit(features,
                                                                               labels)
    return 100.0 * float(attack.predict(np.asarray(targets, dtype=np.float64)[:, None]).mean())


def best_threshold(members: np.ndarray, nonmembers: np.ndarray) -> float:
    """The threshold t maximising ½ (P[member >= t] + P[non-member < t])."""
    candidates = np.unique(np.concatenate([members, nonmembers]))
    inside, outside = np.sort(members), np.sort(nonmembers)
    at_least = 1.0 - np.searchsorted(inside, candidates, side="left") / len(inside)
    below = np.searchsorted(outside, candidates, side="left") / len(outside)
    return float(candidates[int(np.argmax(0.5 * (at_least + below)))])


def threshold_attack_accuracy(shadow_members: np.ndarray, shadow_nonmembers: np.ndarray,
                              targets: np.ndarray, target_nonmembers: np.ndarray) -> float:
    """Balanced accuracy (%) of the threshold chosen on the shadow sets, with ``targets``
    (D_u) as members and ``target_nonmembers`` as non-members."""
    threshold = best_threshold(shadow_members, shadow_nonmembers)
    return 100.0 * 0.5 * (float(np.mean(targets >= threshold))
                          + float(np.mean(target_nonmembers < threshold)))
