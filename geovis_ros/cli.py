"""``geovis <command>``: the offline tools (dataset, eval, bench, train, predict, models, odometry, ...).

Each command lives in its own module exposing ``add_arguments(parser)`` and ``run(args) -> int``;
only the module of the command being run is imported, so ``geovis eval`` never loads torch.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from geovis_ros.errors import CommandError

# command name -> (module, one-line help)
COMMANDS: dict[str, tuple[str, str]] = {
    "dataset": ("geovis_ros.synthetic.commands", "render synthetic sequences with exact ground truth"),
    "eval": ("geovis_ros.eval.commands", "score trajectories, depth and flow against ground truth"),
    "bench": ("geovis_ros.inference.bench", "latency and throughput of every model and backend"),
    "build-engines": ("geovis_ros.inference.build_engines", "prebuild and cache TensorRT engines"),
    "train": ("geovis_ros.training.commands", "train or fine-tune the depth, flow and pose networks"),
    "predict": ("geovis_ros.apps.predict", "run a network on image files (depth, flow)"),
    "models": ("geovis_ros.apps.models", "model card presets; check a card against an ONNX file"),
    "odometry": ("geovis_ros.apps.odometry", "monocular visual odometry over a recording"),
    "vo-bench": ("geovis_ros.apps.vo_bench",
                 "odometry, fusion, loop-closure and map-memory benchmarks on synthetic sequences"),
    "process-bag": ("geovis_ros.apps.process_bag", "run the whole pipeline over a recorded bag, without ROS"),
    "pipeline-bench": ("geovis_ros.apps.pipeline_bench",
                       "ms per pipeline stage and per frame at several sizes, with the DIS and features peers"),
    "soak-bench": ("geovis_ros.apps.soak_bench", "long synthetic loop through the pipeline: RSS after the map bounds"),
    "demo": ("geovis_ros.apps.demo", "synthetic sequence through pipeline_node over DDS; writes out/demo"),
}


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="geovis",
        description="geovis_ros offline tools.",
        epilog="commands:\n" + "\n".join(f"  {n:<14}{h}" for n, (_, h) in COMMANDS.items()),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("command", choices=sorted(COMMANDS), metavar="command", help="see below")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``geovis`` console script; returns the process exit status."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    top = _top_parser()
    if not args_list:
        top.print_help(sys.stderr)
        return 2
    if args_list[0] not in COMMANDS:
        top.parse_args(args_list[:1])  # prints usage and exits: --help (0) or unknown command (2)
        return 2
    name = args_list[0]
    module = importlib.import_module(COMMANDS[name][0])
    parser = argparse.ArgumentParser(prog=f"geovis {name}", description=COMMANDS[name][1])
    module.add_arguments(parser)
    args = parser.parse_args(args_list[1:])
    try:
        return int(module.run(args) or 0)
    except CommandError as err:
        print(f"geovis {name}: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"geovis {name}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
