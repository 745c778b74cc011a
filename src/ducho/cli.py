"""`ducho` command line: run, validate, layers, export, report, models, demo. Heavy libraries (torch, numpy,
pyarrow) load only inside the commands that need them."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from . import __version__
from .errors import DuchoError

LEGACY_HINT = "reference style also works: ducho --config=FILE --a.b=c"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ducho", description="Extract multimodal features for recommendation.",
                                     epilog=LEGACY_HINT)
    parser.add_argument("--version", action="version", version=f"ducho {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    run = commands.add_parser("run", help="extract the features a config describes")
    run.add_argument("config", nargs="?", help="YAML config file")
    run.add_argument("overrides", nargs="*", help="key.path=value (e.g. textual.items.model.0.batch_size=64)")
    run.add_argument("--config", dest="config_option", help="YAML config file (reference spelling)")
    run.add_argument("--dry-run", action="store_true", help="print the plan (jobs, records, outputs) and stop")
    run.add_argument("--overwrite", action="store_true", help="recompute outputs that already exist")
    run.add_argument("--no-progress", action="store_true", help="no progress bar")

    validate = commands.add_parser("validate", help="check config, paths, columns and models without extracting")
    validate.add_argument("config")
    validate.add_argument("overrides", nargs="*")

    layers = commands.add_parser("layers", help="list a model's extractable layers and their output shapes")
    layers.add_argument("model", help="model name, hub id, folder or module:callable")
    layers.add_argument("--backend", help="backend (default: chosen from the model as in a config)")
    layers.add_argument("--modality", default="visual", choices=["visual", "audio", "textual"])
    layers.add_argument("--weights", default="none",
                        help="torch weights to build with (default none: shapes do not depend on weights)")

    export = commands.add_parser("export-onnx", help="export a model's layer to ONNX (checked against torch)")
    export.add_argument("model", help="model name, hub id or folder, as in a config")
    export.add_argument("--backend", required=True, choices=["torch", "transformers"])
    export.add_argument("--modality", required=True, choices=["visual", "textual"])
    export.add_argument("--layer", help="layer to export (default: the backend's default layer)")
    export.add_argument("--output", required=True, help="the .onnx file to write")
    export.add_argument("--weights", help="torch weights (DEFAULT when unset, none, a weights file)")
    export.add_argument("--pooling", help="torch: pool the layer as ducho does (avg|mean|max|none)")

    feed = commands.add_parser("export", help="write a run's features in the layout Elliot, MMRec, Cornac or a "
                                              "Parquet reader takes")
    feed.add_argument("folder", help="a layer folder of a run (it holds the run's manifest.json), or a folder above: "
                                     "then every layer folder under it")
    feed.add_argument("--to", required=True, choices=["elliot", "mmrec", "cornac", "parquet"])
    feed.add_argument("--mapping", help="elliot, mmrec: raw id -> int id, two tab-separated columns with a header "
                                        "(MMRec's i_id_mapping.csv); elliot without it: consecutive ints")
    feed.add_argument("--name", help="mmrec: the matrix file (default image_feat.npy, text_feat.npy or "
                                     "audio_feat.npy by the modality)")
    feed.add_argument("--output", help="the export folder (default <layer>/export-<to>; with several layers, "
                                       "<output>/<layer path under FOLDER>)")
    feed.add_argument("--dtype", choices=["float32", "float16"], help="default: the run's dtype")
    feed.add_argument("--pca", type=int, metavar="K", help="elliot: also pca<K>/<int id>.npy, a PCA fitted on the "
                                                           "items exported")

    report = commands.add_parser("report", help="one self-contained HTML page on the features under a folder")
    report.add_argument("folder", help="an output folder, or a run's dataset folder (every layer under it)")
    report.add_argument("-o", "--output", help="the HTML file to write (default: FOLDER/report.html)")
    report.add_argument("--labels", help="TSV (or .csv) with a header: ids, then labels (k-NN accuracy, colours)")
    report.add_argument("--label-column", help="the labels' column (default: the last)")
    report.add_argument("--sample", type=int, default=2000, help="records per layer plotted and compared (2000)")

    models = commands.add_parser("models", help="the model names a config can use, and which resolve offline here")
    models.add_argument("--modality", help="textual, visual, audio or visual_textual")
    models.add_argument("--backend", help="a backend (torch, transformers, tensorflow, onnx, handcrafted...)")
    models.add_argument("--offline", action="store_true", help="only what resolves on this machine now (packaged "
                                                               "weights, local caches, hand-crafted families)")

    demo = commands.add_parser("demo", help="run the bundled demo with the packaged offline models")
    demo.add_argument("--output", default="demo-output", help="folder for the demo's data copy and features")
    demo.add_argument("--only", type=int, action="append", choices=[1, 2, 3],
                      help="run only this demo (1 visual+text, 2 audio+text, 3 text items+reviews); repeatable")
    return parser


def _split_legacy(argv: list[str]) -> list[str]:
    """`--config=file --a.b=c` (reference style, no command) becomes `run file a.b=c`."""
    if argv and argv[0].startswith("--config"):
        argv = ["run", *argv]
    if not argv or argv[0] not in ("run", "validate"):
        return argv
    out = [argv[0]]
    rest = argv[1:]
    index = 0
    while index < len(rest):
        arg = rest[index]
        if arg == "--config" and index + 1 >= len(rest):
            out.append(arg)  # argparse reports the missing value
            index += 1
            continue
        if arg.startswith("--config"):
            out.append(arg.split("=", 1)[1] if "=" in arg else rest[index + 1])
            index += 1 if "=" in arg else 2
            continue
        if arg.startswith("--") and "=" in arg and arg[2:].split("=", 1)[0] not in _FLAGS:
            out.append(arg[2:])  # --a.b=c override
        else:
            out.append(arg)
        index += 1
    return out


_FLAGS = {"dry-run", "overwrite", "no-progress"}


def main(argv: Sequence[str] | None = None) -> int:
    args_list = _split_legacy(list(sys.argv[1:] if argv is None else argv))
    parser = _parser()
    args = parser.parse_args(args_list)
    if args.command is None:
        parser.print_help()
        return 0
    from .logs import console

    console()
    try:
        if args.command == "run":
            return _run(args, parser)
        if args.command == "validate":
            from .inspect import validate

            print(validate(args.config, args.overrides))
            return 0
        if args.command == "layers":
            from .inspect import list_layers

            print(list_layers(args.model, args.modality, args.backend, args.weights))
            return 0
        if args.command == "export-onnx":
            from .export_onnx import export

            print(export(args.model, args.backend, args.modality, args.layer, args.output, args.weights,
                         args.pooling).summary())
            return 0
        if args.command == "export":
            from .exports import export as export_features

            for done in export_features(args.folder, args.to, mapping=args.mapping, name=args.name,
                                        output=args.output, dtype=args.dtype, pca=args.pca):
                print(done.folder)  # the log line above says what it holds
            return 0
        if args.command == "report":
            if args.label_column and not args.labels:
                parser.error("--label-column needs --labels")
            from .report import write_report

            print(write_report(args.folder, args.output, labels=args.labels, label_column=args.label_column,
                               sample=args.sample))
            return 0
        if args.command == "models":
            from .catalogue import catalogue, table

            print(table(catalogue(args.modality, args.backend, args.offline)))
            return 0
        if args.command == "demo":
            from .demo.main import main as demo_main

            return demo_main(args.output, args.only)
    except DuchoError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def _run(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    config = args.config or args.config_option
    if not config:
        parser.error("run needs a config file")
    if args.dry_run:
        from .inspect import dry_run

        print(dry_run(config, args.overrides))
        return 0
    from .runner import run

    result = run(config, args.overrides, overwrite=args.overwrite or None, progress=not args.no_progress)
    for job in result.jobs:
        layers = ", ".join(f"{folder}: {count}" for folder, count in job.counts.items())
        print(f"{job.key}  {job.model}  -> {job.output_dir}  [{layers}]  "
              f"extracted {job.extracted}, resumed {job.resumed}, skipped {len(job.skipped)}")
    if result.log_file:
        print(f"log: {result.log_file}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
