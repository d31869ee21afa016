"""The short table gpu/measure.sh prints last, from the files its parts wrote into OUT.

    python gpu/summary.py OUT
"""

from __future__ import annotations

import json
import sys
from pathlib import Path


def load(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def main(out: str) -> None:
    out = Path(out)
    lines = []
    qc = load(out / "quick_check.json")
    if qc:
        bad = [r["check"] for r in qc["results"] if not r.get("ok")]
        lines.append(f"correctness: {len(qc['results']) - len(bad)}/{len(qc['results'])} checks pass"
                     + (f"; FAILED: {', '.join(bad)}" if bad else "") + f" ({qc['device']})")
    else:
        lines.append("correctness: no quick_check.json")
    pre = load(out / "pretrain.json")
    lines.append("training, M tokens/s (step ms), per kernel set")
    if pre:
        for v in dict.fromkeys(r["variant"] for r in pre["results"]):
            rows = [r for r in pre["results"] if r["variant"] == v]
            old = next((r for r in rows if r.get("kernels") == "old"), None)
            for r in rows:
                ratio = f"{r['tokens_per_s'] / old['tokens_per_s']:5.2f}x old" if old else ""
                lines.append(f"  {v} {r['d_model']}x{r['n_layer']} {r['seq_len']} bp x {r['global_batch']:<5}"
                             f"{r['tokens_per_s'] / 1e6:7.3f} ({r['step_ms']:5.1f} ms)  {ratio}  {r.get('kernels')}")
    else:
        lines.append("  no pretrain.json")
    lines.append("forward, M tokens/s                   old      new    new/old")
    for path in sorted(out.glob("forward_*.json"), key=lambda p: int(p.stem.split("_")[1])):
        rows = load(path) or []
        groups: dict = {}
        for r in rows:
            groups.setdefault((r["model"], r["length"], r["batch"]), {})[r.get("kernels")] = r
        for (model, length, batch), by in groups.items():
            o, n = by.get("old"), by.get("new")
            if o and n and "tokens_per_s" in o and "tokens_per_s" in n:
                lines.append(f"  {model:<10} {batch:>4} x {length:<7} {o.get('dtype', ''):>5} {o['tokens_per_s'] / 1e6:7.3f}  "
                             f"{n['tokens_per_s'] / 1e6:7.3f}  {n['tokens_per_s'] / o['tokens_per_s']:5.2f}x")
            else:
                lines.append(f"  {model} {batch} x {length}: " + "; ".join(
                    f"{k}: {r.get('error', round(r.get('tokens_per_s', 0) / 1e6, 3))}" for k, r in by.items()))
    lc = load(out / "loss_curve.json")
    if lc:
        runs = lc["runs"]
        lines.append(f"loss curves {runs[0]['backend']} vs {runs[1]['backend']} ({lc['settings']['steps']} steps): "
                     f"max |diff| of {lc['settings']['window']}-step averages {lc['max_abs_diff_ma']:.4f} "
                     f"(noise {lc['noise_ma']:.4f}); final {lc['final_ma'][0]:.4f} vs {lc['final_ma'][1]:.4f}")
    sb = load(out / "scan_bench.json")
    if sb:
        lines.append("scan alone (ms, x exp2 floor):")
        for r in sb["rows"]:
            if "x_exp_floor" in r:
                lines.append(f"  {r['case']:<30} {r['kernels'][:50]:<50} {r['ms']:8.3f} {r['x_exp_floor']:6.2f}x")
            elif "ms" in r:
                lines.append(f"  {r['case']:<45} {r['ms']:8.3f}")
    for path in sorted(out.glob("profile_*.txt")):
        for line in path.read_text().splitlines():
            if line.startswith("SHARES "):
                s = json.loads(line[7:])
                share = ", ".join(f"{k} {v:.0%}" for k, v in s["share"].items() if v >= 0.005)
                lines.append(f"profile {s['config']}: {s['tokens_per_s'] / 1e6:.3f} M tok/s, wall {s['wall_ms']} ms, "
                             f"kernels {s['kernel_ms']} ms: {share}")
    print("\n".join(lines))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "gpu-out")
