"""The settings the library takes, as validated dataclasses: the EDM sampler's, the DEQ's, the
embedded teacher's, a distillation run's, and the architecture table of both model families.

They live apart from the code that uses them (edm, deq, teacher, train, models re-export them) and
import nothing else from getlib, so that `config` can validate a whole params.yaml without making
every pipeline stage depend on the models, solvers and training loop (see dvc.yaml's deps).
The registries' names are listed here; tests check that they equal the registries' keys.
"""
from __future__ import annotations

import dataclasses
import functools
import math
import types
import typing
from dataclasses import asdict, dataclass, field

__all__ = ["typed", "check_types", "field_types", "SamplerConfig", "DEQConfig", "DEQ_RECIPES", "recipe_of", "TeacherConfig", "TrainConfig", "GET_CONFIGS",
           "VIT_CONFIGS", "SOLVER_NAMES", "GRADIENT_NAMES", "LOSS_NAMES", "PRECISIONS"]

SOLVER_NAMES = ("anderson", "fixed_point_iter")           # deq.SOLVERS
GRADIENT_NAMES = ("implicit", "phantom", "unrolled")       # deq.GRADIENTS
LOSS_NAMES = ("l1", "l2")                                  # deq.LOSSES, per supervised state
PRECISIONS = ("auto", "fp32", "bf16")                      # train: auto = bf16 autocast on CUDA, fp32 on CPU


# ------------------------------------------------------------------------------------------------
# Types: the one check of a setting's type, for the dataclasses here and for params.yaml's sections
# ------------------------------------------------------------------------------------------------

_TYPE_NAMES = {float: "a number", int: "an integer", str: "a string", bool: "true/false", list: "a list",
               dict: "a mapping", tuple: "a list"}


