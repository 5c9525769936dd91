"""The paper's claims put to the test: one row per claim, from the evaluation's results.

Runs are grouped into arms: the runs that differ only in their training seed (same model, recipe,
learning rate, pair count, targets, steps). An arm's FID is the mean over its runs, each run's FID
being the mean over the evaluation's sampling seed ranges. Its standard error is the spread over
training seeds, std / sqrt(n), when it has at least two runs, and otherwise the sampling spread
alone, fid_std / sqrt(seed ranges), which understates it (a verdict on one training seed is marked
provisional).

The verdict rule (VERDICT_RULE) compares the difference in FID with twice the combined standard error
sqrt(se_a^2 + se_b^2).
"""
from __future__ import annotations

import math

import numpy as np

__all__ = ["VERDICT_RULE", "DECISIVE_SEEDS", "arms", "arm_stats", "verdict", "claims_rows"]

DECISIVE_SEEDS = 3
VERDICT_RULE = (
    "Lower FID is better. d = the difference in FID in the claim's favour, se = sqrt(se_a^2 + se_b^2) "
    "(se of an arm: std over its training seeds / sqrt(n) with n >= 2 runs, else its sampling spread / "
    "sqrt(seed ranges)). holds: d > 2 se; fails: d < -2 se; otherwise inconclusive. For 'matches', "
    "holds when |d| <= 2 se or d > 0, fails when d < -2 se. A verdict resting on fewer than "
    f"{DECISIVE_SEEDS} training seeds per arm is marked (provisional).")

ARM_KEYS = ("model", "recipe", "lr", "num_pairs", "shuffle_targets", "train_steps")


def arms(comparison: list[dict]) -> dict[tuple, list[dict]]:
    """The students' rows grouped by everything but the training seed (keys: ARM_KEYS)."""
    out: dict[tuple, list[dict]] = {}
    for r in comparison:
        if r.get("kind") in ("GET", "ViT"):
            out.setdefault(tuple(r.get(k) for k in ARM_KEYS), []).append(r)
    return out


def arm_stats(runs: list[dict], fid_key: str = "fid") -> dict:
    """Mean FID, its standard error and where that error comes from."""
    fids = np.array([r[fid_key] for r in runs], dtype=float)
    if len(runs) >= 2:
        se, basis = float(fids.std(ddof=1) / math.sqrt(len(runs))), "training seeds"
    else:
        r = runs[0]
        se, basis = float(r.get("fid_std") or 0.0) / math.sqrt(max(int(r.get("seeds") or 1), 1)), "sampling only"
    return {"fid": float(fids.mean()), "se": se, "n": len(runs), "basis": basis}


def verdict(better: dict, worse: dict, kind: str = "beats") -> tuple[str, float, float]:
    """(verdict, d, 2 se) for the claim 'better beats (or matches) worse', each an arm_stats dict."""
    d = worse["fid"] - better["fid"]
    two_se = 2 * math.sqrt(better["se"] ** 2 + worse["se"] ** 2)
    if kind == "matches":
        word = "fails" if d < -two_se else "holds"
    else:
        word = "holds" if d > two_se else "fails" if d < -two_se else "inconclusive"
    if min(better["n"], worse["n"]) < DECISIVE_SEEDS:
        word += " (provisional)"
    return word, d, two_se


def _label(key: tuple, s: dict) -> str:
    model, recipe, lr, num_pairs, shuffled, steps = key
    parts = [model] + ([recipe] if recipe not in (None, "-") else []) + [f"lr {lr:g}"]
    parts += [f"{num_pairs} pairs"] if num_pairs else []
    parts += ["re-paired targets"] if shuffled else []
    return (f"{', '.join(parts)}: {s['fid']:.2f} ± {s['se']:.2f} ({s['n']} training seed{'s' * (s['n'] > 1)}, "
            f"{steps} steps)")


