"""The detector network (torch): a compact CSP-style backbone, an FPN neck and an anchor-free
head at strides 8/16/32, exported with its box decoding in the YOLOv8 output layout.

Kept small on purpose so that it runs in a few milliseconds per parcel on one CPU core. `WIDTH` and
`NECK` are the shipped size (about 2 M parameters, ~22 ms per 320 px frame on one core); the
original CPU-only model used `SMALL_WIDTH`/`SMALL_NECK` (about 1 M parameters).
"""

from __future__ import annotations

import torch
from torch import nn

STRIDES = (8, 16, 32)
WIDTH = (24, 48, 96, 160, 256)
NECK = 96
SMALL_WIDTH = (16, 32, 48, 96, 160)
SMALL_NECK = 64


class ConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, k: int = 3, s: int = 1) -> None:
        super().__init__(
            nn.Conv2d(c_in, c_out, k, s, k // 2, bias=False),
            nn.BatchNorm2d(c_out, momentum=0.03, eps=1e-3),
            nn.SiLU(inplace=True),
        )


class CSPBlock(nn.Module):
    """Split channels; run one half through residual 3x3 convs; concatenate; fuse (C2f-lite)."""

    def __init__(self, c: int, n: int = 1) -> None:
        super().__init__()
        h = c // 2
        self.split = ConvBN(c, 2 * h, 1)
        self.blocks = nn.ModuleList(nn.Sequential(ConvBN(h, h), ConvBN(h, h)) for _ in range(n))
        self.fuse = ConvBN((2 + n) * h, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a, b = self.split(x).chunk(2, 1)
        outs = [a, b]
        for blk in self.blocks:
            b = b + blk(b)
            outs.append(b)
        return self.fuse(torch.cat(outs, 1))


class SPPF(nn.Module):
    def __init__(self, c: int) -> None:
        super().__init__()
        self.pre = ConvBN(c, c // 2, 1)
        self.pool = nn.MaxPool2d(5, 1, 2)
        self.post = ConvBN(c * 2, c, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pre(x)
        p1 = self.pool(x)
        p2 = self.pool(p1)
        return self.post(torch.cat([x, p1, p2, self.pool(p2)], 1))


class Detector(nn.Module):
    """Returns per level (cls logits [B, nc, H, W], box log-distances [B, 4, H, W])."""

    def __init__(self, nc: int, width: tuple[int, ...] = WIDTH, neck: int = NECK) -> None:
        super().__init__()
        c0, c1, c2, c3, c4 = width
        self.stem = nn.Sequential(ConvBN(3, c0, 3, 2), ConvBN(c0, c1, 3, 2), CSPBlock(c1))
        self.s3 = nn.Sequential(ConvBN(c1, c2, 3, 2), CSPBlock(c2))  # stride 8
        self.s4 = nn.Sequential(ConvBN(c2, c3, 3, 2), CSPBlock(c3))  # stride 16
        self.s5 = nn.Sequential(ConvBN(c3, c4, 3, 2), CSPBlock(c4), SPPF(c4))  # stride 32
        f = neck
        self.lat5, self.lat4, self.lat3 = ConvBN(c4, f, 1), ConvBN(c3, f, 1), ConvBN(c2, f, 1)
        self.up = nn.Upsample(scale_factor=2, mode="nearest")
        self.fuse4, self.fuse3 = ConvBN(f, f), ConvBN(f, f)
        self.down3, self.down4 = ConvBN(f, f, 3, 2), ConvBN(f, f, 3, 2)  # bottom-up (PAN)
        self.pan4, self.pan5 = ConvBN(f, f), ConvBN(f, f)
        self.heads = nn.ModuleList(nn.Sequential(ConvBN(f, f), ConvBN(f, f)) for _ in STRIDES)
        self.cls = nn.ModuleList(nn.Conv2d(f, nc, 1) for _ in STRIDES)
        self.reg = nn.ModuleList(nn.Conv2d(f, 4, 1) for _ in STRIDES)
        for conv in self.cls:
            nn.init.constant_(conv.bias, -4.6)  # prior 0.01: stable focal loss at start
        self.nc = nc

    def forward(self, x: torch.Tensor) -> list[tuple[torch.Tensor, torch.Tensor]]:
        x = self.stem(x)
        c3 = self.s3(x)
        c4 = self.s4(c3)
        c5 = self.s5(c4)
        p5 = self.lat5(c5)
        p4 = self.fuse4(self.lat4(c4) + self.up(p5))
        p3 = self.fuse3(self.lat3(c3) + self.up(p4))
        n4 = self.pan4(p4 + self.down3(p3))
        n5 = self.pan5(p5 + self.down4(n4))
        out = []
        for i, feat in enumerate((p3, n4, n5)):
            h = self.heads[i](feat)
            out.append((self.cls[i](h), self.reg[i](h)))
        return out


def grid(h: int, w: int, stride: int, device: torch.device | None = None) -> torch.Tensor:
    """Location centres (h*w, 2) as (x, y) in input pixels."""
    ys, xs = torch.meshgrid(torch.arange(h, device=device), torch.arange(w, device=device),
                            indexing="ij")
    return (torch.stack([xs, ys], -1).reshape(-1, 2).float() + 0.5) * stride


def decode(levels: list[tuple[torch.Tensor, torch.Tensor]]) -> tuple[torch.Tensor, torch.Tensor]:
    """Concatenate levels: (cls logits [B, N, nc], boxes x1y1x2y2 [B, N, 4] in input pixels)."""
    logits, boxes = [], []
    for (cls, reg), stride in zip(levels, STRIDES, strict=True):
        b, nc, h, w = cls.shape
        centres = grid(h, w, stride, cls.device)
        dist = torch.exp(reg.clamp(max=8.0)).permute(0, 2, 3, 1).reshape(b, -1, 4) * stride
        boxes.append(torch.cat([centres - dist[..., :2], centres + dist[..., 2:]], -1))
        logits.append(cls.permute(0, 2, 3, 1).reshape(b, -1, nc))
    return torch.cat(logits, 1), torch.cat(boxes, 1)


class Exported(nn.Module):
    """Input [B, 3, H, W] RGB 0..1 -> [B, 4 + nc, N]: cx, cy, w, h (input px), sigmoid scores."""

    def __init__(self, net: Detector) -> None:
        super().__init__()
        self.net = net

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        logits, boxes = decode(self.net(images))
        xy = (boxes[..., :2] + boxes[..., 2:]) / 2
        wh = boxes[..., 2:] - boxes[..., :2]
        return torch.cat([xy, wh, logits.sigmoid()], -1).permute(0, 2, 1)


class FlipEnsemble(nn.Module):
    """Test-time flips inside the graph: each image runs as it is, mirrored left-right,
    top-bottom and both (one batch of 4B through ``exported``); each copy's boxes are mapped
    back to the image and the four sets pooled along N, for the server's class-aware NMS.
    Same layout as ``Exported``, [B, 4 + nc, 4N], so any YOLOv8-layout server reads it. The
    weights are stored once: ``train.load_onnx_weights`` reads them back from this graph too."""

    def __init__(self, exported: nn.Module, size: int) -> None:
        super().__init__()
        self.exported = exported
        self.size = float(size)  # letterboxed square input: W = H = size

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = torch.cat([images, images.flip(3), images.flip(2), images.flip(2, 3)], 0)
        out = self.exported(x)  # [4B, 4 + nc, N]
        plain, lr, tb, both = out.reshape(4, -1, out.shape[1], out.shape[2]).unbind(0)
        s = self.size

        def mirrored(o: torch.Tensor, across_x: bool, across_y: bool) -> torch.Tensor:
            cx = s - o[:, 0:1] if across_x else o[:, 0:1]
            cy = s - o[:, 1:2] if across_y else o[:, 1:2]
            return torch.cat([cx, cy, o[:, 2:]], 1)

        return torch.cat([plain, mirrored(lr, True, False), mirrored(tb, False, True),
                          mirrored(both, True, True)], 2)
