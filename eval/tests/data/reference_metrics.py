"""Writes reference_metrics.json: random single-class detection cases scored by pycocotools COCOeval (as
torchmetrics MeanAveragePrecision `map` with the ECAMP IoU thresholds) and ROC-AUC cases scored by sklearn.

Usage: python reference_metrics.py reference_metrics.json   (needs numpy, pycocotools, scikit-learn)
"""
import contextlib, io, json, random, sys
import numpy as np
from pycocotools.coco import COCO
from pycocotools.cocoeval import COCOeval
from sklearn.metrics import roc_auc_score

THR = [0.4, 0.45, 0.5, 0.55, 0.6, 0.65, 0.7, 0.75]
rng = random.Random(7)
def rbox():
    x0, y0 = rng.randint(0, 20), rng.randint(0, 20)
    return [x0, y0, x0 + rng.randint(1, 12), y0 + rng.randint(1, 12)]

def coco_map(preds, truths):
    images = [{"id": i + 1} for i in range(len(truths))]
    anns, aid = [], 1
    for i, gts in enumerate(truths):
        for b in gts:
            w, h = b[2] - b[0], b[3] - b[1]
            anns.append({"id": aid, "image_id": i + 1, "category_id": 1, "bbox": [b[0], b[1], w, h], "area": w * h, "iscrowd": 0}); aid += 1
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns, "categories": [{"id": 1}]}
    with contextlib.redirect_stdout(io.StringIO()):
        gt.createIndex()
        dets = []
        for i, ps in enumerate(preds):
            for s, b in ps:
                dets.append({"image_id": i + 1, "category_id": 1, "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "score": s})
        if not dets:
            return 0.0 if anns else -1.0
        dt = gt.loadRes(dets)
        e = COCOeval(gt, dt, "bbox")
        e.params.iouThrs = np.array(THR)
        e.evaluate(); e.accumulate(); e.summarize()
    return float(e.stats[0])

cases = []
for _ in range(300):
    n = rng.randint(1, 5)
    truths = [[rbox() for _ in range(rng.randint(0, 3))] for _ in range(n)]
    preds = []
    for gts in truths:
        ps = []
        for _ in range(rng.randint(0, 5)):
            if gts and rng.random() < 0.6:
                g = rng.choice(gts)
                b = [g[0] + rng.randint(-2, 2), g[1] + rng.randint(-2, 2), g[2] + rng.randint(-2, 2), g[3] + rng.randint(-2, 2)]
                if b[2] <= b[0] or b[3] <= b[1]:
                    b = g[:]
            else:
                b = rbox()
            ps.append((rng.choice([0.3, 0.5, 0.5, 0.7, 0.9]), b))
        preds.append(ps)
    if sum(len(g) for g in truths) == 0:
        continue
    cases.append({"preds": preds, "truths": truths, "map": coco_map(preds, truths)})

aucs = []
for _ in range(200):
    n = rng.randint(2, 40)
    s = [rng.choice([0.1, 0.2, 0.25, 0.5, 0.75, 0.9]) for _ in range(n)]
    t = [float(rng.random() < 0.4) for _ in range(n)]
    if len(set(t)) < 2:
        continue
    aucs.append({"scores": s, "targets": t, "auc": float(roc_auc_score(t, s))})
json.dump({"map": cases[:60], "auc": aucs[:40]}, open(sys.argv[1], "w"), separators=(",", ":"))
print(len(cases), len(aucs), sum(c["map"] for c in cases) / len(cases))