def _row(claim: str, paper: str, compared: str, a: tuple[tuple, dict] | None, b: tuple[tuple, dict] | None,
         kind: str = "beats", note: str = "") -> dict:
    """A claims row: a (the claim's favoured side) against b."""
    if a is None or b is None:
        return {"claim": claim, "paper": paper, "compared": compared, "ours": "no runs in this profile",
                "difference": "", "verdict": "not tested", "basis": "", "note": note}
    word, d, two_se = verdict(a[1], b[1], kind)
    return {"claim": claim, "paper": paper, "compared": compared, "ours": f"{_label(*a)} against {_label(*b)}",
            "difference": f"{d:+.2f} (2 se {two_se:.2f})", "verdict": word,
            "basis": ", ".join(sorted({a[1]["basis"], b[1]["basis"]})), "note": note}


def _best(groups: dict[tuple, list[dict]], pick) -> tuple[tuple, dict] | None:
    """The arm with the lowest mean FID among those `pick(key)` accepts."""
    cands = [(k, arm_stats(v)) for k, v in groups.items() if pick(k)]
    return min(cands, key=lambda c: c[1]["fid"]) if cands else None


def _at_budget(curve: list[dict], runs: list[dict], pflops: float) -> dict | None:
    """Arm stats of the runs' EMA-snapshot FIDs interpolated at `pflops` training PFLOPs (None when a
    run's snapshots do not reach that far)."""
    fids = []
    for r in runs:
        pts = sorted((c["step"], c["fid"]) for c in curve if c["student"] == r["source"])
        per_step = r["train_pflops"] / r["train_steps"]
        xs = [s * per_step for s, _ in pts]
        if not pts or not xs[0] <= pflops <= xs[-1] + 1e-12:
            return None
        fids.append({"fid": float(np.interp(pflops, xs, [f for _, f in pts])), "fid_std": r["fid_std"],
                     "seeds": r["seeds"]})
    return arm_stats(fids)


def claims_rows(comparison: list[dict], curve: list[dict] = (), iterations: list[dict] = (),
                fixed_point: list[dict] = ()) -> list[dict]:
    """One row per claim, from the evaluation's comparison, training-curve, iteration-sweep and
    fixed-point tables (`getlib.stages.evaluate`). Control runs (fewer pairs, re-paired targets)
    and the convergent variant (+state-norm) never stand for their family."""
    groups = arms(comparison)
    plain = lambda k: not k[3] and not k[4] and "state-norm" not in str(k[1])  # noqa: E731
    get = _best(groups, lambda k: plain(k) and k[0].startswith("GET"))
    params = {r["model"]: r["params"] for r in comparison if r.get("kind") in ("GET", "ViT")}
    matched = lambda k: k[0].startswith("ViT") and get and params[k[0]] <= 1.25 * params[get[0][0]]  # noqa: E731
    vit = _best(groups, lambda k: plain(k) and matched(k))
    rows = [_row("GET beats a ViT of matched parameters (one step), at equal steps",
                 "GET is more parameter-efficient than ViT at one step", "best GET arm against the best matched ViT "
                 "arm, each over the same learning-rate grid", get, vit)]
    # the same pair at equal training compute: FID on the EMA-snapshot curves at the smaller total budget
    if get and vit and curve:
        budget = min(groups[get[0]][0]["train_pflops"], groups[vit[0]][0]["train_pflops"])
        g, v = _at_budget(curve, groups[get[0]], budget), _at_budget(curve, groups[vit[0]], budget)
        rows.append(_row("GET beats a ViT of matched parameters, at equal training FLOPs", rows[0]["paper"],
                         f"the same arms at {budget:.3g} training PFLOPs (EMA-snapshot FIDs, first seed range)",
                         (get[0], g) if g else None, (vit[0], v) if v else None))
    # equal sampling FLOPs: the ViT arm whose FLOPs per sample are nearest GET's
    if get:
        gflops = {r["model"]: r["gflops_per_sample"] for r in comparison if r.get("kind") in ("GET", "ViT")}
        vits = [k for k in groups if plain(k) and k[0].startswith("ViT")]
        near = min(vits, key=lambda k: abs(math.log(gflops[k[0]] / gflops[get[0][0]])), default=None)
        other = _best(groups, lambda k: plain(k) and near is not None and k[0] == near[0])
        rows.append(_row("GET beats a ViT at equal sampling FLOPs", "GET matches a ~5x larger ViT at similar compute",
                         f"best GET arm ({gflops[get[0][0]]:.3g} GFLOPs/sample) against the best arm of the ViT "
                         f"nearest in sampling FLOPs"
                         + (f" ({near[0]}, {gflops[near[0]]:.3g})" if near else ""), get, other))
    big = _best(groups, lambda k: plain(k) and k[0].startswith("ViT") and get and params[k[0]] >= 3.5 * params[get[0][0]])
    rows.append(_row("GET matches a ~5x larger ViT", "GET matches a ~5x larger ViT in FID at similar compute",
                     "best GET arm against the best ViT arm with >= 3.5x its parameters", get, big, kind="matches"))
    rows += _iteration_rows(get, groups, iterations)
    rows.append(_fp_correction_row(groups))
    rows += _compute_rows(groups, curve, get, vit)
    rows.append(_data_row(groups, get))
    rows.append(_control_row(groups))
    rows.append(_memory_row(comparison))
    rows += _convergence_rows(groups, fixed_point, get)
    return rows