def typed(key: str, value: object, hint: object, from_yaml: bool = False) -> object:
    """`value` as type `hint` (an int is a number; a bool is neither), or a ValueError naming `key`.
    `from_yaml`: a string that reads as a number is one (YAML 1.1 reads 1e-3 as a string) and an
    integer given for a number becomes a float; otherwise the value is returned as it is."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    for t in options:
        origin = typing.get_origin(t) or t
        if t is type(None) and value is None:
            return None
        if origin is float and isinstance(value, str) and from_yaml:
            try:
                return float(value)
            except ValueError:
                continue
        if origin is float and isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value) if from_yaml else value
        if origin is int and isinstance(value, int) and not isinstance(value, bool):
            return value
        if origin in (str, bool, list, dict, tuple) and isinstance(value, origin):
            return value
        if origin is tuple and isinstance(value, list) and from_yaml:   # YAML has lists; the dataclass makes the tuple
            return value
    names = " or ".join("null" if t is type(None) else _TYPE_NAMES.get(typing.get_origin(t) or t, str(t))
                        for t in options)
    raise ValueError(f"{key} must be {names}, got {value!r}")


@functools.cache
def field_types(cls: type) -> dict:
    """The declared type of each field of dataclass `cls` (its annotations, evaluated)."""
    return typing.get_type_hints(cls)


def check_types(settings: object, what: str) -> None:
    """Every field of the dataclass instance `settings` holds its declared type (`typed`)."""
    hints = field_types(type(settings))
    for f in dataclasses.fields(settings):
        typed(f"{what} {f.name}", getattr(settings, f.name), hints[f.name])


# ------------------------------------------------------------------------------------------------
# Architectures (models.GET_models, models.ViT_models)
# ------------------------------------------------------------------------------------------------

GET_CONFIGS: dict[str, dict] = {
    # the paper's configs (all with L_e = 3 equilibrium blocks, patch 2)
    "GET-T/2":  dict(hidden_size=256, depth=6, num_heads=4, deq_mlp_ratio=6),
    "GET-M/2":  dict(hidden_size=384, depth=6, num_heads=6, deq_mlp_ratio=6),
    "GET-S/2":  dict(hidden_size=512, depth=6, num_heads=8, deq_mlp_ratio=8),
    "GET-B/2":  dict(hidden_size=768, depth=1, num_heads=12, deq_mlp_ratio=12),
    "GET-B/2+": dict(hidden_size=768, depth=6, num_heads=12, deq_mlp_ratio=8),
    # small configs for the embedded digits profile (pass input_size=8, in_channels=1)
    "GET-P/2":  dict(hidden_size=64, depth=2, num_heads=4, deq_mlp_ratio=4),
    "GET-N/2":  dict(hidden_size=96, depth=2, num_heads=6, deq_mlp_ratio=4),
    # GET-P/2 at patch 1: 64 tokens on the 8x8 digits instead of 16, the same blocks (291,201
    # parameters against 288,516: only the patch embedding, positions and decoder differ)
    "GET-P/1":  dict(hidden_size=64, depth=2, num_heads=4, deq_mlp_ratio=4, patch_size=1),
}

_VIT_SIZES = {"S": (384, 12, 6), "B": (768, 12, 12), "L": (1024, 24, 16), "XL": (1152, 28, 16)}
VIT_CONFIGS: dict[str, dict] = {
    f"ViT-{size}/{p}": dict(hidden_size=d, depth=depth, num_heads=h, patch_size=p)
    for size, (d, depth, h) in _VIT_SIZES.items() for p in (2, 4, 8)
}
VIT_CONFIGS.update({
    # small configs for the embedded digits profile: P matches GET-P/2's size, U is ~4x it
    "ViT-P/2": dict(hidden_size=64, depth=6, num_heads=4, patch_size=2),
    "ViT-N/2": dict(hidden_size=96, depth=6, num_heads=6, patch_size=2),
    "ViT-U/2": dict(hidden_size=128, depth=6, num_heads=8, patch_size=2),
    # ViT-P/2 at patch 1 (64 tokens on the digits; 304,321 parameters), GET-P/1's baseline
    "ViT-P/1": dict(hidden_size=64, depth=6, num_heads=4, patch_size=1),
    # ViT-U/2 at patch 1 (1,198,465 parameters): the ViT nearest GET-P/1 in FLOPs per sample
    # (0.164 GFLOPs against GET-P/1's 0.152 at 6 iterations), as ViT-U/2 is GET-P/2's at 16 tokens
    "ViT-U/1": dict(hidden_size=128, depth=6, num_heads=8, patch_size=1),
})

# ------------------------------------------------------------------------------------------------
# The EDM sampler (edm.edm_sampler)
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class SamplerConfig:
    """The sampler's settings (recorded with every pair set). Defaults: EDM's CIFAR-10 sampler."""
    num_steps: int = 18
    sigma_min: float = 0.002
    sigma_max: float = 80.0
    rho: float = 7.0
    solver: str = "heun"

    def __post_init__(self):
        check_types(self, "sampler")
        if self.solver not in ("heun", "euler"):
            raise ValueError(f"sampler solver must be 'heun' or 'euler', got {self.solver!r}")
        if not isinstance(self.num_steps, int) or self.num_steps < 1:
            raise ValueError(f"sampler num_steps must be an integer >= 1, got {self.num_steps!r}")
        if not 0 < self.sigma_min < self.sigma_max:
            raise ValueError(f"need 0 < sigma_min < sigma_max, got {self.sigma_min}, {self.sigma_max}")
        if not 0 < self.rho < math.inf or not self.sigma_max < math.inf:
            raise ValueError(f"sampler rho and sigma_max must be finite and rho > 0, got rho={self.rho}, "
                             f"sigma_max={self.sigma_max}")

    @property
    def nfe(self) -> int:
        """Network evaluations per image: Heun corrects every step but the last."""
        return 2 * self.num_steps - 1 if self.solver == "heun" else self.num_steps

    def as_dict(self) -> dict:
        return {**asdict(self), "nfe": self.nfe}

# ------------------------------------------------------------------------------------------------
# The DEQ (deq.solve_deq)
# ------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class DEQConfig:
    """How a DEQ solves and differentiates. Names follow torchdeq; defaults are the paper's."""
    # training: a no-grad solve (0 iterations: start the tracked unroll at z0 itself) ...
    f_solver: str = "fixed_point_iter"
    f_max_iter: int = 0
    f_tol: float = 1e-3
    f_stop_mode: str = "abs"
    # ... followed by a gradient: 'phantom'/'unrolled' (k damped steps) or 'implicit'
    grad: str = "phantom"
    grad_steps: int = 6          # k, the tracked iterations of the phantom gradient
    tau: float = 1.0             # damping of the phantom gradient
    sup_gap: int = 1             # supervise every sup_gap-th tracked state (and the last)
    b_solver: str = "fixed_point_iter"
    b_max_iter: int = 30
    b_tol: float = 1e-6
    # evaluation (sampling): the lowest-residual iterate of at most eval_f_max_iter evaluations
    eval_f_solver: str = "fixed_point_iter"
    eval_f_max_iter: int = 6
    eval_f_tol: float = 1e-3
    per_sample_stop: bool = False
    return_final: bool = False   # both solves: run every iteration, keep the last (not the lowest-residual)
    # Anderson acceleration (wherever a solver is 'anderson'); lam is relative to the residuals
    anderson_m: int = 5
    anderson_lam: float = 1e-4
    anderson_beta: float = 1.0
    # checkpoint every equilibrium block call: the unroll keeps only block inputs for backward
    memory_efficient: bool = False
    # beyond the paper: f returns LayerNorm(state) (per token, no affine). f then maps into a compact
    # set (each token on a sphere of radius sqrt(D)), so a fixed point exists (Brouwer); whether
    # iteration reaches it is measured. The plain f is z + g(LN(z)) per block, and trained students
    # add a nearly constant step: their state's norm grows with every iteration (README).
    state_norm: bool = False

    def __post_init__(self):
        check_types(self, "DEQ setting")
        for key in ("f_solver", "b_solver", "eval_f_solver"):
            if getattr(self, key) not in SOLVER_NAMES:
                raise ValueError(f"unknown DEQ solver {key}={getattr(self, key)!r}; choose one of {sorted(SOLVER_NAMES)}")
        if self.grad not in GRADIENT_NAMES:
            raise ValueError(f"unknown DEQ gradient grad={self.grad!r}; choose one of {sorted(GRADIENT_NAMES)}")
        if self.f_stop_mode not in ("abs", "rel"):
            raise ValueError(f"f_stop_mode must be 'abs' or 'rel', got {self.f_stop_mode!r}")
        for key in ("f_max_iter", "eval_f_max_iter", "b_max_iter", "f_tol", "b_tol", "eval_f_tol", "anderson_lam"):
            if not getattr(self, key) >= 0:   # (NaN is refused too)
                raise ValueError(f"{key} must be >= 0, got {getattr(self, key)}")
        for key in ("grad_steps", "sup_gap", "anderson_m"):
            if getattr(self, key) < 1:
                raise ValueError(f"{key} must be >= 1, got {getattr(self, key)}")
        if not self.tau > 0:
            raise ValueError(f"tau (phantom-gradient damping) must be > 0, got {self.tau}")
        if self.grad == "implicit" and self.f_max_iter == 0:
            raise ValueError("grad='implicit' differentiates at a fixed point: set f_max_iter > 0 "
                             "(with f_max_iter=0 the 'solution' is the random initial state)")

    @classmethod
    def from_dict(cls, d: dict | None) -> "DEQConfig":
        """Build from a mapping, naming any unknown key and the allowed ones. A `recipe` key names a
        preset of DEQ_RECIPES; the mapping's other keys override it."""
        d = dict(d or {})
        recipe = d.pop("recipe", "paper")
        if recipe not in DEQ_RECIPES:
            raise ValueError(f"unknown DEQ recipe {recipe!r}; choose one of {sorted(DEQ_RECIPES)}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown DEQ setting(s) {unknown}; allowed: {sorted(known | {'recipe'})}")
        return cls(**{**DEQ_RECIPES[recipe], **d})

    def replace(self, **overrides: object) -> "DEQConfig":
        return DEQConfig.from_dict({**dataclasses.asdict(self), **overrides})


