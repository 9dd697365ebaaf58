"""The `animbench` command line. Workflow rules call these subcommands; each is thin and
delegates to the package. Errors a user can act on print as one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

from animbench.errors import AnimbenchError


def _json(text: str) -> dict:
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise argparse.ArgumentTypeError(f"not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("expected a JSON object")
    return value


WEIGHT_PINS_HELP = "config 'weights:' as JSON: url and/or sha256 per weight name"
PREDICTIONS_HELP = "predictions folder, clips named as in --gt"


def _given(args: argparse.Namespace, *names: str) -> dict:
    """The named options of ``args`` as keyword arguments: what a command passes on as given."""
    return {name: getattr(args, name) for name in names}


def _cmd_synthetic(args: argparse.Namespace) -> None:
    from animbench.data.synthetic import make_dataset

    make_dataset(**_given(args, "kind", "out", "seed", "num_train", "num_test", "frames", "size"))


def _cmd_data(args: argparse.Namespace) -> None:
    from animbench.data import sources

    sources.run(
        args.step,
        dataset=args.dataset,
        spec=args.spec,
        inputs=args.input,
        out=args.out,
        threads=args.threads or 1,
    )


def _cmd_train(args: argparse.Namespace) -> None:
    from animbench.train.trainer import TrainOptions, train

    _apply_weight_pins(args)
    if args.cache:  # where the workflow's `weights` rule put the files (weights.cache_dir)
        os.environ["ANIMBENCH_CACHE"] = args.cache
    options = TrainOptions(
        **_given(
            args,
            "precision",
            "channels_last",
            "compile",
            "workers",
            "image_every",
            "checkpoint_every",
        ),
        tensorboard=not args.no_tensorboard,
    )
    train(
        **_given(args, "data", "method", "preset", "overrides", "out", "device", "seed"),
        options=options,
        allow_random_weights=args.allow_random_weights,
    )


def _cmd_reconstruct(args: argparse.Namespace) -> None:
    from animbench.evaluate.reconstruct import reconstruct

    _apply_weight_pins(args)  # LPIPS' files (alexnet, lpips_alex)
    reconstruct(
        **_given(
            args, "data", "method", "checkpoint", "out", "device", "quantisation", "batch_frames"
        )
    )


def _apply_weight_pins(args: argparse.Namespace) -> None:
    if getattr(args, "weight_pins", None):
        from animbench import weights

        weights.configure(args.weight_pins)


def _cmd_weights(args: argparse.Namespace) -> None:
    from animbench import weights

    _apply_weight_pins(args)
    if args.weights_command == "fetch":
        for name, path in weights.fetch_all(args.names, stamp=args.stamp).items():
            print(f"{name}: {path}")
        return
    for name, entry in sorted(weights.WEIGHTS.items()):
        cached = weights.cached_path(name) or "not cached"
        pin = entry.sha256_prefix or "UNPINNED"
        print(f"{name}\t{entry.filename}\tsha256 {pin}\t{cached}\t{entry.url}")


def _cmd_metrics(args: argparse.Namespace) -> None:
    from animbench.evaluate.metrics import video_metrics

    _apply_weight_pins(args)
    video_metrics(
        **_given(args, "gt", "pred", "keypoints", "identity", "out", "dataset", "method"),
        with_mkr=args.mkr,
    )


def _cmd_submission(args: argparse.Namespace) -> None:
    from animbench.evaluate.submissions import import_submission

    _apply_weight_pins(args)  # LPIPS' files (alexnet, lpips_alex)
    import_submission(args.gt, args.pred, args.method, args.out, args.device)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from pathlib import Path

    from animbench.evaluate.submissions import evaluate_submission, summary_lines

    _apply_weight_pins(args)
    df = evaluate_submission(
        **_given(
            args,
            "gt",
            "pred",
            "out",
            "dataset",
            "keypoints",
            "identity",
            "reconstruction",
            "device",
        ),
        method=args.method or Path(args.pred).resolve().name,
        with_mkr=args.mkr,
    )
    for line in summary_lines(df):
        print(line)
    print(f"wrote {args.out}")


def _cmd_table(args: argparse.Namespace) -> None:
    from animbench import tables

    if args.table == "table1":
        tables.write_table1(out=args.out)
    elif args.table == "paper":
        spec = {**args.spec, "name": args.name} if args.name else args.spec
        tables.write_paper_table(metrics=args.metrics, spec=spec, out=args.out)
    elif args.table == "pairs":
        from animbench.stats import write_pairs

        write_pairs(args.metrics, args.spec, args.out, seed_metrics=args.seed_metrics)
    else:
        tables.write_table2(
            args.metrics, args.spec, args.out, seed_metrics=args.seed_metrics, seed=args.seed
        )


def _cmd_checkpoint_import(args: argparse.Namespace) -> None:
    from animbench.models.import_checkpoint import import_checkpoint

    source = args.authors_file
    if source.startswith(("http://", "https://")):
        from animbench.data.sources import fetch

        source = fetch(source, args.sha256, args.cache)  # cached, checked against --sha256
    elif args.sha256:
        from pathlib import Path

        from animbench.downloads import sha256_file
        from animbench.errors import DataError

        if not Path(source).is_file():  # before hashing it: one line, as the import says
            raise DataError(f"{source}: checkpoint not found")
        actual = sha256_file(source)
        if actual != args.sha256.lower():
            raise DataError(f"{source}: sha256 {actual} does not match {args.sha256}")
    path = import_checkpoint(args.preset, source, args.out)
    print(f"wrote {path}")


def _cmd_animate(args: argparse.Namespace) -> None:
    from animbench.animate import animate

    animate(
        **_given(
            args,
            "source_image",
            "driving_video",
            "out",
            "checkpoint",
            "mode",
            "adapt_scale",
            "device",
            "batch_frames",
        )
    )


def _cmd_report(args: argparse.Namespace) -> None:
    from animbench.report import build_report

    config = args.spec
    if args.config:
        from animbench.config import load_config

        config = load_config(args.config)
    path = build_report(args.results, config or None, args.out)
    print(f"wrote {path} ({path.stat().st_size / 1e6:.2f} MB)")


def _cmd_config(args: argparse.Namespace) -> None:
    from animbench.config import load_config

    config = load_config(args.files)
    print(json.dumps(config, indent=2) if args.show else "config OK")


def _cmd_pose_env(args: argparse.Namespace) -> None:
    from animbench.pose_env import create_pose_env

    create_pose_env(args.prefix, python=args.python, force=args.force)


def _add_weight_pins(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--weight-pins", type=_json, default={}, help=WEIGHT_PINS_HELP)


def _add_gt_pred(parser: argparse.ArgumentParser, pred_help: str) -> None:
    """--gt and --pred: the ground truth and the frames scored (or imported) against it."""
    parser.add_argument("--gt", required=True, help="ground-truth test split folder")
    parser.add_argument("--pred", required=True, help=pred_help)


def _add_backends(parser: argparse.ArgumentParser) -> None:
    """--keypoints, --identity and --mkr: the detector backends AKD, AED and MKR use."""
    parser.add_argument("--keypoints", default="none", help="keypoint detector backend")
    parser.add_argument("--identity", default="none", help="identity embedder backend")
    parser.add_argument("--mkr", action="store_true", help="also compute MKR (body datasets)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="animbench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    # compute-heavy commands take the thread count the scheduler gave the job: torch would
    # otherwise start one thread per core in every job and oversubscribe the machine
    compute = argparse.ArgumentParser(add_help=False)
    compute.add_argument("--threads", type=int, default=None, help="CPU threads (default: all)")

    p = sub.add_parser("synthetic", help="render a synthetic benchmark dataset")
    p.add_argument("--kind", choices=["face", "body"], required=True)
    p.add_argument("--out", required=True, help="dataset root; train/ and test/ are created")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--num-train", type=int, default=24)
    p.add_argument("--num-test", type=int, default=6)
    p.add_argument("--frames", type=int, default=32)
    p.add_argument("--size", type=int, default=64)
    p.set_defaults(func=_cmd_synthetic)

    p = sub.add_parser("data", parents=[compute], help="real datasets: metadata, download, crop")
    p.add_argument("step", choices=["metadata", "download", "crop"])
    p.add_argument("--dataset", required=True)
    p.add_argument("--spec", type=_json, default={}, help="the dataset's config entry as JSON")
    p.add_argument("--input", action="append", default=[])
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_data)

    p = sub.add_parser("train", parents=[compute], help="train a motion model on a dataset")
    p.add_argument("--data", required=True, help="dataset root with train/ and test/")
    p.add_argument("--method", required=True)
    p.add_argument("--preset", required=True)
    p.add_argument("--overrides", type=_json, default={}, help="preset overrides as JSON")
    p.add_argument(
        "--precision",
        default="auto",
        choices=["auto", "bf16-if-native", "bf16", "fp32"],
        help="bf16 autocast or fp32 (auto: bf16 on a CUDA GPU that supports it; bf16-if-native: "
        "also on a CPU with AVX512-BF16 or AMX)",
    )
    p.add_argument(
        "--channels-last",
        default="auto",
        choices=["auto", "on", "off"],
        help="NHWC memory layout for the model and the loss networks (auto: on CUDA, and on a CPU unless the model has instance norms)",
    )
    p.add_argument("--compile", action="store_true", help="torch.compile every network")
    p.add_argument(
        "--workers", type=int, default=None, help="data loader processes (default: the preset's)"
    )
    p.add_argument("--image-every", type=int, default=500, help="steps between image grids")
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        help="steps between resumable checkpoints, besides the preset's epochs (0: none)",
    )
    p.add_argument("--no-tensorboard", action="store_true", help="CSV log only")
    p.add_argument(
        "--allow-random-weights",
        action="store_true",
        help="train with random weights in place of a missing pretrained file (VGG19, HRNet, "
        "DINO, SAM) instead of stopping; the results are marked as deviating",
    )
    _add_weight_pins(p)
    p.add_argument(
        "--cache", default=None, help="cache holding the weight files (default: $ANIMBENCH_CACHE)"
    )
    p.add_argument("--out", required=True, help="run folder; resumes from its last checkpoint")
    p.add_argument("--device", default="auto")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=_cmd_train)

    p = sub.add_parser(
        "reconstruct", parents=[compute], help="video reconstruction of every test clip"
    )
    p.add_argument("--data", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--checkpoint", default=None)
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="auto")
    p.add_argument(
        "--quantisation",
        choices=["truncate", "round"],
        default="truncate",
        help="predicted frames to 8 bits: truncate as the authors' code (default) or round",
    )
    p.add_argument(
        "--batch-frames",
        type=int,
        default=None,
        help="model frames per forward pass (default: chosen per model and device, "
        "recorded in reconstruct.json)",
    )
    _add_weight_pins(p)
    p.set_defaults(func=_cmd_reconstruct)

    p = sub.add_parser(
        "metrics", parents=[compute], help="per-video metrics of a reconstruction (Parquet)"
    )
    _add_gt_pred(p, pred_help="reconstruction folder")
    _add_backends(p)
    p.add_argument("--dataset", required=True)
    p.add_argument("--method", required=True)
    p.add_argument("--out", required=True)
    _add_weight_pins(p)
    p.set_defaults(func=_cmd_metrics)

    p = sub.add_parser(
        "evaluate",
        parents=[compute],
        help="score predictions made elsewhere: one mp4 or frame folder per test clip",
    )
    _add_gt_pred(p, pred_help=PREDICTIONS_HELP)
    p.add_argument("--out", required=True, help="per-video metrics to write (Parquet)")
    p.add_argument("--method", default=None, help="row label (default: the folder's name)")
    p.add_argument("--dataset", default="custom", help="dataset name in the metrics rows")
    _add_backends(p)
    p.add_argument(
        "--reconstruction", default=None, help="keep the imported PNG clips here (default: not)"
    )
    p.add_argument("--device", default="cpu", help="device of PSNR/SSIM/LPIPS")
    _add_weight_pins(p)
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser(
        "submission", parents=[compute], help="import predictions in reconstruct's layout"
    )
    _add_gt_pred(p, pred_help=PREDICTIONS_HELP)
    p.add_argument("--method", required=True)
    p.add_argument("--out", required=True, help="reconstruction folder to write")
    p.add_argument("--device", default="auto")
    _add_weight_pins(p)
    p.set_defaults(func=_cmd_submission)

    p = sub.add_parser("table", help="gather a results table (Parquet)")
    p.add_argument(
        "table",
        choices=["table1", "table2", "paper", "pairs"],
        help="paper = a config paper_tables entry; pairs = paired comparisons of methods",
    )
    p.add_argument("--name", default=None, help="paper: the paper_tables key (in messages)")
    p.add_argument("--metrics", nargs="*", default=[])
    p.add_argument("--spec", type=_json, default={}, help="benchmark or paper table spec as JSON")
    p.add_argument(
        "--seed-metrics",
        type=_json,
        default={},
        help="table2, pairs: JSON {seed: [metrics files]} of further training seeds",
    )
    p.add_argument("--seed", type=int, default=None, help="the training seed of --metrics")
    p.add_argument("--out", required=True)
    p.set_defaults(func=_cmd_table)

    p = sub.add_parser("checkpoint", help="checkpoint utilities")
    checkpoint_sub = p.add_subparsers(dest="checkpoint_command", required=True)
    p = checkpoint_sub.add_parser(
        "import", help="convert an authors' released checkpoint into an animbench checkpoint"
    )
    p.add_argument("--preset", required=True, help="the preset the checkpoint was trained with")
    p.add_argument(
        "authors_file", help="the authors' checkpoint file or URL (e.g. vox-cpk.pth.tar)"
    )
    p.add_argument("--sha256", default=None, help="expected sha256 of the authors' file")
    p.add_argument("--cache", default="resources/cache", help="download cache for URLs")
    p.add_argument("-o", "--out", required=True, help="animbench checkpoint to write")
    p.set_defaults(func=_cmd_checkpoint_import)

    p = sub.add_parser(
        "animate", parents=[compute], help="animate a source image by a driving video (mp4)"
    )
    p.add_argument("source_image")
    p.add_argument("driving_video")
    p.add_argument("-o", "--out", required=True, help="output mp4")
    p.add_argument("--checkpoint", required=True, help="animbench checkpoint")
    p.add_argument("--mode", choices=["standard", "relative", "avd"], default="relative")
    p.add_argument(
        "--no-adapt-scale",
        dest="adapt_scale",
        action="store_false",
        help="relative mode: do not scale the motion by the keypoints' convex hull areas",
    )
    p.add_argument("--device", default="auto")
    p.add_argument("--batch-frames", type=int, default=8, help="driving frames per forward pass")
    p.set_defaults(func=_cmd_animate)

    p = sub.add_parser("report", help="one self-contained HTML page of the results")
    p.add_argument("--results", default="results", help="the results folder")
    p.add_argument(
        "--config",
        nargs="+",
        default=None,
        help="config files (later ones override): the benchmark's datasets and methods",
    )
    p.add_argument(
        "--spec",
        type=_json,
        default={},
        help="instead of --config: the config's benchmark and datasets entries as JSON",
    )
    p.add_argument("-o", "--out", default="results/report.html")
    p.set_defaults(func=_cmd_report)

    p = sub.add_parser("weights", help="the pretrained weight files (detectors, losses)")
    weights_sub = p.add_subparsers(dest="weights_command", required=True)
    p = weights_sub.add_parser("list", help="every known file: pin, cached path, URL")
    _add_weight_pins(p)
    p.set_defaults(func=_cmd_weights)
    p = weights_sub.add_parser("fetch", help="download and verify files into the cache")
    p.add_argument("names", nargs="+", help="weight names (animbench weights list)")
    _add_weight_pins(p)
    p.add_argument("--stamp", default=None, help="JSON record written once all are verified")
    p.set_defaults(func=_cmd_weights)

    p = sub.add_parser(
        "pose-env", help="build the openpifpaf environment for body AKD/MKR (a separate venv)"
    )
    p.add_argument(
        "--prefix",
        default=None,
        help="where (default: $ANIMBENCH_POSE_ENV, else resources/envs/pose)",
    )
    p.add_argument("--python", default=None, help="interpreter to base it on (default: this)")
    p.add_argument("--force", action="store_true", help="rebuild even if it is ready")
    p.set_defaults(func=_cmd_pose_env)

    p = sub.add_parser("config", help="validate configuration files (later ones override)")
    p.add_argument("files", nargs="+")
    p.add_argument("--show", action="store_true", help="print the merged, validated config")
    p.set_defaults(func=_cmd_config)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "threads", None):
        import torch

        torch.set_num_threads(args.threads)
    try:
        args.func(args)
    except AnimbenchError as exc:
        print(f"animbench {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as exc:  # the trainer's says where its state is
        print(
            f"animbench {args.command}: interrupted; {exc or 'finished work is kept'}",
            file=sys.stderr,
        )
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