def _iteration_rows(get, groups, iterations) -> list[dict]:
    claim, paper = "More test-time iterations improve FID", "inference iterations are a test-time compute knob"
    if not get or not iterations:
        return [_row(claim, paper, "best GET arm", None, None)]
    runs = groups[get[0]]
    out = []
    for solver in sorted({r["solver"] for r in iterations}):
        sel = [r for r in iterations if r["solver"] == solver and r["student"] in {x["source"] for x in runs}]
        if not sel:
            continue
        trained, most = runs[0]["nfe"], max(r["iterations"] for r in sel)
        at = lambda k: arm_stats([{"fid": r["fid"], "fid_std": x["fid_std"], "seeds": x["seeds"]}  # noqa: E731
                                  for x in runs for r in sel if r["student"] == x["source"] and r["iterations"] == k])
        out.append(_row(f"{claim} ({solver})", paper, f"best GET arm at {most} against {trained} iterations "
                        "(the training count; first seed range)", (get[0], at(most)), (get[0], at(trained))))
    return out


def _fp_correction_row(groups) -> dict:
    paper_arm = _best(groups, lambda k: k[1] == "paper" and not k[3] and not k[4])
    last = _best(groups, lambda k: k[1] == "bptt-last" and not k[3] and not k[4] and paper_arm and k[2] == paper_arm[0][2])
    return _row("Loss on all states (fixed-point correction) beats the last state only",
                "the released recipe supervises all 6 unrolled states (weights 0.8^(5-k))",
                "recipe paper against bptt-last at the same learning rate", paper_arm, last)


def _compute_rows(groups, curve, get, vit) -> list[dict]:
    out = []
    for name, arm in (("GET", get), ("ViT", vit)):
        claim = f"FID falls with training compute ({name})"
        paper = "FID falls roughly log-linearly with training compute"
        if not arm or not curve:
            out.append(_row(claim, paper, "", None, None))
            continue
        runs = groups[arm[0]]
        steps = sorted({c["step"] for c in curve if c["student"] == runs[0]["source"]})
        half = [s for s in steps if s <= steps[-1] / 2][-1:] or steps[:1]
        at = lambda s: arm_stats([{"fid": c["fid"], "fid_std": r["fid_std"], "seeds": r["seeds"]}  # noqa: E731
                                  for r in runs for c in curve if c["student"] == r["source"] and c["step"] == s])
        last, mid = at(steps[-1]), at(half[0])
        slope = (last["fid"] - mid["fid"]) / math.log10(steps[-1] / half[0]) if steps[-1] > half[0] else float("nan")
        out.append(_row(claim, paper, f"{name}'s best arm at {steps[-1]} against {half[0]} steps (first seed range)",
                        (arm[0], last), (arm[0], mid), note=f"{slope:+.1f} FID per decade of compute over the last "
                        "doubling"))
    return out


