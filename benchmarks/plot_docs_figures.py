"""Draw the documentation's benchmark plots from the figures committed under docs/benchmarks/.

    pip install matplotlib && python benchmarks/plot_docs_figures.py

Each `docs/benchmarks/<name>.json` holds the `results` of one benchmark run (the `--json` output
of `inmemory_bench.py`, or figures quoted in the docs, with a `source` saying where they come
from); this script writes `docs/benchmarks/<name>.png` beside it: ops/s of the baseline and of
dref, side by side, per operation. It measures nothing itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

FIGURES = Path(__file__).resolve().parent.parent / "docs" / "benchmarks"
LABELS = {
    "inmemory": ("dict + msgpack", "dref inmemory"),
    "redis-lock": ("redis-py Lock", "dref redis"),
    "raft-client": ("etcd 3.4", "dref raft, client mode"),
    "raft-members": ("PySyncObj (no fsync)", "dref raft (fsync)"),
}


def plot(path: Path) -> Path:
    data = json.loads(path.read_text(encoding="utf-8"))
    results = data["results"]
    base_label, dref_label = LABELS.get(data["benchmark"], ("baseline", "dref"))
    ops = [r["op"] for r in results]
    base = [r["baseline"]["ops_per_s"] for r in results]
    dref = [r["subject"]["ops_per_s"] for r in results]
    fig, ax = plt.subplots(figsize=(6.4, 3.2), dpi=100)
    width = 0.38
    xs = range(len(ops))
    ax.bar([x - width / 2 for x in xs], base, width, label=base_label, color="#9e9e9e")
    ax.bar([x + width / 2 for x in xs], dref, width, label=dref_label, color="#3f51b5")
    ax.set_xticks(list(xs), ops)
    if len(ops) > 4:  # long rows: slanted labels, so that they do not run into each other
        ax.tick_params(axis="x", labelrotation=25)
        for label in ax.get_xticklabels():
            label.set_horizontalalignment("right")
    ax.set_ylabel(data.get("unit", "ops/s"))
    ax.set_title(f"{data['benchmark']}: ops/s, higher is better")
    ax.legend()
    fig.tight_layout()
    out = path.with_suffix(".png")
    fig.savefig(out, metadata={"Software": None})
    plt.close(fig)
    return out


def main() -> None:
    for path in sorted(FIGURES.glob("*.json")):
        print(f"wrote {plot(path).relative_to(FIGURES.parent.parent)}")


if __name__ == "__main__":
    main()
