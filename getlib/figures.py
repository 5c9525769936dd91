"""The figures stage's plots and the paper's tables (as rows); image grids are `getlib.images`."""
from __future__ import annotations

import math
from pathlib import Path

import torch
from torch import Tensor

from getlib.images import image_grid
from getlib.io import atomic_write

__all__ = ["sample_panels", "line_plot", "band_plot", "iterations_plot", "fixed_point_plot", "image_rows",
           "scatter_plot", "bar_panels", "slerp", "one_step_rows", "get_vs_vit_rows", "benchmark_rows"]


# ------------------------------------------------------------------------------------------------
# Plots (matplotlib, written as PNG)
# ------------------------------------------------------------------------------------------------

TILE_INCHES = 0.6   # the least width of one image in a sample figure (at 120 dpi: 72 pixels)

def _save(fig, path: str | Path) -> Path:
    import io as _io

    import matplotlib.pyplot as plt
    buf = _io.BytesIO()
    fig.savefig(buf, format="png", dpi=120, bbox_inches="tight")
    plt.close(fig)
    atomic_write(path, lambda f: f.write(buf.getvalue()))
    return Path(path)


def _figure(*args, **kwargs):
    import matplotlib
    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt
    return plt.subplots(*args, **kwargs)


def sample_panels(panels: dict[str, Tensor], path: str | Path, nrow: int, title: str = "") -> Path:
    """Side-by-side sample grids (model space images), one panel per source, same seeds in each; each
    image at least TILE_INCHES wide (nearest-neighbour enlargement), so a small digit is readable."""
    n = max(len(v) for v in panels.values())
    cols = nrow or math.ceil(math.sqrt(n))
    side = max(3.2, 1.15 * TILE_INCHES * cols)   # (1.15: the grid's padding between images, the gaps between panels)
    fig, axes = _figure(1, len(panels), squeeze=False,
                        figsize=(side * len(panels), 1.15 * TILE_INCHES * math.ceil(n / cols) + 0.8))
    fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, wspace=0.1)
    for ax, (name, images) in zip(axes[0], panels.items()):
        grid = image_grid(images, nrow)
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_title(name, fontsize=10)
        ax.axis("off")
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def line_plot(series: dict[str, tuple[list, list]], path: str | Path, xlabel: str, ylabel: str, title: str = "",
              logy: bool = False, logx: bool = False, hlines: dict[str, float] | None = None) -> Path:
    """One line per named series of (x, y); optional labelled horizontal reference lines."""
    fig, ax = _figure(figsize=(5.5, 3.6))
    for name, (x, y) in series.items():
        ax.plot(x, y, marker="o" if len(x) < 30 else None, ms=3, label=name)
    for i, (name, y) in enumerate((hlines or {}).items()):
        ax.axhline(y, ls="--", lw=1, color=f"C{len(series) + i}", label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logy:
        ax.set_yscale("log")
    if logx:
        ax.set_xscale("log")
    ax.grid(alpha=0.3)
    _legend(ax, len(series) + len(hlines or {}))
    return _save(fig, path)


def band_plot(series: dict[str, dict], path: str | Path, xlabel: str, ylabel: str, title: str = "",
              logy: bool = False, hlines: dict[str, float] | None = None) -> Path:
    """One line per named series {"step", "fid", "se"}, in a band of +- 2 se; optional labelled
    horizontal reference lines."""
    fig, ax = _figure(figsize=(5.5, 3.6))
    for i, (name, s) in enumerate(series.items()):
        _band(ax, name, s, f"C{i}")
    for i, (name, y) in enumerate((hlines or {}).items()):
        ax.axhline(y, ls="--", lw=1, color=f"C{len(series) + i}", label=name)
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    if logy:
        ax.set_yscale("log")
    ax.grid(alpha=0.3)
    _legend(ax, len(series) + len(hlines or {}), beside=True)   # (the bands fill the axes)
    return _save(fig, path)


def _band(ax, name: str, s: dict, colour: str) -> None:
    """One series {"step", "fid", "se"}: its line and a band of +- 2 se."""
    y, two_se = torch.tensor(s["fid"]), 2 * torch.tensor(s["se"])
    ax.plot(s["step"], y, marker="o", ms=3, color=colour, label=name)
    ax.fill_between(s["step"], y - two_se, y + two_se, color=colour, alpha=0.2, lw=0)


def band_panels(panels: dict[str, dict[str, dict]], path: str | Path, xlabel: str, ylabel: str, title: str = "",
                logy: bool = False, hlines: dict[str, float] | None = None) -> Path:
    """`band_plot`'s lines side by side, one panel per named group of series, on a shared y-axis;
    series with the same "family" (a key of the series; else its name) get one colour in every panel."""
    fig, axes = _figure(1, len(panels), figsize=(4.2 * len(panels) + 2.4, 3.8), sharey=True, squeeze=False)
    colour_of = lambda name, s: s.get("family", name)  # noqa: E731
    colours = list(dict.fromkeys(colour_of(*item) for series in panels.values() for item in series.items()))
    for ax, (panel, series) in zip(axes[0], panels.items()):
        for name, s in series.items():
            _band(ax, name, s, f"C{colours.index(colour_of(name, s))}")
        for i, (name, y) in enumerate((hlines or {}).items()):
            ax.axhline(y, ls="--", lw=1, color=f"C{len(colours) + i}", label=name)
        ax.set(xlabel=xlabel, title=panel)
        if logy:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=6, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=1)   # below: bands stay clear
    axes[0][0].set_ylabel(ylabel)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _legend(ax, entries: int, beside: bool = False) -> None:
    """Inside the axes for a few entries; beside them for many (which would cover the lines)."""
    if entries <= 8 and not beside:
        ax.legend(fontsize=8)
    else:
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.02, 1.0), ncol=1 + entries // 24)


