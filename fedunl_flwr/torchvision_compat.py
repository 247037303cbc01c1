"""The one place that imports torchvision (works around CPU-only torch builds)."""

from __future__ import annotations

import torch


def _define_missing_detection_ops() -> None:
    """Declare the ``torchvision::nms``/``qnms`` schemas that a CPU-only torch lacks.

    torchvision's Python package registers fake kernels for these operators at import
    time; when its compiled extension does not match the installed torch (a CPU
    wheel beside PyPI's torchvision), the schemas are missing and the import fails
    with ``operator torchvision::nms does not exist``. Declaring the schemas lets the
    import go on; fedunl never calls these detection operators.
    """
    lib = torch.library.Library("torchvision", "DEF")
    lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    lib.define(
        "qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor"
    )
    _KEEP_ALIVE.append(lib)


_KEEP_ALIVE: list[torch.library.Library] = []


def import_torchvision():
    """Return the ``torchvision`` module, patching op schemas only when needed."""
    try:
        import torchvision
    except RuntimeError as err:
        if "torchvision::nms does not exist" not in str(err):
            raise
        import sys

        for name in [m for m in sys.modules if m.startswith("torchvision")]:
            del sys.modules[name]
        _define_missing_detection_ops()
        import torchvision
    return torchvision


torchvision = import_torchvision()
