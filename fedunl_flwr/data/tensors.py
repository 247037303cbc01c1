"""Turn uint8 image arrays into normalised float tensors for a model."""

from __future__ import annotations

import numpy as np
import torch


def images_to_tensor(images: np.ndarray, in_channels: int) -> torch.Tensor:
    """``(N,H,W)`` or ``(N,H,W,3)`` uint8 -> ``(N,C,H,W)`` float32 in [-1, 1].

    Gray images are repeated to 3 channels when the model takes RGB; RGB images are
    averaged to gray when it takes one channel. Each client keeps its native
    resolution (the models pool adaptively).
    """
    x = torch.from_numpy(np.ascontiguousarray(images)).float().div_(255.0)
    x = x.unsqueeze(1) if x.ndim == 3 else x.permute(0, 3, 1, 2)
    if x.shape[1] != in_channels:
        x = x.repeat(1, 3, 1, 1) if in_channels == 3 else x.mean(dim=1, keepdim=True)
    return x.sub_(0.5).div_(0.5).contiguous()


def labels_to_tensor(labels: np.ndarray) -> torch.Tensor:
    """int labels -> int64 tensor."""
    return torch.from_numpy(np.asarray(labels, dtype=np.int64))