def iterations_plot(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """FID (left axis) and the solver's relative residual (right axis, dashed) against inference
    iterations, one colour per (student, solver)."""
    fig, ax = _figure(figsize=(6, 3.8))
    res = ax.twinx()
    keys = list(dict.fromkeys((r["student"], r["solver"]) for r in rows))
    for i, (student, solver) in enumerate(keys):
        sel = sorted((r for r in rows if (r["student"], r["solver"]) == (student, solver)), key=lambda r: r["iterations"])
        its = [r["iterations"] for r in sel]
        ax.plot(its, [r["fid"] for r in sel], marker="o", ms=3, color=f"C{i}", label=f"{student}, {solver}: FID")
        res.plot(its, [r["rel_residual"] for r in sel], ls="--", color=f"C{i}", alpha=0.7,
                 label=f"{student}, {solver}: residual")
    ax.set(xlabel="solver iterations at inference (evaluations of f)", ylabel="FID", title=title)
    res.set_ylabel("relative residual ||f(z)-z|| / ||f(z)||")
    res.set_yscale("log")
    ax.grid(alpha=0.3)
    lines = ax.get_legend_handles_labels()
    more = res.get_legend_handles_labels()
    ax.legend(lines[0] + more[0], lines[1] + more[1], fontsize=7)
    return _save(fig, path)


def fixed_point_plot(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Per GET student against the iterate k: the state's norm, the absolute and relative residuals,
    and the FID of decoding iterate k (the `fixed_point` evaluation table)."""
    fig, axes = _figure(1, 4, figsize=(15, 3.4))
    students = list(dict.fromkeys(r["student"] for r in rows))
    for ax, (key, label, log) in zip(axes, (("state_norm", "state norm ||z_k||", False),
                                            ("abs_residual", "absolute residual ||f(z_k) - z_k||", True),
                                            ("rel_residual", "relative residual", True), ("fid", "FID of iterate k", False))):
        for i, student in enumerate(students):
            sel = sorted((r for r in rows if r["student"] == student), key=lambda r: r["iteration"])
            ax.plot([r["iteration"] for r in sel], [r[key] for r in sel], marker="o", ms=3, color=f"C{i}", label=student)
        ax.set(xlabel="iterate k", title=label)
        if log:
            ax.set_yscale("log")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def image_rows(rows: dict[str, Tensor], path: str | Path, title: str = "") -> Path:
    """One labelled row of images (model space) per source, e.g. an interpolation per model; each
    image TILE_INCHES wide."""
    fig, axes = _figure(len(rows), 1, squeeze=False,
                        figsize=(1.0 + 1.2 * TILE_INCHES * max(len(v) for v in rows.values()),
                                 (TILE_INCHES + 0.3) * len(rows) + 0.6))
    fig.subplots_adjust(left=0.2, right=0.99)
    for ax, (name, images) in zip(axes[:, 0], rows.items()):
        grid = image_grid(images, nrow=len(images), scale=4)
        ax.imshow(grid, cmap="gray" if grid.ndim == 2 else None, vmin=0, vmax=255, interpolation="nearest")
        ax.set_ylabel(name, rotation=0, ha="right", va="center", fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def scatter_plot(groups: dict[str, tuple[list, list, list]], path: str | Path, xlabel: str, ylabel: str,
                 title: str = "", logx: bool = True, hlines: dict[str, float] | None = None) -> Path:
    """Points (x, y) with a text label each, one colour and line per group (e.g. GET and ViT)."""
    fig, ax = _figure(figsize=(5.5, 3.8))
    for i, (name, (xs, ys, labels)) in enumerate(groups.items()):
        order = sorted(range(len(xs)), key=lambda k: xs[k])
        ax.plot([xs[k] for k in order], [ys[k] for k in order], marker="o", color=f"C{i}", label=name)
        for x, y, label in zip(xs, ys, labels):
            ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=7)
    for i, (name, y) in enumerate((hlines or {}).items()):
        ax.axhline(y, ls="--", lw=1, color=f"C{len(groups) + i}", label=name)
    if logx:
        from matplotlib.ticker import FuncFormatter, NullFormatter
        ax.set_xscale("log")
        every_x = [x for group_xs, _, _ in groups.values() for x in group_xs]
        if every_x:   # at least a factor 4 wide, so that a few close sizes do not crowd the ticks
            lo, hi = min(every_x), max(every_x)
            pad = max(1.25, (4 * lo / hi) ** 0.5)
            ax.set_xlim(lo / pad, hi * pad)
            decades = range(math.floor(math.log10(lo / pad)), math.ceil(math.log10(hi * pad)) + 1)
            ax.set_xticks([t for t in (m * 10.0 ** e for e in decades for m in (1, 2, 3, 5))
                           if lo / pad <= t <= hi * pad])
        ax.xaxis.set_major_formatter(FuncFormatter(_si))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return _save(fig, path)


def _si(value: float, _position: object = None) -> str:
    """1200000 -> '1.2M', 300000 -> '300k' (tick labels for counts such as parameters)."""
    for scale, unit in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:g}{unit}"
    return f"{value:g}"


def bar_panels(panels: dict[str, dict[str, float]], path: str | Path, title: str = "") -> Path:
    """Side-by-side bar charts: panel title (with its unit) -> {bar label: value}."""
    fig, axes = _figure(1, len(panels), figsize=(4.2 * len(panels), 3.4), squeeze=False)
    for ax, (name, bars) in zip(axes[0], panels.items()):
        ax.bar(range(len(bars)), list(bars.values()), color=[f"C{i}" for i in range(len(bars))])
        ax.set_xticks(range(len(bars)), list(bars), rotation=30, ha="right", fontsize=8)
        ax.set_title(name, fontsize=9)
        values = [v for v in bars.values() if v > 0]
        if values and max(values) / min(values) > 20:   # log only where the bars span orders of magnitude
            ax.set_yscale("log")
        ax.grid(alpha=0.3, axis="y")
        for i, v in enumerate(bars.values()):
            ax.annotate(f"{v:.3g}", (i, v), ha="center", va="bottom", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def slerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """Spherical interpolation between latents a and b at fractions t: (len(t), *a.shape)."""
    cos = (a.flatten() @ b.flatten()) / (a.norm() * b.norm())
    theta = torch.arccos(cos.clamp(-1, 1))
    w0 = torch.sin((1 - t) * theta) / torch.sin(theta)
    w1 = torch.sin(t * theta) / torch.sin(theta)
    return w0.view(-1, *[1] * a.ndim) * a + w1.view(-1, *[1] * a.ndim) * b


# ------------------------------------------------------------------------------------------------
# The paper's tables, as rows (io.write_results writes them), from the evaluation's comparison rows
# ------------------------------------------------------------------------------------------------

def one_step_rows(comparison: list[dict], reported: list[dict] = ()) -> list[dict]:
    """One-step generation against the teacher: the measured rows, then any `reported` ones (the
    paper's numbers, as separate rows); no IS column when no row has one."""
    rows = [{"source": r["source"], "kind": r["kind"], "recipe": r.get("recipe", "-"), "condition": r["condition"],
             "nfe": r["nfe"],
             "fid": r["fid"], "fid_std": r["fid_std"], "kid": r["kid"], "is": r.get("is"), "params": r.get("params"),
             "gflops_per_sample": r.get("gflops_per_sample"), "images_per_s": r.get("images_per_s"),
             "result": "measured"} for r in comparison] + list(reported)
    if all(r["is"] is None for r in rows):
        rows = [{k: v for k, v in r.items() if k != "is"} for r in rows]
    return rows


def get_vs_vit_rows(comparison: list[dict]) -> list[dict]:
    """Each GET against the ViTs of its condition: the one closest in size ('matched size') and the
    one closest to 5x its parameters ('~5x size', only when one lies within 2.5x..10x); of ViTs of that
    size, one trained for as many steps as the GET when there is one."""
    rows = []
    students = [r for r in comparison if r["kind"] in ("GET", "ViT")]
    for get in (r for r in students if r["kind"] == "GET"):
        vits = [r for r in students if r["kind"] == "ViT" and r["condition"] == get["condition"]]
        for relation, target in (("matched size", 1.0), ("~5x size", 5.0)):
            if not vits:
                continue
            vit = min(vits, key=lambda v: (abs(math.log(v["params"] / get["params"] / target)),
                                           v.get("train_steps") != get.get("train_steps")))
            if relation == "~5x size" and abs(math.log(vit["params"] / get["params"] / 5)) > math.log(2):
                continue
            rows.append({"get": get["source"], "recipe": get.get("recipe"), "get_params": get["params"],
                         "get_fid": get["fid"], "get_train_steps": get.get("train_steps"),
                         "get_train_pflops": get["train_pflops"], "vit": vit["source"], "relation": relation,
                         "vit_params": vit["params"], "vit_fid": vit["fid"], "vit_train_steps": vit.get("train_steps"),
                         "vit_train_pflops": vit["train_pflops"],
                         "params_ratio": vit["params"] / get["params"], "fid_ratio": get["fid"] / vit["fid"],
                         "sampling_gflops_ratio": vit["gflops_per_sample"] / get["gflops_per_sample"]})
    return rows


def benchmark_rows(comparison: list[dict], manifests: dict[str, dict]) -> list[dict]:
    """Per student: sampling speed against its teacher's, training activation memory (plain and
    memory-efficient), and the storage of a pair (`manifests`: each condition's pair-set manifest)."""
    rows = []
    for r in (r for r in comparison if r["kind"] in ("GET", "ViT")):
        teacher = next(t for t in comparison if t["kind"] == "teacher" and t["condition"] == r["condition"])
        manifest = manifests[r["condition"]]
        rows.append({"student": r["source"], "model": r["model"], "images_per_s": r["images_per_s"],
                     "teacher_images_per_s": teacher["images_per_s"],
                     "speedup_vs_teacher": r["images_per_s"] / teacher["images_per_s"],
                     "train_activations_kib_per_image": r["activations_kib_per_image"],
                     "memory_efficient_kib_per_image": r.get("activations_kib_per_image_memory_efficient"),
                     "bytes_per_pair": manifest["bytes_per_pair"],
                     "bytes_per_pair_released_format": manifest["bytes_per_pair"] / manifest["bytes_per_pair_vs_released"]})
    return rows
