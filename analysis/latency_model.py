"""A least-squares latency model: vision cost per crop, LLM prefill cost per token.

`fit(lf)` fits, on the per-config medians of ok repeats,

- vision ≈ a + b·crops (the encoder runs once per crop, every crop the same size),
- LLM prefill ≈ c + d·t + e·t² with t = `query.TOKENS` (linear layers per token,
  attention's quadratic term),
- other ≈ f + g·t: total minus vision and LLM (projector, head, glue),

and `LatencyModel.predict(height, width)` goes through `tilings.geometry` to give
the expected stage times for any image size.

Separability. Each stage is timed on its own, so each fit can always be made;
what needs the right sweep is *checking* that vision depends on crops and the
LLM on tokens. Along one family (1×k) the token count is (almost) a linear
function of the crop count, so ``[1, crops, tokens]`` is (nearly) rank 2 and any
stage is explained equally well by either axis. Tilings with equal crops and
different tokens (1×8 and 2×4) break that collinearity; `Separability` reports
the condition number of that design and, when it is well conditioned, the share
of each stage's variation that the *other* axis explains (near zero when the
model's assumption holds).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import polars as pl

import tilings
from analysis import query
from tilesweep.errors import UsageError
from tilings.overrides import point_geometry

# Above this condition number of the standardised [1, crops, tokens] design the
# two axes are too collinear to tell apart (Molmo2 1×k alone: ~180; 1×k + 2×k: ~14).
MAX_CONDITION = 50.0
_GROUP = ("model", "profile", "device", "gpu_name")


@dataclass(kw_only=True, frozen=True, slots=True)
class StageFit:
    """One least-squares fit ``y ≈ Σ coef_i · term_i(x)`` over per-config medians (ms)."""

    stage: str
    x: str  # "crops", "patches" (encoder patches) or "tokens"
    terms: tuple[str, ...]  # e.g. ("1", "crops") or ("1", "tokens", "tokens^2")
    coef: tuple[float, ...]
    r2: float
    rmse_ms: float
    n: int  # configs fitted

    def __call__(self, x: float | np.ndarray) -> float | np.ndarray:
        x = np.asarray(x, dtype=float)
        return sum(c * x**p for p, c in enumerate(self.coef))

    @property
    def coefficients(self) -> dict[str, float]:
        return dict(zip(self.terms, self.coef))

    def formula(self) -> str:
        text = ""
        for i, (term, c) in enumerate(zip(self.terms, self.coef)):
            sign = ("-" if c < 0 else "") if i == 0 else (" - " if c < 0 else " + ")
            text += sign + f"{abs(c):.4g}" + ("" if term == "1" else f"·{term}")
        return f"{self.stage} ≈ {text} ms"


@dataclass(kw_only=True, frozen=True, slots=True)
class Separability:
    """Whether crops and tokens were varied independently enough to tell them apart."""

    rank: int  # of [1, crops, tokens] over the measured configs
    condition: float  # of that design with standardised columns (inf when rank < 3)
    separable: bool  # rank 3 and condition <= MAX_CONDITION
    shared_crops: tuple[int, ...]  # crop counts measured with more than one token count
    vision_token_share: float | None  # share of vision's variation a tokens term takes (separable only)
    llm_crop_share: float | None  # share of the LLM's variation a crops term takes (separable only)
    note: str = ""  # why a sweep of this scheme cannot separate the axes, when it is the scheme's doing


@dataclass(kw_only=True, frozen=True, slots=True)
class LatencyModel:
    model: str
    profile: str
    device: str
    vision: StageFit
    llm_prefill: StageFit
    other: StageFit
    separability: Separability
    residuals: pl.DataFrame  # one row per config: medians, fitted values, residuals (ms)

    def predict(self, height: int, width: int, profile: tilings.Scheme | str | None = None) -> dict[str, float]:
        """Expected stage times (ms) for an image of `height` × `width` px.

        The tiling, crops, encoder patches and tokens come from `tilings.geometry`
        with `profile` (default: the profile the model was fitted on).
        """
        g = tilings.geometry(height, width, self.profile if profile is None else profile)
        tokens = getattr(g, query.TOKENS)  # Geometry names its counts like the result columns
        x = g.encoder_patches if self.vision.x == "patches" else g.crops
        vision, llm, other = float(self.vision(x)), float(self.llm_prefill(tokens)), float(self.other(tokens))
        return {
            "tiling_rows": g.tiling.rows, "tiling_cols": g.tiling.cols, "crops": g.crops, "tokens": tokens,
            "vision_ms": vision, "llm_prefill_ms": llm, "other_ms": other, "total_ms": vision + llm + other,
        }

    def table(self) -> pl.DataFrame:
        """The fits as rows: stage, formula, coefficients, R², RMSE, configs."""
        return pl.DataFrame(
            [
                {"stage": f.stage, "against": f.x, "formula": f.formula(), "r2": f.r2, "rmse_ms": f.rmse_ms, "n": f.n}
                for f in (self.vision, self.llm_prefill, self.other)
            ]
        )


def _lstsq(columns: list[np.ndarray], y: np.ndarray) -> np.ndarray:
    """Least squares with columns scaled to unit norm first (tokens² is ~1e6 × the intercept)."""
    x = np.column_stack(columns)
    scale = np.linalg.norm(x, axis=0)
    scale[scale == 0] = 1.0
    coef, *_ = np.linalg.lstsq(x / scale, y, rcond=None)
    return coef / scale


def _fit_poly(stage: str, name: str, x: np.ndarray, y: np.ndarray, degree: int) -> StageFit:
    distinct = len(np.unique(x))
    if distinct <= degree:
        raise UsageError(
            f"cannot fit {stage} against {name}: {distinct} distinct {name} value(s) measured, "
            f"need at least {degree + 1}; sweep more tilings"
        )
    coef = _lstsq([x**p for p in range(degree + 1)], y)
    fitted = sum(c * x**p for p, c in enumerate(coef))
    ss_res = float(np.sum((y - fitted) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    terms = ("1", name, f"{name}^2")[: degree + 1]
    return StageFit(
        stage=stage, x=name, terms=terms, coef=tuple(float(c) for c in coef),
        r2=1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan"),
        rmse_ms=float(np.sqrt(ss_res / len(y))), n=len(y),
    )


def _share(y: np.ndarray, own: list[np.ndarray], other: list[np.ndarray]) -> float:
    """Fit y on [1, own..., other...]; the other terms' peak-to-peak share of the fitted variation."""
    coef = _lstsq([np.ones_like(y), *own, *other], y)
    k = 1 + len(own)
    own_part = np.column_stack(own) @ coef[1:k]
    other_part = np.column_stack(other) @ coef[k:]
    spans = np.ptp(own_part), np.ptp(other_part)
    return float(spans[1] / (spans[0] + spans[1])) if sum(spans) > 0 else 0.0


