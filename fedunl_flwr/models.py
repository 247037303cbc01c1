"""Models (small CNN, CIFAR-style ResNets, VGG-9) and their neuron sites."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from fedunl_flwr.initialization import initialize_model


@dataclass(frozen=True)
class NeuronSite:
    """A layer of units that attribution and zeroing act on.

    Parameters
    ----------
    name : str
        Name of the module whose forward output holds the units' activations
        (shape ``(N, C, ...)``, one unit per channel ``C``).
    zero_modules : tuple[str, ...]
        Modules that produce that output: the conv/linear layer and, if present, its
        BatchNorm. Zeroing unit ``k`` zeroes output channel ``k`` of each of them, so
        the unit outputs zero for every input.
    num_units : int
        Number of units (output channels / features) in the layer.
    """

    name: str
    zero_modules: tuple[str, ...]
    num_units: int


def make_norm(kind: str, channels: int) -> nn.Module:
    """BatchNorm (``"batch"``) or GroupNorm with up to 8 groups (``"group"``).

    GroupNorm keeps no running statistics, so FedAvg across clients of different
    domains does not average incompatible BatchNorm statistics (cf. FedBN).
    """
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    raise ValueError(f"unknown norm {kind!r}; use 'batch' or 'group'")


def norm_zero_targets(prefix: str, conv: str, norm: str, kind: str) -> tuple[str, ...]:
    """Modules to zero so a channel outputs zero for every input.

    With BatchNorm the conv filter and the norm's affine entries are zeroed. With
    GroupNorm only the norm's affine entries are: zeroing the filter would shift the
    group statistics and so change the other channels of its group.
    """
    return (f"{prefix}{conv}", f"{prefix}{norm}") if kind == "batch" else (f"{prefix}{norm}",)


class ConvUnit(nn.Module):
    """Conv -> norm -> ReLU; its ``act`` output is one neuron site."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1,
                 norm: str = "batch") -> None:
        super().__init__()
        self.norm_kind = norm
        self.conv = nn.Conv2d(in_channels, out_channels, 3, stride, 1, bias=False)
        self.norm = make_norm(norm, out_channels)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm(self.conv(x)))


class SiteModel(nn.Module):
    """Base class: lists the neuron sites found from the ``ConvUnit``/``Hidden`` layout."""

    def neuron_sites(self) -> list[NeuronSite]:
        """Return the model's neuron sites in forward order."""
        return _collect_sites(self, "")


class HiddenLinear(nn.Module):
    """Linear -> ReLU hidden layer; its ``act`` output is one neuron site."""

    def __init__(self, in_features: int, out_features: int) -> None:
        super().__init__()
        self.fc = nn.Linear(in_features, out_features)
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.fc(x))


