"""The paper's reported CIFAR-10 numbers (Geng, Pokle, Kolter, NeurIPS 2023), for the "reported"
rows of the CIFAR-10 profiles' tables. One-step FIDs on 50k samples (the release used
pytorch-gan-metrics); our measured rows use clean-fid and say which mode."""
from __future__ import annotations

__all__ = ["REPORTED"]

REPORTED = {
    "uncond": [
        # source, model, params (M), FID, IS, NFE
        ("EDM teacher (35 NFE)", "EDM", None, 1.97, None, 35),
        ("GET-T/2", "GET-T/2", 8.6, 15.23, 8.40, 1),
        ("GET-M/2", "GET-M/2", 19.2, 10.81, 8.77, 1),
        ("GET-S/2", "GET-S/2", 37.2, 7.99, 9.05, 1),
        ("GET-B/2", "GET-B/2", 62.2, 7.39, 9.17, 1),
        ("GET-B/2+", "GET-B/2+", 83.5, 7.21, 9.07, 1),
        ("Knowledge distillation (Luhman & Luhman)", None, None, 9.36, None, 1),
        ("Progressive distillation", None, None, 8.34, None, 1),
        ("2-rectified flow + distillation", None, None, 4.85, None, 1),
        ("DSNO", None, None, 3.78, None, 1),
        ("TRACT", None, None, 3.8, None, 1),
        ("Consistency distillation (LPIPS)", None, None, 3.55, None, 1),
        ("Diff-Instruct", None, None, 4.53, None, 1),
        ("ECT", None, None, 3.60, None, 1),
        ("CTM", None, None, 1.73, None, 1),
        ("SiD", None, None, 1.92, None, 1),
        ("SiDA", None, None, 1.50, None, 1),
    ],
    "cond": [
        ("EDM teacher (35 NFE)", "EDM", None, 1.79, None, 35),
        ("GET-B/2 (1M pairs, 800k iterations)", "GET-B/2", 62.2, 6.23, 9.42, 1),
        ("GET-B/2 (2M pairs, 1.2M iterations)", "GET-B/2", 62.2, 5.66, 9.63, 1),
    ],
}
