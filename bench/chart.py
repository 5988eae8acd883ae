#!/usr/bin/python3
"""Bar chart of a bench/run.ts result file: one panel per metric, bars for bucketfs, s3fs,
rclone and local/reference, the target (the bucketfs figure that would just meet it) as a
dashed line, DNF/ERR written where a bar is missing.

Usage: python3 bench/chart.py bench/results/latest.json bench/results/latest.png
Needs python3-matplotlib (bench/run.sh installs it from apt when missing).
"""
import json
import math
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

COLS = [("bucketfs", "#1f77b4"), ("s3fs", "#ff7f0e"), ("rclone", "#2ca02c"), ("local", "#7f7f7f")]


def fmt(v):
    if v >= 100:
        return f"{v:.0f}"
    if v >= 10:
        return f"{v:.1f}"
    if v >= 1:
        return f"{v:.2f}"
    return f"{v:.3g}"


def main():
    src, dst = sys.argv[1], sys.argv[2]
    with open(src) as f:
        data = json.load(f)
    rows = data["rows"]
    n = len(rows)
    ncols = 4
    nrows = max(1, math.ceil(n / ncols))
    fig, axes = plt.subplots(nrows, ncols, figsize=(4.6 * ncols, 3.5 * nrows), squeeze=False)
    for i, row in enumerate(rows):
        ax = axes[i // ncols][i % ncols]
        names, vals, colors, labels = [], [], [], []
        for name, color in COLS:
            c = row["cells"].get(name)
            if c is None:
                continue
            names.append("local/ref" if name == "local" else name)
            v = c["value"]
            if v is None and c.get("compareValue") is not None:
                # DNF at stop, but it has a figure when left running: draw it hatched.
                v = c["compareValue"]
                labels.append("DNF*")
            elif v is None:
                labels.append("ERR" if c.get("error") else "DNF")
            else:
                labels.append(None)
            vals.append(0 if v is None else v)
            colors.append(color)
        extra = row.get("extraBars") or []
        if extra:
            # Labelled reference bars replace the single local/ref bar.
            if names and names[-1] == "local/ref":
                names.pop(), vals.pop(), colors.pop(), labels.pop()
            for e in extra:
                names.append(e["label"])
                vals.append(e["value"])
                colors.append("#7f7f7f")
                labels.append(None)
        bars = ax.bar(range(len(vals)), vals, color=colors)
        top = max(vals + [row["targetValue"] or 0]) or 1
        for b, lab, v in zip(bars, labels, vals):
            if lab == "DNF*":
                b.set_hatch("//")
                b.set_alpha(0.5)
            txt = lab if lab else fmt(v)
            if lab == "DNF*":
                txt = f"DNF\n({v:.1f} if left\nrunning)"
            ax.text(b.get_x() + b.get_width() / 2, max(v, 0) + top * 0.02, txt, ha="center", va="bottom", fontsize=7)
        if row.get("targetValue"):
            ax.axhline(row["targetValue"], color="red", linestyle="--", linewidth=1)
            ax.text(len(vals) - 0.5, row["targetValue"], "target", color="red", fontsize=7, ha="right", va="bottom")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names, fontsize=8)
        ax.set_ylim(0, top * 1.3)
        arrow = "higher is better" if row["better"] == "higher" else "lower is better"
        title = row["metric"].replace("`", "")
        if len(title) > 48:
            cut = title.rfind(" ", 0, 48)
            title = title[:cut] + "\n" + title[cut + 1 :]
        met = row.get("met")
        status = "" if row.get("target") is None else ("  [target met]" if met else "  [target missed]" if met is False else "")
        ax.set_title(f"{title}\n{row['unit']}, {arrow}{status}", fontsize=8)
        ax.tick_params(axis="y", labelsize=7)
    for j in range(n, nrows * ncols):
        axes[j // ncols][j % ncols].axis("off")
    lat = data.get("latencyMs") or 0
    fig.suptitle(
        f"bucketfs vs s3fs vs rclone — {data['started'][:19]}Z{' (quick)' if data.get('quick') else ''}"
        f"{f', +{lat:g} ms RTT' if lat else ', loopback MinIO'}",
        fontsize=11,
    )
    fig.tight_layout(rect=(0, 0, 1, 0.97))
    fig.savefig(dst, dpi=110)


if __name__ == "__main__":
    main()