# Named training-and-decoding recipes (`distill.deq: {recipe: <name>}`), as changes to the defaults.
DEQ_RECIPES: dict[str, dict] = {
    # the released recipe: 6 states unrolled from z0 with autograd, an L1 loss on each (weights
    # gamma^(5-k)); sampling decodes the lowest-absolute-residual iterate of at most 6
    "paper": {},
    # the same 6 tracked states, the loss on the last one only (no fixed-point correction)
    "bptt-last": {"sup_gap": 6},
    # 5 iterations without autograd, then 1 tracked step (1/6 of the unroll's backward); every
    # iteration runs and the last iterate is decoded, in training and sampling
    "truncated": {"f_max_iter": 5, "grad_steps": 1, "return_final": True},
}
# what defines a recipe: how training unrolls and supervises, and which iterate sampling decodes
_RECIPE_KEYS = ("f_max_iter", "grad", "grad_steps", "tau", "sup_gap", "return_final", "f_stop_mode",
                "eval_f_solver", "eval_f_max_iter")


def recipe_of(deq: DEQConfig) -> str:
    """The name of the preset whose training and decoding settings `deq` has ('custom' if none),
    with '+state-norm' for the convergent variant of the map."""
    base = DEQConfig()
    name = next((n for n, r in DEQ_RECIPES.items()
                 if all(getattr(deq, k) == r.get(k, getattr(base, k)) for k in _RECIPE_KEYS)), "custom")
    return name + ("+state-norm" if deq.state_norm else "")

