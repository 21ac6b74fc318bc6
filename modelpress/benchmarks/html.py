"""report.html: one self-contained file (plots inlined as PNG data URIs, no scripts, no network) that opens
offline in any browser. Plots are drawn with matplotlib's Agg backend: latency vs accuracy and size vs
accuracy per target with the Pareto front highlighted, and latency distributions per variant."""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

from modelpress.io import write_text


def _png(fig) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    import matplotlib.pyplot as plt

    plt.close(fig)
    return base64.b64encode(buf.getvalue()).decode()


def _quality(r: dict, metric: str) -> float | None:
    if metric == "cosine":
        return None if r["fidelity"] is None else r["fidelity"]["cosine_mean"]
    if metric == "top1" and r["accuracy"] is not None:
        return r["accuracy"]["top1"] * 100
    return None if r["fidelity"] is None else r["fidelity"]["top1_agreement"] * 100


def plots(report: dict) -> dict[str, str]:
    """name -> base64 PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = report["task"].get("metric", "top1")
    qlabel = {"top1": "top-1 accuracy (%)", "agreement": "top-1 agreement with fp32 (%)",
              "cosine": "cosine similarity to fp32"}[metric]
    pick = report["selection"]["pick"]
    out = {}
    for prof in report["profiles"]:
        pname = prof["name"]
        front = set(report.get("pareto", {}).get(pname, []))
        fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
        for ax, xkey, xlabel in ((axes[0], "lat", f"p50 latency on {pname} (ms)"), (axes[1], "size", "size on disk (MB)")):
            for r in report["variants"]:
                q = _quality(r, metric)
                if q is None or pname not in r["latency"]:
                    continue
                x = r["latency"][pname]["p50_ms"] if xkey == "lat" else r["size_bytes"] / 1e6
                on = r["name"] in front
                ax.scatter([x], [q], s=70 if on else 35, c="#d62728" if on else "#7f7f7f",
                           edgecolors="black" if r["name"] == pick else "none", linewidths=1.5, zorder=3)
                ax.annotate(r["name"], (x, q), textcoords="offset points", xytext=(5, 4), fontsize=8)
            ax.set_xlabel(xlabel)
            ax.set_ylabel(qlabel)
            ax.grid(alpha=0.3)
        axes[0].set_title(f"latency vs quality ({pname}); red = Pareto front, outlined = pick", fontsize=9)
        axes[1].set_title("size vs quality", fontsize=9)
        out[f"tradeoff-{pname}"] = _png(fig)

        samples = [(r["name"], r["latency"][pname].get("samples_ms") or []) for r in report["variants"]
                   if pname in r["latency"]]
        samples = [(n, s) for n, s in samples if s]
        if samples:
            fig, ax = plt.subplots(figsize=(11, 0.45 * len(samples) + 1.2))
            ax.boxplot([s for _, s in samples], vert=False, showfliers=True, flierprops={"markersize": 2})
            ax.set_yticks(range(1, len(samples) + 1), [n for n, _ in samples], fontsize=8)
            ax.set_xlabel(f"latency per inference on {pname} (ms)")
            ax.set_title(f"latency distributions ({pname})", fontsize=9)
            ax.grid(alpha=0.3, axis="x")
            out[f"latency-{pname}"] = _png(fig)
    return out


def render_html(report: dict) -> str:
    from modelpress.benchmarks.report import auto_line, table_cells

    esc = html.escape
    head, body = table_cells(report)
    sel = report["selection"]
    m = report["machine"]
    rows = "".join("<tr" + (' class="pick"' if row[0] == sel["pick"] else "") + ">" +
                   "".join(f"<td>{esc(c)}</td>" for c in row) + "</tr>" for row in body)
    imgs = "".join(f'<figure><img alt="{esc(k)}" src="data:image/png;base64,{v}"><figcaption>{esc(k)}</figcaption>'
                   f"</figure>" for k, v in plots(report).items())
    rejected = "".join(f"<li><b>{esc(k)}</b> not picked: {esc(v)}</li>" for k, v in sel["rejected"].items())
    findings = "".join(f"<li><b>{esc(r['name'])}</b>: {esc(f)}</li>" for r in report["variants"] for f in r["findings"])
    pareto = "".join(f"<li>{esc(p)}: {esc(', '.join(ns))}</li>" for p, ns in report.get("pareto", {}).items())
    failed = "".join(f"<li>{esc(k)}: {esc(v)}</li>" for k, v in (report.get("failed") or {}).items())
    auto = report.get("auto")
    auto_html = "" if not auto else (f"<p><b>auto would pick:</b> {esc(auto_line(auto))}</p><ul>" + "".join(
        f"<li><b>{esc(r['name'])}</b>: {esc(r['why_not'])}</li>" for r in auto["rows"] if r["why_not"]) + "</ul>")
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{esc(report['title'])}</title>
<style>
body{{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1200px;color:#222}}
table{{border-collapse:collapse;font-size:12px}} td,th{{border:1px solid #ccc;padding:3px 6px;text-align:right}}
td:first-child,th:first-child{{text-align:left}} tr.pick{{background:#e6f4ea;font-weight:600}}
figure{{margin:1em 0}} img{{max-width:100%}} .pick-line{{background:#e6f4ea;padding:.6em;border-radius:4px}}
</style></head><body>
<h1>{esc(report['title'])}</h1>
<p>Machine: {esc(m['cpu'])} ({m['usable_cores']} usable cores; flags: {esc(', '.join(m['cpu_flags']) or 'none')}),
onnxruntime {esc(m['onnxruntime'])}. Schema {esc(report['schema'])} v{report['schema_version']}.</p>
<p class="pick-line"><b>Pick</b> ({esc(sel['objective'])}, max accuracy drop {sel['max_accuracy_drop'] * 100:.2f} pt):
{esc(sel['reason'])}</p>
<ul>{rejected}</ul>
{auto_html}
<h2>Variants</h2>
<table><thead><tr>{''.join(f'<th>{esc(h)}</th>' for h in head)}</tr></thead><tbody>{rows}</tbody></table>
<h2>Pareto front (size × latency × accuracy)</h2><ul>{pareto}</ul>
<h2>Plots</h2>{imgs}
<h2>Findings</h2><ul>{findings or '<li>none</li>'}</ul>
{f'<h2>Failed (the study went on without them)</h2><ul>{failed}</ul>' if failed else ''}
</body></html>
"""


def write_html(report: dict[str, Any], path: str | Path) -> Path:
    return write_text(path, render_html(report))