class SmallCNN(SiteModel):
    """Two conv units and two fully connected layers; any input size (adaptive pooling)."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32,
                 norm: str = "group") -> None:
        super().__init__()
        self.features = nn.Sequential(
            ConvUnit(in_channels, width, norm=norm), nn.MaxPool2d(2),
            ConvUnit(width, 2 * width, norm=norm), nn.MaxPool2d(2),
            nn.AdaptiveAvgPool2d(4), nn.Flatten(),
        )
        self.hidden = HiddenLinear(2 * width * 16, 4 * width)
        self.classifier = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.hidden(self.features(x)))


class BasicBlock(nn.Module):
    """ResNet basic block (two 3x3 convs) with a projection shortcut when needed."""

    def __init__(self, in_channels: int, out_channels: int, stride: int,
                 norm: str = "batch") -> None:
        super().__init__()
        self.norm_kind = norm
        self.unit1 = ConvUnit(in_channels, out_channels, stride, norm)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, 1, bias=False)
        self.norm2 = make_norm(norm, out_channels)
        self.shortcut = nn.Sequential()
        if stride != 1 or in_channels != out_channels:
            self.shortcut = nn.Sequential(
                nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                make_norm(norm, out_channels),
            )
        self.act = nn.ReLU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.norm2(self.conv2(self.unit1(x))) + self.shortcut(x))


class ResNet(SiteModel):
    """CIFAR-style ResNet: 3x3 stem, no initial max-pool, global average pooling."""

    def __init__(self, blocks_per_stage: tuple[int, ...], stage_widths: tuple[int, ...],
                 in_channels: int, num_classes: int, norm: str = "batch") -> None:
        super().__init__()
        self.stem = ConvUnit(in_channels, stage_widths[0], norm=norm)
        stages, channels = [], stage_widths[0]
        for index, (blocks, width) in enumerate(zip(blocks_per_stage, stage_widths, strict=True)):
            for block in range(blocks):
                stride = 2 if index > 0 and block == 0 else 1
                stages.append(BasicBlock(channels, width, stride, norm))
                channels = width
        self.stages = nn.Sequential(*stages)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.stages(self.stem(x))))


class VGG9(SiteModel):
    """VGG-9 (six conv units, three linear layers) as used in FL papers."""

    def __init__(self, in_channels: int, num_classes: int, width: int = 32,
                 norm: str = "batch") -> None:
        super().__init__()
        plan: list[int | str] = [width, 2 * width, "M", 4 * width, 4 * width, "M",
                                 8 * width, 8 * width, "M"]
        layers: list[nn.Module] = []
        channels = in_channels
        for item in plan:
            if item == "M":
                layers.append(nn.MaxPool2d(2))
            else:
                layers.append(ConvUnit(channels, int(item), norm=norm))
                channels = int(item)
        layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.hidden1 = HiddenLinear(channels * 4, 16 * width)
        self.hidden2 = HiddenLinear(16 * width, 16 * width)
        self.classifier = nn.Linear(16 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.hidden2(self.hidden1(self.features(x))))


def _collect_sites(module: nn.Module, prefix: str) -> list[NeuronSite]:
    if isinstance(module, ConvUnit):
        return [NeuronSite(f"{prefix}act",
                           norm_zero_targets(prefix, "conv", "norm", module.norm_kind),
                           module.conv.out_channels)]
    if isinstance(module, HiddenLinear):
        return [NeuronSite(f"{prefix}act", (f"{prefix}fc",), module.fc.out_features)]
    sites = []
    for name, child in module.named_children():
        sites += _collect_sites(child, f"{prefix}{name}.")
    if isinstance(module, BasicBlock):
        # The residual branch's channel before the addition: zeroing it makes this
        # branch output zero for that channel.
        sites.append(NeuronSite(f"{prefix}norm2",
                                norm_zero_targets(prefix, "conv2", "norm2", module.norm_kind),
                                module.conv2.out_channels))
    return sites


def _resnet(blocks: tuple[int, ...], base_widths: tuple[int, ...]) -> Callable[..., ResNet]:
    def build(in_channels: int, num_classes: int, width: int, norm: str) -> ResNet:
        scale = width / base_widths[0]
        widths = tuple(max(1, round(w * scale)) for w in base_widths)
        return ResNet(blocks, widths, in_channels, num_classes, norm)

    return build


MODELS: dict[str, tuple[Callable[..., SiteModel], int, str]] = {
    # name -> (builder(in_channels, num_classes, width, norm), default width, default norm)
    "cnn": (SmallCNN, 32, "group"),
    "resnet18": (_resnet((2, 2, 2, 2), (64, 128, 256, 512)), 64, "batch"),
    "resnet34": (_resnet((3, 4, 6, 3), (64, 128, 256, 512)), 64, "batch"),
    "resnet32": (_resnet((5, 5, 5), (16, 32, 64)), 16, "batch"),
    "vgg9": (VGG9, 32, "batch"),
}


def build_model(name: str, in_channels: int, num_classes: int, width: int = 0,
                seed: int | None = None, norm: str = "", init: str = "pytorch") -> SiteModel:
    """Build a model by name.

    Parameters
    ----------
    name : str
        One of ``MODELS``.
    in_channels : int
        Input channels (1 gray, 3 RGB).
    num_classes : int
        Output classes.
    width : int (default: 0)
        Width of the first stage; 0 takes the model's standard width.
    seed : int, optional
        Seed of the parameter initialisation (a private generator; the global RNG is
        not used). None leaves PyTorch's construction-time draw (clients overwrite it).
    norm : str (default: "")
        ``"batch"`` or ``"group"``; empty takes the model's default (GroupNorm for
        the small CNN of the cross-domain digits task, BatchNorm otherwise).
    init : str (default: "pytorch")
        Initialisation scheme (``fedunl_flwr.initialization.INIT_SCHEMES``), applied
        when ``seed`` is given.
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {sorted(MODELS)}")
    builder, default_width, default_norm = MODELS[name]
    model = builder(in_channels, num_classes, width or default_width, norm or default_norm)
    if seed is not None:
        initialize_model(model, init, torch.Generator().manual_seed(seed))
    return model


def get_device() -> torch.device:
    """CUDA when present, else CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")