def separability(crops: np.ndarray, tokens: np.ndarray, vision: np.ndarray | None = None,
                 llm: np.ndarray | None = None) -> Separability:
    """How well a sweep separates the crop axis from the token axis (see the module docstring).

    With measured `vision` and `llm` medians (one per config) it also gives the
    shares of each stage's variation that the other axis explains.
    """
    z = [np.ones_like(crops)]
    for v in (crops, tokens):
        sd = v.std()
        z.append((v - v.mean()) / sd if sd > 0 else np.zeros_like(v))
    design = np.column_stack(z)
    rank = int(np.linalg.matrix_rank(design, tol=1e-9 * np.sqrt(len(crops))))
    condition = float(np.linalg.cond(design)) if rank == 3 else float("inf")
    separable = rank == 3 and condition <= MAX_CONDITION
    shared = sorted({int(c) for c in crops if len(np.unique(tokens[crops == c])) > 1})
    return Separability(
        rank=rank, condition=condition, separable=separable, shared_crops=tuple(shared),
        vision_token_share=_share(vision, [crops], [tokens]) if separable and vision is not None else None,
        llm_crop_share=_share(llm, [tokens, tokens**2], [crops]) if separable and llm is not None else None,
    )


def plan_separability(profile: tilings.Scheme | str, families: list[str] | str | None = None) -> Separability:
    """`separability` of a sweep over tiling families (default: the scheme's), before measuring anything.

    E.g. ``plan_separability("molmo-v1", ["1xk"]).separable`` is False (rank 2:
    along 1×k, tokens are a linear function of crops) and ``["1xk", "2xk"]`` is True.
    """
    scheme = tilings.get_profile(profile)
    names = tilings.parse_families(families if families is not None else scheme.default_families, scheme)
    sizes = dict.fromkeys((t, h, w) for f in names for t, (h, w) in scheme.points(f))  # each point once
    geoms = [point_geometry(scheme, t, h, w) for t, h, w in sizes]  # with each target's processor overrides
    crops = np.array([g.crops for g in geoms], dtype=float)
    tokens = np.array([getattr(g, query.TOKENS) for g in geoms], dtype=float)
    return dataclasses.replace(separability(crops, tokens), note=scheme_note(scheme, crops, tokens))


