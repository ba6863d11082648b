"""``geovis models``: the model card presets, and a card checked against an ONNX file before anything runs.

Forms::

    geovis models [list]                          # presets: task, output kind, size rules, source
    geovis models check MODEL.onnx [--card NAME|FILE] [--task depth|flow] [--run]

``check`` binds the card to the graph (every input has a role; names, ranks, dtypes, channels and
fixed sizes agree) and prints what each role resolves to; ``--run`` also runs the model once on a
golden input with ONNX Runtime and refuses non-finite or implausible outputs. A mismatch prints
one line naming the card field and exits with status 2.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from geovis_ros.errors import CommandError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Sub-commands ``list`` (default) and ``check``."""
    sub = parser.add_subparsers(dest="action", metavar="{list,check}")
    sub.add_parser("list", help="the model card presets")
    check = sub.add_parser("check", help="check a card against an ONNX file")
    check.add_argument("model", type=Path, help="the .onnx file")
    check.add_argument("--card", default="", help="preset name or card file (default: MODEL.yaml beside it)")
    check.add_argument("--task", choices=("depth", "flow"), default=None,
                       help="depth or flow (default: the card's task)")
    check.add_argument("--run", action="store_true", help="also run it once on a golden input (ONNX Runtime, CPU)")


def _size_rules(card) -> str:  # noqa: ANN001 - a ModelCard
    size = card.size
    rules = [f"x{size.multiple}", size.resize]
    if size.fixed:
        rules.append(f"fixed {size.fixed[1]}x{size.fixed[0]}")
    if size.width:
        rules.append(f"width {size.width}")
    if size.area:
        rules.append(f"area {size.area[0]}x{size.area[1]}")
    return " ".join(rules)


def _list() -> None:
    from geovis_ros.models.cards import presets

    print(f"{'preset':<34}{'task':<7}{'output':<24}{'size':<30}source")
    for key, card in presets().items():
        kind = card.depth.kind if card.depth is not None else "flow (pixels)"
        print(f"{key:<34}{card.task:<7}{kind:<24}{_size_rules(card):<30}{card.source}")


def _check(args: argparse.Namespace) -> None:
    from geovis_ros.inference.card_runtime import bind_model, check_golden_outputs, golden_plan
    from geovis_ros.models.cards import load_card, read_card_file

    if args.model.suffix != ".onnx" or not args.model.is_file():
        raise CommandError(f"{args.model}: expected an existing .onnx file")
    if args.card:
        card = load_card(args.card, args.task)
    elif args.model.with_suffix(".yaml").is_file():
        card = read_card_file(args.model.with_suffix(".yaml"))
    else:
        raise CommandError(f"no card: give --card NAME|FILE or put {args.model.with_suffix('.yaml').name} beside "
                           "the model")
    if args.task is not None and card.task != args.task:
        raise CommandError(f"model card {card.key}: task: is {card.task!r}, not {args.task!r}")
    bound = bind_model(card, str(args.model))
    print(f"{args.model}: card {card.key} ({card.name}; {card.licence}) fits")
    by_name = {t.name: t for t in (*bound.spec.inputs, *bound.spec.outputs)}
    for role, name in bound.names.items():
        tensor = by_name[name]
        print(f"  {role:<12}-> {name!r} {tensor.dtype} {tensor.shape}")
    if args.run:
        from geovis_ros.inference.onnxruntime_backend import OnnxRuntimeEngine

        plan = golden_plan(card, card.size.width or 320)
        height, width = plan.padded
        engine = OnnxRuntimeEngine(bound.spec, args.model.read_bytes(), height, width)
        check_golden_outputs(bound, engine.infer(bound.spec.make_inputs(height, width)), f"model {card.key}")
        print(f"  golden input at {width}x{height}: outputs finite and plausible")


def run(args: argparse.Namespace) -> int:
    """List the presets or check a card; card and model errors become :class:`CommandError`."""
    from geovis_ros.inference.engine import InferenceError
    from geovis_ros.models.cards import CardError

    try:
        if args.action == "check":
            _check(args)
        else:
            _list()
    except (CardError, InferenceError) as err:
        raise CommandError(str(err)) from err
    return 0
