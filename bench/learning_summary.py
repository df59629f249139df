"""One block per evaluated checkpoint: the guidance sweep of scd.evaluate's results.json, with the per-attribute
degree accuracies. Usage: python bench/learning_summary.py RESULTS.json [...]"""
import json
import sys

for path in sys.argv[1:]:
    results = json.load(open(path))
    print(path)
    for row in results["sweep"]:
        attrs = " ".join(f"{key.split('/')[1][:5]}={value:.2f}" for key, value in row.items()
                         if key.startswith("attr_acc/") and key.split("/")[1] not in ("mean", "chance"))
        print(f"  scale {row['cond_scale']:g}: degree {row['attr_acc/mean']:.3f} presence "
              f"{row['attr_acc_presence/mean']:.3f} exp RMSE {row['exp_error']:.3f} FD {row['fd']:.1f} | {attrs}")