def scheme_note(scheme: tilings.Scheme | None, crops: np.ndarray, tokens: np.ndarray) -> str:
    """Why crop cost and token cost cannot be told apart, when the scheme itself is the reason."""
    if scheme is not None and scheme.kind == tilings.BUDGET:
        return (f"{scheme.name} resizes to a pixel budget and never crops: there is no crop cost to separate; "
                "vision is fitted against encoder patches (linear + quadratic)")
    if len(crops) >= 3 and np.linalg.matrix_rank(np.column_stack([np.ones_like(crops), crops, tokens])) < 3:
        name = scheme.name if scheme is not None else "this profile"
        return (f"in {name} the image tokens are a fixed linear function of the crops, so no choice of tilings "
                "separates crop cost from token cost")
    return ""


def config_medians(lf: pl.LazyFrame | pl.DataFrame) -> pl.DataFrame:
    """Per config (ok repeats only): crops, tokens and the medians the model is fitted on."""
    col = {s: pl.col(query.STAGES[s]) for s in ("vision", "llm_prefill", "total")}
    return (
        lf.lazy()
        .filter(pl.col("status") == "ok")
        .group_by(list(query.KEYS))
        .agg(
            *(pl.col(c).first() for c in (*_GROUP, "family", "tiling_rows", "tiling_cols", "crops")),
            pl.col(query.TOKENS).first().alias("tokens"),
            pl.col("encoder_patches").first().alias("patches"),
            col["vision"].median().alias("vision_ms"),
            col["llm_prefill"].median().alias("llm_prefill_ms"),
            (col["total"] - col["vision"] - col["llm_prefill"]).median().alias("other_ms"),
            col["total"].median().alias("total_ms"),
        )
        .drop_nulls(["vision_ms", "llm_prefill_ms", "total_ms"])
        .sort(["crops", "tokens", "run_id", "config_id"])
        .collect()
    )


def fit(lf: pl.LazyFrame | pl.DataFrame) -> LatencyModel:
    """Fit the latency model on one model, profile and device.

    Raises:
        UsageError: the rows mix models, profiles or devices (filter first), or
            too few distinct crop / token counts were measured.
    """
    m = config_medians(lf)
    groups = m.select(_GROUP).unique()
    if groups.height != 1:
        found = "; ".join(" / ".join(str(v) for v in row) for row in groups.iter_rows()) or "no ok results"
        raise UsageError(
            f"fit needs the results of one model, profile and device, found: {found}; "
            "filter first, e.g. lf.filter(pl.col('model') == ...)"
        )
    model, profile, device, gpu = groups.row(0)
    crops, tokens = (m[c].to_numpy().astype(float) for c in ("crops", "tokens"))
    ys = {s: m[f"{s}_ms"].to_numpy() for s in ("vision", "llm_prefill", "other")}
    scheme = _known_scheme(profile)
    # A pixel-budget scheme has one image and no crops: the encoder's work is its patches, and
    # its attention is quadratic in them (as the LLM's is in tokens).
    by_patches = scheme is not None and scheme.kind == tilings.BUDGET
    if by_patches and m["patches"].null_count():
        raise UsageError(f"fit of {model} ({profile}) needs encoder patches per config; these results predate the "
                         "encoder_patches column: measure them again with this tilesweep")
    x_vision = m["patches"].to_numpy().astype(float) if by_patches else crops
    fits = {
        "vision": (_fit_poly("vision", "patches", x_vision, ys["vision"], 2) if by_patches
                   else _fit_poly("vision", "crops", crops, ys["vision"], 1)),
        "llm_prefill": _fit_poly("llm_prefill", "tokens", tokens, ys["llm_prefill"], 2),
        "other": _fit_poly("other", "tokens", tokens, ys["other"], 1),
    }
    fitted = {s: f({"crops": crops, "patches": x_vision}.get(f.x, tokens)) for s, f in fits.items()}
    residuals = m.drop(list(_GROUP)).with_columns(
        *(pl.Series(f"{s}_fit_ms", fitted[s]) for s in fits),
        *(pl.Series(f"{s}_resid_ms", ys[s] - fitted[s]) for s in fits),
        pl.Series("total_fit_ms", sum(fitted.values())),
    ).with_columns((pl.col("total_ms") - pl.col("total_fit_ms")).alias("total_resid_ms"))
    return LatencyModel(
        model=model, profile=profile, device=gpu or device,
        **fits, residuals=residuals,
        separability=dataclasses.replace(separability(crops, tokens, ys["vision"], ys["llm_prefill"]),
                                         note=scheme_note(scheme, crops, tokens)),
    )


def _known_scheme(name: str) -> tilings.Scheme | None:
    try:
        return tilings.get_profile(name)
    except UsageError:  # a profile read from a config file: only Molmo's were built that way
        return None
