"""Checks an evaluation driver's outputs with nibabel and numpy alone (independent of hdssl's code):
every prediction has its input's shape and affine, holds only class indices, and the Dice values in
results.json equal Dice recomputed from the written prediction files and the label maps.

usage: check_predictions.py RESULTS_JSON CLASSES_JSON
Prints one line per volume and exits 1 on the first disagreement."""
import json
import sys
from collections import OrderedDict

import nibabel as nib
import numpy as np

results = json.load(open(sys.argv[1]), object_pairs_hook=OrderedDict)
classes = json.load(open(sys.argv[2]), object_pairs_hook=OrderedDict)
volumes = [v for f in results.get("folds", [results]) for v in f["volumes"]]
if not volumes:
    sys.exit("no volumes in " + sys.argv[1])
for v in volumes:
    pred_img = nib.load(v["prediction"])
    img = nib.load(v["image"])
    if pred_img.shape != img.shape:
        sys.exit(f"{v['volume']}: prediction shape {pred_img.shape} != input {img.shape}")
    if not np.allclose(pred_img.affine, img.affine, atol=1e-4):
        sys.exit(f"{v['volume']}: prediction affine\n{pred_img.affine}\n!= input\n{img.affine}")
    pred = np.asarray(pred_img.dataobj)
    if pred.min() < 0 or pred.max() > len(classes):
        sys.exit(f"{v['volume']}: prediction values outside 0..{len(classes)}")
    if "label" not in v:
        continue
    lab = np.asarray(nib.load(v["label"]).dataobj).astype(np.int64)
    for k, (name, values) in enumerate(classes.items()):
        values = values if isinstance(values, list) else [values]
        g = np.isin(lab, values).astype(np.float64)
        p = (pred == k + 1).astype(np.float64)
        dice = (2 * (p * g).sum() + 1e-5) / (p.sum() + g.sum() + 1e-5)
        written = v["dice"][name]
        if abs(dice - written) > 1e-9:
            sys.exit(f"{v['volume']} {name}: results.json says {written}, recomputed {dice}")
    print(f"{v['volume']}: shape, affine and {len(classes)} Dice values agree")
print("ok")
