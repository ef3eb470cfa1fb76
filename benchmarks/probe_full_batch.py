"""A converged linear probe, independent of hdssl's trainer: Debian's PyTorch, full-batch L-BFGS.

hdssl-linear-eval trains its head with Adam on patches for a fixed step budget (method.md 7). This script
fits the same function family (per class, a sigmoid of a linear map of every pyramid level's features,
nearest-upsampled to the finest grid, standardised per channel) on every voxel of the training subjects at
once with L-BFGS until it converges, and scores the test subjects with the same hard Dice (class of the
highest probability where it is >= 0.5). It answers whether a difference between backbones is in their
features or in how far a step-limited probe got. The FPN is the independent PyTorch one of
tests/train/pytorch_fpn_check.py; backbones are read from hdssl's files (backbone.safetensors, or any
model file with `backbone.`-prefixed keys, e.g. OUT/model.safetensors of a `--weights none` probe, which
holds the exact random initialisation hdssl probed).

Usage: probe_full_batch.py COHORT_DIR TRAIN_LIST TEST_LIST NAME=FILE [NAME=FILE ...]
  TRAIN_LIST / TEST_LIST: comma-separated subject numbers (e.g. 8 or 8,9,10,11 and 13,14,15)
Prints a Markdown table of test Dice per backbone.
"""
import json
import os
import sys

import nibabel as nib
import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "train"))
from pytorch_fpn_check import FPN3d, read_safetensors  # noqa: E402


def load_subject(cohort, i, classes):
    img = nib.load(os.path.join(cohort, "subjects", "sub-%03d_t1.nii.gz" % i)).get_fdata().astype(np.float32)
    lab = nib.load(os.path.join(cohort, "subjects", "sub-%03d_labels.nii.gz" % i)).get_fdata().astype(np.int64)
    lo, hi = np.percentile(img, [0.01, 99.9])  # the mri preset's intensity window
    img = np.clip((img - lo) / (hi - lo), 0, 1)
    target = np.zeros(lab.shape, np.int64)
    for k, values in enumerate(classes.values()):
        for v in values if isinstance(values, list) else [values]:
            target[lab == v] = k + 1
    return torch.from_numpy(img)[None, None], torch.from_numpy(target)


def backbone(path):
    tensors, _ = read_safetensors(path)
    prefix = next(k[: -len("first_conv.weight")] for k in tensors if k.endswith("first_conv.weight"))
    fpn_keys = {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}
    fpn_keys = {k: v for k, v in fpn_keys.items() if k.split(".")[0] in
                {"first_conv", "left_blocks", "down_blocks", "bottom_block", "up_blocks", "skip_blocks", "right_blocks"}}
    w = fpn_keys["first_conv.weight"]
    levels = 1 + max(int(k.split(".")[1]) for k in fpn_keys if k.startswith("left_blocks.")) + 1
    model = FPN3d(w.shape[1], w.shape[0], levels)
    model.load_state_dict(fpn_keys, strict=True)
    return model.eval()


def features(model, x):
    with torch.no_grad():
        pyramid = model(x)
    out = []
    for p in pyramid:
        while p.shape[2] < x.shape[2]:
            p = F.interpolate(p, scale_factor=2, mode="nearest")
        out.append(p[:, :, : x.shape[2], : x.shape[3], : x.shape[4]])
    return torch.cat(out, 1)[0].flatten(1).t()  # (voxels, channels)


def main():
    cohort, train_ids, test_ids = sys.argv[1], sys.argv[2], sys.argv[3]
    classes = json.load(open(os.path.join(cohort, "classes.json")))
    K = len(classes)
    train = [load_subject(cohort, int(i), classes) for i in train_ids.split(",")]
    test = [load_subject(cohort, int(i), classes) for i in test_ids.split(",")]
    print("| backbone | test Dice (full-batch L-BFGS probe, %d training, %d test subjects) |" % (len(train), len(test)))
    print("|---|---:|")
    for arg in sys.argv[4:]:
        name, path = arg.split("=", 1)
        torch.manual_seed(0)
        model = backbone(path)
        a = torch.cat([features(model, x) for x, _ in train])
        y = torch.cat([t.flatten() for _, t in train])
        mu, sd = a.mean(0), a.std(0).clamp_min(1e-6)
        a = (a - mu) / sd
        target = F.one_hot(y, K + 1)[:, 1:].float()
        head = torch.nn.Linear(a.shape[1], K)
        opt = torch.optim.LBFGS(head.parameters(), max_iter=300, history_size=20, line_search_fn="strong_wolfe")

        def closure():
            opt.zero_grad()
            loss = F.binary_cross_entropy_with_logits(head(a), target)
            loss.backward()
            return loss

        opt.step(closure)
        dice = []
        for x, t in test:
            with torch.no_grad():
                p = torch.sigmoid(head((features(model, x) - mu) / sd))
            v, i = p.max(1)
            pred = torch.where(v >= 0.5, i + 1, torch.zeros_like(i))
            truth = t.flatten()
            per = []
            for k in range(1, K + 1):
                P, G = (pred == k).double(), (truth == k).double()
                per.append(float((2 * (P * G).sum() + 1e-5) / (P.sum() + G.sum() + 1e-5)))
            dice.append(np.mean(per))
        print("| %s | %.3f |" % (name, float(np.mean(dice))))
        sys.stdout.flush()


if __name__ == "__main__":
    main()