def _data_row(groups, get) -> dict:
    fewer = _best(groups, lambda k: get and k[3] and not k[4] and k[:3] == get[0][:3])
    return _row("More pairs help", "more pairs and longer training help",
                "best GET arm on all pairs against the same arm on fewer", get, fewer)


def _control_row(groups) -> dict:
    shuffled = _best(groups, lambda k: k[4])
    real = _best(groups, lambda k: shuffled and not k[4] and (k[0], k[1], k[2], k[3]) == shuffled[0][:4])
    return _row("Randomly re-paired noise/images cannot be learned", "randomly re-paired noise/images cannot be learned",
                "the same arm on the teacher's pairs against re-paired targets", real, shuffled)


def _memory_row(comparison) -> dict:
    claim = "The memory-efficient mode gives the same gradients with less memory"
    paper = "O(1)-memory training: gradient checkpointing of every equilibrium block call"
    r = next((r for r in comparison if r.get("kind") == "GET" and r.get("activations_kib_per_image_memory_efficient")),
             None)
    if r is None:
        return _row(claim, paper, "", None, None)
    plain, eff = r["activations_kib_per_image"], r["activations_kib_per_image_memory_efficient"]
    return {"claim": claim, "paper": paper, "compared": f"{r['model']} ({r['recipe']}): activations kept for backward, "
            "per image", "ours": f"{plain:.0f} KiB plain, {eff:.0f} KiB memory-efficient ({plain / eff:.1f}x less); "
            "gradients equal (tests/test_models.py)", "difference": f"{plain - eff:+.0f} KiB",
            "verdict": "holds" if eff < plain else "fails", "basis": "measured count", "note": ""}


def _convergence_rows(groups, fixed_point, get) -> list[dict]:
    """Beyond the paper: does the learned map converge (the best GET arm's first run, and the
    convergent variant's), and does the convergent variant change FID?"""
    out = []
    normed = _best(groups, lambda k: "state-norm" in str(k[1]))
    if normed:
        base = _best(groups, lambda k: "state-norm" not in str(k[1]) and not k[3] and not k[4]
                     and (k[0], k[1], k[2]) == (normed[0][0], normed[0][1].replace("+state-norm", ""), normed[0][2]))
        out.append(_row("A convergent map (state_norm) samples as well as the plain one", "(beyond the paper)",
                        "the same recipe and learning rate with and without state_norm", normed, base, kind="matches"))
    for student in [groups[arm[0]][0]["source"] for arm in (get, normed) if arm]:
        trace = sorted((r for r in fixed_point if r["student"] == student), key=lambda r: r["iteration"])
        if not trace:
            continue
        first, last = trace[0], trace[-1]
        converges = last["rel_residual"] < 0.01 and last["abs_residual"] < 0.1 * first["abs_residual"]
        out.append({"claim": f"The learned map converges ({student})", "paper": "(the DEQ premise: z* = f(z*))",
                    "compared": f"plain iterates k = 1..{last['iteration']}",
                    "ours": f"relative residual {first['rel_residual']:.3g} -> {last['rel_residual']:.3g}, absolute "
                            f"{first['abs_residual']:.3g} -> {last['abs_residual']:.3g}, state norm "
                            f"{first['state_norm']:.3g} -> {last['state_norm']:.3g}",
                    "difference": "", "verdict": "holds" if converges else "fails",
                    "basis": "rule: relative residual < 0.01 and absolute residual down 10x", "note": ""})
    return out
