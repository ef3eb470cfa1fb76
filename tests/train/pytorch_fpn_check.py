"""Loads a backbone.safetensors written by hdssl-pretrain into a PyTorch FPN with strict=True and
compares its eval-mode pyramid on a given input with the one hdssl computed.

The FPN (benchmarks/pytorch/spec_fpn.py) is written from the method's description (docs/model.md, the
reference's topology and state-dict names), independently of the C++ code:
  ResBlock: BN -> ReLU -> Conv3 -> BN -> ReLU -> Conv3, plus identity (layers.{0..5});
  Stack: two ResBlocks (layers.{0,1});
  down: MaxPool(2, ceil) then Conv1 (index 1); up: Conv1 then nearest x2 (index 0), cropped to the skip;
  p_i = Stack(up + skip_conv(e_i)), returned finest first.
Usage: python3 pytorch_fpn_check.py BACKBONE.safetensors CASE.safetensors
CASE holds `input` and `expected.{i}`; exit status 0 when every level agrees within 1e-4 (relative).
"""
import json
import os
import struct
import sys

import numpy as np
import torch

# The PyTorch FPN of the step benchmark (benchmarks/pytorch/spec_fpn.py), written from the method's text
# with the reference's state-dict names and checked there against the published model's outputs.
sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "benchmarks", "pytorch"))
from spec_fpn import SpecFPN  # noqa: E402

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


def main():
    weights, meta = read_safetensors(sys.argv[1])
    case, _ = read_safetensors(sys.argv[2])
    model = SpecFPN(int(meta["base_channels"]), int(meta["levels"]), in_ch=int(meta["in_channels"]))
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
    print("OK: PyTorch SpecFPN loads the weights strictly and matches hdssl within %.3g" % worst)
    return 0


if __name__ == "__main__":
    sys.exit(main())
