"""``geovis build-engines``: prebuild and cache the TensorRT engines of the configured models and sizes.

Run it once on the target (robot, Jetson, workstation) after installing or upgrading TensorRT, so
the first start of the nodes finds every engine in the cache. Each engine is checked against ONNX
Runtime on golden inputs before it is stored; the key of every engine is printed.
"""

from __future__ import annotations

import argparse
import functools
import time
from pathlib import Path

from geovis_ros.inference.bench import DEFAULT_SIZES, network_size, parse_sizes
from geovis_ros.inference.engine import (
    PRECISIONS,
    EngineConfig,
    EngineValidationError,
    InferenceError,
    ModelSpec,
    default_engine_cache_dir,
    registered_model_specs,
)
from geovis_ros.inference.select import BackendOption, option_unavailable_reason


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``geovis build-engines``."""
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"camera sizes WxH (default {DEFAULT_SIZES})")
    parser.add_argument("--precision", choices=PRECISIONS, default="fp16", help="engine precision (default fp16)")
    parser.add_argument("--models", default="", help="registered model names (default: all)")
    parser.add_argument("--model-onnx", type=Path, action="append", default=[], metavar="PATH",
                        help="also build this ONNX file (repeatable)")
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help=f"engine cache directory (default {default_engine_cache_dir()})")
    parser.add_argument("--device", default="cuda", help="CUDA device (default cuda)")
    parser.add_argument("--workspace-mib", type=int, default=1024, help="builder workspace (default 1024)")
    parser.add_argument("--int8-calibration-cache", type=Path, default=None,
                        help="TensorRT calibration cache for --precision int8")
    parser.add_argument("--force", action="store_true", help="rebuild even when a cached engine matches")


def _specs(args: argparse.Namespace) -> list[ModelSpec]:
    from geovis_ros.errors import CommandError
    from geovis_ros.inference.export import spec_from_onnx

    specs, note = registered_model_specs()
    wanted = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(wanted) - {s.name for s in specs})
    if unknown:
        raise CommandError(f"unknown model {unknown}; registered: {[s.name for s in specs]}")
    chosen = [s for s in specs if not wanted or s.name in wanted]
    for path in args.model_onnx:
        if not path.is_file():
            raise CommandError(f"--model-onnx {path}: no such file")
        chosen.append(spec_from_onnx(path))
    if not chosen:
        raise CommandError(f"no models to build ({note}); pass --model-onnx PATH")
    return chosen


def run(args: argparse.Namespace) -> int:
    """Build every (model, size); exit 0 if all engines are cached and valid, 1 if any was rejected."""
    from geovis_ros.errors import CommandError

    reason = option_unavailable_reason(BackendOption("tensorrt", "cuda"))
    if reason is not None:
        raise CommandError(f"cannot build TensorRT engines on this machine: {reason}. Engines are built on the "
                           "target with an NVIDIA GPU and TensorRT 10 (pip install tensorrt); the onnxruntime "
                           "and torch backends need no prebuilt engines.")
    try:
        sizes = parse_sizes(args.sizes)
        config = EngineConfig(backend="tensorrt", device=args.device, precision=args.precision,
                              allow_fallback=False, workspace_mib=args.workspace_mib,
                              engine_cache_dir=args.cache_dir or default_engine_cache_dir(),
                              int8_calibration_cache=args.int8_calibration_cache)
    except ValueError as err:
        raise CommandError(str(err)) from err
    specs = _specs(args)
    jobs = sorted({(spec.name, network_size(spec, size)): spec for spec in specs for size in sizes}.items())
    return _build_all(jobs, config, args.force)


def _build_all(jobs: list[tuple[tuple[str, tuple[int, int]], ModelSpec]], config: EngineConfig,
               force: bool) -> int:
    from geovis_ros.inference.cache import EngineCache
    from geovis_ros.inference.export import onnx_bytes_for
    from geovis_ros.inference.select import reference_engine
    from geovis_ros.inference.tensorrt_backend import TensorRTRuntime, engine_cache_key, load_or_build_engine

    toolkit = TensorRTRuntime(config.device)
    cache = EngineCache(config.engine_cache_dir, config.lock_timeout_s)
    print(f"TensorRT {toolkit.version} on {toolkit.gpu_name} (sm {toolkit.compute_capability}), "
          f"{config.precision}, cache {cache.directory}", flush=True)
    failures = 0
    for index, ((name, (height, width)), spec) in enumerate(jobs, 1):
        print(f"[{index}/{len(jobs)}] {name} {width}x{height} {config.precision} ...", flush=True)
        try:
            onnx_bytes = onnx_bytes_for(spec, height, width)
            key = engine_cache_key(spec, onnx_bytes, height, width, config, toolkit)
            if force:
                cache.invalidate(key, "--force")
            cached = cache.load(key) is not None
            started = time.monotonic()
            load_or_build_engine(spec, onnx_bytes, height, width, config, toolkit,
                                 functools.partial(reference_engine, spec, onnx_bytes, height, width))
        except EngineValidationError as err:
            failures += 1
            print(f"    REJECTED: {err}", flush=True)
            continue
        except InferenceError as err:
            failures += 1
            print(f"    FAILED: {err}", flush=True)
            continue
        status = "cached" if cached else f"built in {time.monotonic() - started:.1f} s"
        print(f"    {status}; key {key.digest[:24]} -> {cache.engine_path(key)}", flush=True)
    print(f"{len(jobs) - failures}/{len(jobs)} engines ready")
    return 1 if failures else 0
