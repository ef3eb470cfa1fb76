"""Loads a backbone.safetensors written by hdssl-pretrain into a PyTorch FPN3d with strict=True and
compares its eval-mode pyramid on a given input with the one hdssl computed.

The FPN is written here from the method's description (docs/model.md, the reference's topology and
state-dict names), independently of the C++ code:
  ResBlock: BN -> ReLU -> Conv3 -> BN -> ReLU -> Conv3, plus identity (layers.{0..5});
  Stack: two ResBlocks (layers.{0,1});
  down: MaxPool(2, ceil) then Conv1 (index 1); up: Conv1 then nearest x2 (index 0), cropped to the skip;
  p_i = Stack(up + skip_conv(e_i)), returned finest first.
Usage: python3 pytorch_fpn_check.py BACKBONE.safetensors CASE.safetensors
CASE holds `input` and `expected.{i}`; exit status 0 when every level agrees within 1e-4 (relative).
"""
import json
import struct
import sys

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

DTYPES = {"F32": np.float32, "F64": np.float64, "I64": np.int64, "I32": np.int32, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        data = f.read()
    meta = header.pop("__metadata__", {})
    out = {}
    for k, v in header.items():
        a, b = v["data_offsets"]
        arr = np.frombuffer(data[a:b], dtype=DTYPES[v["dtype"]]).reshape(v["shape"])
        out[k] = torch.from_numpy(arr.copy())
    return out, meta


class ResBlock(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.Sequential(nn.BatchNorm3d(c), nn.ReLU(), nn.Conv3d(c, c, 3, padding=1),
                                    nn.BatchNorm3d(c), nn.ReLU(), nn.Conv3d(c, c, 3, padding=1))

    def forward(self, x):
        return x + self.layers(x)


class Stack(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.layers = nn.Sequential(ResBlock(c), ResBlock(c))

    def forward(self, x):
        return self.layers(x)


class FPN3d(nn.Module):
    def __init__(self, in_channels, base, levels):
        super().__init__()
        c = [base * 2 ** i for i in range(levels)]
        self.first_conv = nn.Conv3d(in_channels, c[0], 3, padding=1)
        self.left_blocks = nn.ModuleList([Stack(c[i]) for i in range(levels - 1)])
        self.down_blocks = nn.ModuleList([nn.Sequential(nn.MaxPool3d(2, 2, ceil_mode=True), nn.Conv3d(c[i], c[i + 1], 1))
                                          for i in range(levels - 1)])
        self.bottom_block = Stack(c[-1])
        deep_first = list(range(levels - 2, -1, -1))
        self.up_blocks = nn.ModuleList([nn.Sequential(nn.Conv3d(c[i + 1], c[i], 1), nn.Upsample(scale_factor=2))
                                        for i in deep_first])
        self.skip_blocks = nn.ModuleList([nn.Conv3d(c[i], c[i], 1) for i in deep_first])
        self.right_blocks = nn.ModuleList([Stack(c[i]) for i in deep_first])

    def forward(self, x):
        x = self.first_conv(x)
        skips = []
        for left, down in zip(self.left_blocks, self.down_blocks):
            skips.append(left(x))
            x = down(skips[-1])
        pyramid = [self.bottom_block(x)]
        for up, skip, right, e in zip(self.up_blocks, self.skip_blocks, self.right_blocks, reversed(skips)):
            u = up(pyramid[0])[:, :, :e.shape[2], :e.shape[3], :e.shape[4]]
            pyramid.insert(0, right(u + skip(e)))
        return pyramid


def main():
    weights, meta = read_safetensors(sys.argv[1])
    case, _ = read_safetensors(sys.argv[2])
    model = FPN3d(int(meta["in_channels"]), int(meta["base_channels"]), int(meta["levels"]))
    result = model.load_state_dict(weights, strict=True)
    print("strict load:", result)
    model.eval()
    with torch.no_grad():
        pyramid = model(case["input"])
    worst = 0.0
    for i, p in enumerate(pyramid):
        e = case["expected.%d" % i]
        assert p.shape == e.shape, "level %d: shape %s vs %s" % (i, tuple(p.shape), tuple(e.shape))
        rel = float((p - e).abs().max() / e.abs().max().clamp_min(1e-12))
        worst = max(worst, rel)
        print("level %d %s: relative max difference %.3g" % (i, tuple(p.shape), rel))
    if worst > 1e-4:
        print("FAIL: worst relative difference %.3g > 1e-4" % worst)
        return 1
    print("OK: PyTorch FPN3d loads the weights strictly and matches hdssl within %.3g" % worst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
