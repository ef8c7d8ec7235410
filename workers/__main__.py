"""``python -m workers``: measure configurations of one model without Ray.

Examples::

    python -m workers --model tiny-molmo2 --tilings 1x3 --repeats 5 --warmup 2 --decode-tokens 4
    python -m workers --tilings 1x1,1x4,2x2 --json > records.json

Prints a per-stage table (median, p5, p95 in ms) for the hook and the
subtraction method, or with ``--json`` the records as a JSON list. Exit status:
0 when every configuration succeeded, 1 when one failed, 2 on bad arguments.

The flags are `tilesweep run`'s, spelled the same (``--tilings``,
``--attn-implementation``, ``--dtype float32|float16|bfloat16``, the timing
flags); the older ``--tiling``, ``--attn`` and ``bf16``-style dtypes still work.
The torch thread count is a sweep host's (`workers.runtime.HOST_THREADS`), so a
tiling is timed here as inside a sweep.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys

from tilesweep import fields
from tilesweep.errors import UsageError
from workers.config import MeasureConfig, Timing, parse_tiling
from workers.runtime import DTYPE_ALIASES, DTYPES, HOST_THREADS, dtype_name


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m workers", description="Measure configurations of one model, without Ray.",
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="tiny-molmo2",
                   help="registered model (tiny-molmo2 by default; every family's tiny and -arch models, see the README), "
                        "hub id or local path")
    p.add_argument("--tilings", "--tiling", dest="tilings", action="append", default=None, metavar="LIST",
                   help="tilings RxC, comma-separated or repeated, e.g. 1x2,2x4 (default 1x3)")
    p.add_argument("--height", type=int, help="image height in px (default: the tiling's exact resolution)")
    p.add_argument("--width", type=int, help="image width in px (with --height)")
    # The same timing flags, defaults and limits as `tilesweep run` (one declaration: Timing).
    fields.add_flags(p, Timing, groups={"timing": "how each config is timed"})
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--dtype", metavar="NAME",
                   help=f"model dtype, {', '.join(DTYPES)} (also {', '.join(DTYPE_ALIASES)}); "
                        "default bfloat16 on GPU, float32 on CPU")
    p.add_argument("--attn-implementation", "--attn", dest="attn_implementation", metavar="NAME",
                   help="attention implementation (sdpa, eager, ...)")
    p.add_argument("--revision", help="hub revision (branch, tag or commit)")
    p.add_argument("--trust-remote-code", action="store_true", help="allow a checkpoint's own code (Molmo v1)")
    p.add_argument("--profile", help="tiling profile name or preprocessor_config.json (default: the model's)")
    p.add_argument("--module", action="append", default=[], metavar="STAGE=PATH",
                   help="override a module-map stage (vision, projector, llm_blocks, lm_head, vision_blocks)")
    p.add_argument("--threads", type=int, default=HOST_THREADS, metavar="N",
                   help=f"torch intra-op threads (default {HOST_THREADS}, as every host of a sweep)")
    p.add_argument("--json", action="store_true", help="print the records as a JSON list")
    p.add_argument("-v", "--verbose", action="store_true", help="log progress to stderr")
    return p


def timing(args: argparse.Namespace) -> Timing:
    """The timing flags given, over `Timing`'s defaults.

    Raises:
        UsageError: every bad value, one after the other on one line.
    """
    built, problems = fields.build(Timing, fields.given(args, Timing))
    if problems:
        raise UsageError("; ".join(problems))
    return built


def parse_modules(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        stage, sep, path = item.partition("=")
        if not sep or not stage or not path:
            raise UsageError(f"bad --module {item!r}: write STAGE=dotted.path, e.g. --module vision=model.vision_tower")
        out[stage.strip()] = path.strip()
    return out


def run(args: argparse.Namespace) -> int:
    tilings = [parse_tiling(t) for arg in (args.tilings or ["1x3"]) for t in arg.split(",") if t.strip()]
    dtype = dtype_name(args.dtype) if args.dtype is not None else None
    if args.threads < 1:
        raise UsageError(f"--threads must be >= 1, got {args.threads}; leave it out for {HOST_THREADS}, "
                         "as every host of a sweep")
    times = timing(args)
    configs = [MeasureConfig(**dataclasses.asdict(times), tiling_rows=r, tiling_cols=c, height=args.height,
                             width=args.width) for r, c in tilings]
    modules = parse_modules(args.module)

    import torch

    from workers.host import ModelHost
    from workers.record import STATUS_OK
    from workers.summary import format_table, to_jsonable

    torch.set_num_threads(args.threads)
    host = ModelHost(args.model, device=args.device, dtype=dtype, attn_implementation=args.attn_implementation,
                     revision=args.revision, trust_remote_code=args.trust_remote_code, profile=args.profile,
                     module_overrides=modules or None, seed=times.seed)
    records = [record for config in configs for record in host.measure(config)]
    if args.json:
        json.dump([to_jsonable(r) for r in records], sys.stdout, indent=1)
        sys.stdout.write("\n")
    else:
        print(format_table(records))
    return 0 if all(r.status == STATUS_OK for r in records) else 1


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(levelname)s %(name)s: %(message)s")
    try:
        return run(args)
    except UsageError as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