# ------------------------------------------------------------------------------------------------
# The embedded teacher (teacher.train_teacher)
# ------------------------------------------------------------------------------------------------

@dataclass
class TeacherConfig:
    """The embedded teacher and its training (EDM's recipe, sized for 2 CPU cores)."""
    channels: tuple[int, ...] = (32, 64, 64)
    emb_dim: int = 128
    cond: bool = False
    lr: float = 1e-3
    warmup_steps: int = 200
    batch_size: int = 256
    max_steps: int = 1000                   # ~4.5 min on 2 CPU cores; FID 1.8 (benchmarks/results/teacher.md)
    time_budget_s: float | None = None      # stop early after this much wall-clock time (not reproducible)
    ema_halflife_images: float = 50_000     # EDM: 0.5 M images for CIFAR-10
    ema_rampup_ratio: float = 0.05          # half-life <= ratio x images seen (EDM's ramp-up)
    seed: int = 0

    def __post_init__(self):
        self.channels = tuple(self.channels) if isinstance(self.channels, (list, tuple)) else self.channels
        check_types(self, "teacher setting")
        if not self.channels or not all(isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in self.channels):
            raise ValueError(f"channels must be a list of positive integers, got {list(self.channels)!r}")
        for key, low in (("emb_dim", 1), ("batch_size", 1), ("max_steps", 1), ("warmup_steps", 0), ("seed", 0),
                         ("ema_rampup_ratio", 0)):
            if not getattr(self, key) >= low:   # (NaN is refused too)
                raise ValueError(f"{key} must be >= {low}, got {getattr(self, key)!r}")
        for key in ("lr", "ema_halflife_images", "time_budget_s"):
            value = getattr(self, key)
            if value is not None and not 0 < value < math.inf:
                raise ValueError(f"{key} must be > 0 and finite, got {value!r}")

# ------------------------------------------------------------------------------------------------
# A distillation run (train.train)
# ------------------------------------------------------------------------------------------------

