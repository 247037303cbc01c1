"""Random crop + flip augmentation of the local training loop."""

from __future__ import annotations

import torch

from clients.local_training import random_crop_flip


def test_without_padding_each_image_is_itself_or_its_mirror() -> None:
    images = torch.arange(2 * 3 * 4 * 5, dtype=torch.float32).reshape(2, 3, 4, 5)
    out = random_crop_flip(images, torch.Generator().manual_seed(0), padding=0)
    for original, augmented in zip(images, out, strict=True):
        assert torch.equal(augmented, original) or torch.equal(augmented, original.flip(-1))


def test_crops_shift_content_and_keep_shape() -> None:
    images = torch.rand(64, 3, 8, 8, generator=torch.Generator().manual_seed(1)) + 1.0
    out = random_crop_flip(images, torch.Generator().manual_seed(2), padding=2)
    assert out.shape == images.shape
    changed = [not (torch.equal(a, b) or torch.equal(a, b.flip(-1)))
               for a, b in zip(out, images, strict=True)]
    assert sum(changed) > 40  # most offsets are not (2, 2)
    assert (out == 0).any()  # zero padding shows at the borders
    again = random_crop_flip(images, torch.Generator().manual_seed(2), padding=2)
    assert torch.equal(out, again)
