"""Main effects of the 2x2x2 ablation in docs/ablation (augmentation, label smoothing, FC weight decay)
and the gains of test-time augmentation, from each job's results.json and its eval_<tta>/metrics.json
(full PrivateTest, written by `python -m fer_sweep.evaluate ... out=<job>/eval_<tta>`).

    python docs/ablation/main_effects.py docs/ablation
"""
import json
import statistics
import sys
from pathlib import Path

root = Path(sys.argv[1])
rows = []
for job in sorted(p for p in root.iterdir() if (p / "results.json").is_file()):
    r = json.loads((job / "results.json").read_text())
    ov = dict(o.split("=", 1) for o in r["overrides"])
    row = {"aug": ov["augment"] == "light", "ls": float(ov["model.label_smoothing"]) > 0, "wd": float(ov["model.fc_weight_decay"]) > 0,
           "val": 100 * r["best_val_acc"], "test": 100 * r["test_acc_best"], "status": r["status"]}
    for tta in ("none", "flip", "tencrop"):
        m = job / f"eval_{tta}" / "metrics.json"
        if m.is_file():
            row[tta] = 100 * json.loads(m.read_text())["accuracy"]
    rows.append(row)
for r in rows:
    r["test_subset"] = r["test"]
    if "none" in r:
        r["test"] = r["none"]  # the full 3,589-face PrivateTest (results.json's is the 50% subset)
print(f"{len(rows)} jobs, statuses {sorted(set(r['status'] for r in rows))}\n")
print("| augmentation | label smoothing 0.1 | FC weight decay 1e-3 | best PublicTest (50% subset) | PrivateTest (all 3,589) | + flip | + ten-crop |")
print("|---|---|---|---:|---:|---:|---:|")
yn = lambda b: "yes" if b else "no"
for r in sorted(rows, key=lambda r: (r["aug"], r["ls"], r["wd"])):
    print(f"| {yn(r['aug'])} | {yn(r['ls'])} | {yn(r['wd'])} | {r['val']:.2f}% | {r['test']:.2f}% | {r.get('flip', float('nan')):.2f}% | {r.get('tencrop', float('nan')):.2f}% |")
print("\nMain effects (mean of the 4 runs with the part minus the 4 without; points):\n")
print("| part | best PublicTest | PrivateTest | PrivateTest + flip |")
print("|---|---:|---:|---:|")
for key, name in (("aug", "light augmentation"), ("ls", "label smoothing 0.1"), ("wd", "FC weight decay 1e-3")):
    def eff(metric):
        on = [r[metric] for r in rows if r[key] and metric in r]
        off = [r[metric] for r in rows if not r[key] and metric in r]
        return statistics.mean(on) - statistics.mean(off) if on and off else float("nan")
    print(f"| {name} | {eff('val'):+.2f} | {eff('test'):+.2f} | {eff('flip'):+.2f} |")
tta = [(r["flip"] - r["none"], r["tencrop"] - r["none"]) for r in rows if {"flip", "tencrop", "none"} <= r.keys()]
if tta:
    f = [a for a, _ in tta]; t = [b for _, b in tta]
    print(f"\nTest-time augmentation over the {len(tta)} runs (PrivateTest, points vs no TTA): flip {statistics.mean(f):+.2f} (range {min(f):+.2f} to {max(f):+.2f}), ten-crop {statistics.mean(t):+.2f} (range {min(t):+.2f} to {max(t):+.2f})")