@dataclass
class TrainConfig:
    """One distillation run. Defaults: the paper's unconditional CIFAR-10 recipe."""
    pairs: str = ""                       # pair set folder (getlib.pairs)
    out: str = ""                         # run folder: checkpoints/, metrics.csv, samples/, run.json
    model: str = "GET-T/2"                # a name from GET_models or ViT_models
    cond: bool = False                    # class-conditional student (needs class-conditional pairs)
    deq: dict = field(default_factory=dict)   # DEQConfig overrides, e.g. {f_max_iter: 5, grad_steps: 1}
    loss: str = "l1"                      # 'l1' | 'l2', per supervised state
    gamma: float = 0.8                    # fixed-point correction: weights gamma^(n-k-1)
    lr: float = 1e-4
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0                 # linear learning-rate warm-up
    lr_schedule: str = "constant"         # 'constant' (the paper's) | 'cosine': to 0 at max_steps after the warm-up
    grad_clip: float | None = None        # max gradient norm
    ema_decay: float = 0.9999             # per-step EMA decay (the paper's) ...
    ema_halflife_images: float | None = None   # ... or a half-life in images (overrides ema_decay)
    ema_rampup_ratio: float | None = None      # with the half-life: EDM's ramp-up for short runs
    batch_size: int = 128                 # global, over all ranks
    max_steps: int = 800_000
    time_budget_s: float | None = None    # also stop after this much wall-clock time (not reproducible)
    seed: int = 0
    num_pairs: int | None = None          # train on the pair set's first num_pairs pairs (null: all of them)
    shuffle_targets: bool = False         # a control: pair each noise with another pair's image (seeded)
    log_every: int = 100
    ckpt_every: int = 10_000
    sample_every: int = 10_000            # EMA sample grid and solver residuals
    snapshot_every: int | None = None     # keep the EMA weights every this many steps (FID vs iterations)
    num_samples: int = 64
    num_workers: int = 0
    device: str = "auto"                  # 'auto' | 'cpu' | 'cuda'
    precision: str = "auto"               # 'auto': bf16 autocast on CUDA, float32 on CPU | 'fp32' | 'bf16' (any device)
    compile: bool = False                 # torch.compile the student (CUDA or CPU: benchmarks/train_compile.py)
    explode_factor: float = 20.0          # stop when the loss exceeds this x its recent median
    progress: bool = True

    def __post_init__(self):
        self.betas = tuple(self.betas)
        check_types(self, "training setting")
        if self.loss not in LOSS_NAMES:
            raise ValueError(f"loss must be one of {sorted(LOSS_NAMES)}, got {self.loss!r}")
        for key in ("batch_size", "max_steps", "log_every", "ckpt_every", "sample_every"):
            if not isinstance(getattr(self, key), int) or getattr(self, key) < 1:
                raise ValueError(f"{key} must be a positive integer, got {getattr(self, key)!r}")
        for key, ok, rule in (
                ("lr", 0 < self.lr < math.inf, "> 0 and finite"), ("weight_decay", self.weight_decay >= 0, ">= 0"),
                ("gamma", 0 <= self.gamma <= 1, "in [0, 1]"), ("warmup_steps", self.warmup_steps >= 0, ">= 0"),
                ("betas", len(self.betas) == 2 and all(isinstance(b, (int, float)) and 0 <= b < 1 for b in self.betas),
                 "two numbers in [0, 1)"),
                ("grad_clip", self.grad_clip is None or self.grad_clip > 0, "> 0 or null"),
                ("ema_decay", 0 <= self.ema_decay < 1, "in [0, 1)"),
                ("ema_halflife_images", self.ema_halflife_images is None or 0 < self.ema_halflife_images < math.inf,
                 "> 0 and finite, or null"),
                ("ema_rampup_ratio", self.ema_rampup_ratio is None or self.ema_rampup_ratio >= 0, ">= 0 or null"),
                ("time_budget_s", self.time_budget_s is None or self.time_budget_s > 0, "> 0 or null"),
                ("num_samples", self.num_samples >= 1, ">= 1"), ("num_workers", self.num_workers >= 0, ">= 0"),
                ("seed", self.seed >= 0, ">= 0"), ("explode_factor", self.explode_factor > 1, "> 1")):
            if not ok:   # (comparisons with NaN are false: NaN is refused too)
                raise ValueError(f"{key} must be {rule}, got {getattr(self, key)!r}")
        if self.snapshot_every is not None and self.snapshot_every < 1:
            raise ValueError(f"snapshot_every must be a positive integer or null, got {self.snapshot_every!r}")
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule must be 'constant' or 'cosine', got {self.lr_schedule!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {list(PRECISIONS)}, got {self.precision!r}")
        if self.num_pairs is not None and self.num_pairs < self.batch_size:
            raise ValueError(f"num_pairs must be null or at least batch_size ({self.batch_size}), got {self.num_pairs!r}")
        if self.device not in ("auto", "cpu", "cuda"):
            raise ValueError(f"device must be 'auto', 'cpu' or 'cuda', got {self.device!r}")
        DEQConfig.from_dict(self.deq)  # names an unknown or bad DEQ setting now

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise ValueError(f"unknown training setting(s) {unknown}; allowed: {sorted(known)}")
        return cls(**d)

