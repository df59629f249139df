"""IR-SE residual units and the IR-SE trunk of InsightFace's ArcFace (IR-SE50), shared by the ArcFace identity
network (:mod:`texface.metrics.arcface`) and the Re-PoI encoder's backbone (:mod:`inversion.encoder`).

Parameter names follow the pSp / TreB1eN ``model_ir_se50.pth`` layout (``input_layer.*``, ``body.<i>.res_layer.*``,
``body.<i>.shortcut_layer.*``), so those files load with ``strict=True``.

A unit is ``res(x) + shortcut(x)``:

- res: BN, conv3x3 (stride 1), PReLU, conv3x3 (stride s), BN, then squeeze-excitation (IR-SE units only);
- shortcut: ``x[:, :, ::s, ::s]`` when the channel count is kept (a 1x1 max pool: no averaging), else a 1x1
  stride-s conv and BN.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

# Units per stage of the published depths (stages of 64, 128, 256, 512 channels).
IR_DEPTHS = {50: (3, 4, 14, 3), 100: (3, 13, 30, 3), 152: (3, 8, 36, 3)}
IR_CHANNELS = (64, 128, 256, 512)
SE_REDUCTION = 16


class SqueezeExcite(nn.Module):
    """x * sigmoid(fc2(relu(fc1(mean_hw x)))), with bias-free 1x1 convs."""

    def __init__(self, channels: int, reduction: int = SE_REDUCTION):
        super().__init__()
        hidden = max(1, channels // reduction)  # at least one unit for the narrow test models
        self.fc1 = nn.Conv2d(channels, hidden, 1, bias=False)
        self.fc2 = nn.Conv2d(hidden, channels, 1, bias=False)

    def forward(self, x: Tensor) -> Tensor:
        gate = self.fc2(torch.relu(self.fc1(x.mean((2, 3), keepdim=True))))
        return x * torch.sigmoid(gate)


class IRUnit(nn.Module):
    """One improved-residual unit (``bottleneck_IR``, or ``bottleneck_IR_SE`` with ``squeeze_excite``)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int = 1, *, squeeze_excite: bool = True):
        super().__init__()
        if in_channels == out_channels:
            self.shortcut_layer = nn.MaxPool2d(1, stride)
        else:
            self.shortcut_layer = nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, stride, bias=False),
                                                nn.BatchNorm2d(out_channels))
        layers = [nn.BatchNorm2d(in_channels), nn.Conv2d(in_channels, out_channels, 3, 1, 1, bias=False),
                  nn.PReLU(out_channels), nn.Conv2d(out_channels, out_channels, 3, stride, 1, bias=False),
                  nn.BatchNorm2d(out_channels)]
        if squeeze_excite:
            layers.append(SqueezeExcite(out_channels))
        self.res_layer = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.res_layer(x) + self.shortcut_layer(x)


class IRTrunk(nn.Module):
    """Input layer (conv3x3 3->C0, BN, PReLU) and the IR-SE body; ``forward`` returns every stage's output.

    Args:
        units: units per stage; IR_DEPTHS[50] is ArcFace's IR-SE50 (the first unit of each stage has stride 2).
        channels: channels per stage (IR_CHANNELS for the published networks; smaller for fast tests).
        in_channels: image channels.
    """

    def __init__(self, units: tuple[int, ...] = IR_DEPTHS[50], channels: tuple[int, ...] = IR_CHANNELS, *,
                 in_channels: int = 3):
        super().__init__()
        if len(units) != len(channels) or min(units) < 1:
            raise ValueError(f"units {tuple(units)} and channels {tuple(channels)} must name the same stages, "
                             "each with at least one unit")
        self.input_layer = nn.Sequential(nn.Conv2d(in_channels, channels[0], 3, 1, 1, bias=False),
                                         nn.BatchNorm2d(channels[0]), nn.PReLU(channels[0]))
        body, self.stage_ends, previous = [], [], channels[0]
        for count, width in zip(units, channels):
            body += [IRUnit(previous if i == 0 else width, width, 2 if i == 0 else 1) for i in range(count)]
            self.stage_ends.append(len(body) - 1)
            previous = width
        self.body = nn.Sequential(*body)
        self.channels = tuple(channels)

    def forward(self, x: Tensor) -> list[Tensor]:
        x, stages = self.input_layer(x), []
        for index, unit in enumerate(self.body):
            x = unit(x)
            if index in self.stage_ends:
                stages.append(x)
        return stages
