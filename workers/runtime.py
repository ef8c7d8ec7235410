"""How a host runs torch, defined once for the sweep's actors and for ``python -m workers`` (no torch here).

Threads. Every host actor of a sweep runs with `HOST_THREADS` intra-op threads:
the driver gives its actors `thread_env()` (Ray would set ``OMP_NUM_THREADS`` to
the actor's one CPU anyway), so actors sharing a machine do not fight over its
cores. ``python -m workers`` uses the same count by default, so a tiling timed on
its own is timed as inside a sweep (with every core it ran up to 2x faster on two
cores); ``--threads N`` changes it deliberately.

Dtypes. `DTYPES` are the names `tilesweep run --dtype` takes; ``python -m workers``
takes them too, and the short spellings in `DTYPE_ALIASES`.
"""

from __future__ import annotations

from tilesweep.errors import UsageError

HOST_THREADS = 1
DTYPES = ("float32", "float16", "bfloat16")
DTYPE_ALIASES = {"fp32": "float32", "float": "float32", "fp16": "float16", "half": "float16", "bf16": "bfloat16"}


def thread_env(threads: int = HOST_THREADS) -> dict[str, str]:
    """Environment variables that give a fresh process `threads` intra-op threads (OpenMP and MKL)."""
    return {"OMP_NUM_THREADS": str(threads), "MKL_NUM_THREADS": str(threads)}


def dtype_name(value: str) -> str:
    """One of `DTYPES`, from itself or an alias (``bf16`` -> ``bfloat16``), any case.

    Raises:
        UsageError: neither.
    """
    key = value.strip().lower().removeprefix("torch.")
    name = DTYPE_ALIASES.get(key, key)
    if name not in DTYPES:
        raise UsageError(f"unknown dtype {value!r}; use one of {', '.join(DTYPES)} "
                         f"(or {', '.join(DTYPE_ALIASES)})")
    return name
