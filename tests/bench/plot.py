#!/usr/bin/env python3
"""Draws a silo-bench scenario's PNG from the `plot` object of its JSON.

    python plot.py onboard.json onboard.png

The `plot` object: title, xlabel, ylabel, optional ylabel_right, series (each with label,
points [[x, y], ...], style "step" | "line" | "dashed" | "points", axis "left" | "right") and vlines
(each with x and label). Runs with matplotlib's Agg backend and the fonts matplotlib ships,
so it needs no display and no system fonts.
"""

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


def main(src: str, dst: str) -> int:
    with open(src) as f:
        doc = json.load(f)
    spec = doc["plot"]
    fig, left = plt.subplots(figsize=(10, 5.6), dpi=110)
    right = None
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    handles = []
    for i, s in enumerate(spec.get("series", [])):
        points = s.get("points") or []
        if not points:
            continue
        xs = [p[0] for p in points]
        ys = [p[1] for p in points]
        ax = left
        if s.get("axis") == "right":
            if right is None:
                right = left.twinx()
                right.set_ylabel(spec.get("ylabel_right", ""))
            ax = right
        color = colors[i % len(colors)]
        style = s.get("style", "line")
        if style == "step":
            (h,) = ax.step(xs, ys, where="post", label=s["label"], color=color, linewidth=1.8)
        elif style == "points":
            h = ax.scatter(xs, ys, label=s["label"], color=color, s=14)
        elif style == "dashed":
            (h,) = ax.plot(xs, ys, "--", label=s["label"], color="gray", linewidth=1.4)
        else:
            (h,) = ax.plot(xs, ys, label=s["label"], color=color, linewidth=1.6)
        handles.append(h)
    # Headroom above the data for the markers' labels.
    left.set_ylim(0, left.get_ylim()[1] * 1.12)
    if right is not None:
        right.set_ylim(0, right.get_ylim()[1] * 1.12)
    top = left.get_ylim()[1]
    for v in spec.get("vlines", []):
        left.axvline(v["x"], color="black", linestyle=":", linewidth=1)
        left.annotate(v["label"], (v["x"], top), xytext=(3, -12), textcoords="offset points",
                      rotation=90, va="top", fontsize=8)
    left.set_xlim(left=0)
    left.set_title(spec.get("title", doc.get("scenario", "")), fontsize=11)
    left.set_xlabel(spec.get("xlabel", ""))
    left.set_ylabel(spec.get("ylabel", ""))
    left.grid(True, alpha=0.3)
    if handles:
        left.legend(handles=handles, loc="best", fontsize=8, framealpha=0.9)
    commit = (doc.get("git") or {}).get("commit") or "?"
    machine = doc.get("machine") or {}
    fig.text(0.01, 0.01, f"commit {commit}, {machine.get('nproc', '?')} cores, "
             f"{machine.get('mem_total_gib', '?')} GiB", fontsize=7, color="gray")
    fig.tight_layout()
    fig.savefig(dst)
    return 0


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: plot.py SCENARIO.json OUT.png")
    sys.exit(main(sys.argv[1], sys.argv[2]))
