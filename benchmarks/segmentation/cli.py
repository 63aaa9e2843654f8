"""``python -m benchmarks.segmentation``: options, inputs, the parts in order, the results."""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import benchmarks.segmentation as package
from benchmarks import RESULTS, ROOT
from benchmarks.fixtures import DEMO_BUNDLE, QUICK_PATCH, nnunet_env, prepare_subjects
from benchmarks.measure import default_mem_cap, log, machine_description
from benchmarks.report import read_json, write_report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.segmentation",
                                     description=package.__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true",
                        help=f"smoke run: no participant runs, (b) at {QUICK_PATCH}³, (c) with "
                             "one image; writes segmentation_cpu_quick.md")
    parser.add_argument("--parts", nargs="+", choices=["a", "b", "c", "p", "w"], default=None,
                        help="a: demo bundle segmentation; p: (a)'s participant runs; b: paper-"
                             "size model; c: ensemble vs CLI; w: windows per network call "
                             "(default: a b c w p; a b c w with --quick), run in the order given")
    parser.add_argument("--window-batch-sizes", nargs="+", type=int, default=[1, 2, 4],
                        help="(w) windows per network call to compare (the first is the "
                             "reference)")
    parser.add_argument("--window-models", nargs="+", choices=["demo", "paper"],
                        default=["demo", "paper"], help="(w) models to compare")
    parser.add_argument("--no-tta-windows", action="store_true",
                        help="(w) without mirroring TTA (8× fewer passes)")
    parser.add_argument("--bundle", type=Path, default=DEMO_BUNDLE,
                        help="bundle of (a) and source member of (c) (default: the demo bundle)")
    parser.add_argument("--n-images", type=int, default=None,
                        help="images predicted in (c) (default 3; 1 with --quick)")
    parser.add_argument("--compare-tta", action="store_true", help="(c) with mirroring TTA")
    parser.add_argument("--no-bias-correct", dest="bias_correct", action="store_false",
                        help="skip N4 when preparing the inputs (saves time in quick checks)")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads, --nprocs")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu",
                        help="where the networks run; results go to segmentation_<device>.md")
    parser.add_argument("--work-dir", type=Path,
                        default=Path(tempfile.gettempdir()) / "stroke-lesion-segmentation-bench",
                        help="prepared inputs and outputs (kept and reused)")
    parser.add_argument("--mem-cap-gb", type=float, default=None,
                        help="kill a worker whose process tree passes this resident set "
                             "(default: min(16, 0.7 × available memory))")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds per measurement")
    parser.add_argument("--out-dir", type=Path, default=RESULTS)
    parser.add_argument("--merge", action="store_true",
                        help="add the parts run now to the existing results (the other parts' "
                             "tables are kept; the added parts' date and load are listed)")
    parser.add_argument("--render", action="store_true",
                        help="only rewrite the Markdown from the JSON of an earlier run")
    return parser


def parse_args(argv=None) -> argparse.Namespace:
    args = build_parser().parse_args(argv)
    if args.n_images is None:
        args.n_images = 1 if args.quick else 3
    if args.parts is None:
        args.parts = ["a", "b", "c", "w"] if args.quick else ["a", "b", "c", "w", "p"]
    return args


def main(argv=None) -> int:
    from importlib.metadata import version

    from benchmarks.segmentation.parts import PARTS
    from benchmarks.segmentation.tables import page

    args = parse_args(argv)
    stem = args.out_dir / f"segmentation_{args.device}{'_quick' if args.quick else ''}"
    if args.render:
        saved = read_json(stem)
        write_report(stem, page(saved["machine"], saved["results"], args.device, args.quick),
                     None)
        return 0
    start = time.perf_counter()
    if {"a", "c", "p"} & set(args.parts) and not (args.bundle / "bundle.json").is_file():
        sys.exit(f"{args.bundle}: no bundle.json; train the demo bundle "
                 "(scripts/train_demo_bundle.sh) or pass --bundle, or run --parts b only.")
    args.bundle = args.bundle.absolute()
    work = args.work_dir.absolute()
    work.mkdir(parents=True, exist_ok=True)
    mem_cap = default_mem_cap(args.mem_cap_gb)
    info = machine_description(args.threads)
    info.update(nnunetv2=version("nnunetv2"), bias_correct=args.bias_correct,
                bundle=(str(args.bundle.relative_to(ROOT)) if args.bundle.is_relative_to(ROOT)
                        else str(args.bundle)))
    args.out_dir.mkdir(parents=True, exist_ok=True)
    env = nnunet_env(work, args.threads)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed",
                                           "nnUNet_results", "nnUNet_compile")})
    log("preparing synthetic inputs (cached in the work folder) ...")
    cases = prepare_subjects(work, max(3, args.n_images), args.bias_correct)
    results, header = {}, info
    if args.merge and (stem.parent / f"{stem.name}.json").is_file():  # keep the other parts
        saved = read_json(stem)
        results, header = saved["results"], saved["machine"]
    for part in args.parts:  # results are written after each part, so a cut run keeps them
        results[part] = PARTS[part](args, env, mem_cap, cases, work)
        info["load_average_end"] = os.getloadavg()
        info["elapsed_s"] = time.perf_counter() - start
        if header is not info:
            header.setdefault("added_parts", {})[part] = {
                key: info[key] for key in ("date", "load_average_start", "load_average_end",
                                           "elapsed_s", "threads", "torch")}
        written = write_report(stem, page(header, results, args.device, args.quick),
                               {"machine": header, "results": results})
    log(f"Wrote {written}")
    return 0
