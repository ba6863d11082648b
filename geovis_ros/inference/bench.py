"""``geovis bench``: latency (p50/p90/p99) and throughput of every model and backend.

OpenCV DIS optical flow (ultrafast/fast/medium presets) runs side by side as the classical peer,
with the flow network's own classical initialisation (``dis-medium-seeded``,
:func:`geovis_ros.models.flow.initial_flow`), which a flow inference adds to the network's time.

Timing is per call after warm-up: CUDA events on the current stream for CUDA engines (inputs already
on the device), wall clock otherwise; CUDA engines get a second row timed by wall clock with numpy
inputs and outputs (``wall-clock-host-io``: the pinned uploads, the run and the download with its one
wait, as a pipeline stage sees it). Without GPU rows the output says why in one line
(:func:`gpu_rows_absent_note`). Throughput is single-stream frames per second (1000 / mean latency).
Models: ``geovis_ros.inference.registry.MODEL_SPECS`` and any ``--model-onnx`` files.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from geovis_ros.inference.devices import cuda_unavailable_reason, physical_cpu_cores
from geovis_ros.inference.engine import (
    PRECISIONS,
    SPATIAL_SYMBOLS,
    Engine,
    EngineConfig,
    InferenceError,
    ModelSpec,
    registered_model_specs,
)
from geovis_ros.inference.preprocess import padded_size
from geovis_ros.inference.select import (
    AUTO_ORDER,
    BackendOption,
    create_engine,
    option_unavailable_reason,
)

LOG = logging.getLogger(__name__)

DEFAULT_SIZES = "320x240,640x480"
QUICK_SIZE = "160x120"
DIS_PRESETS = ("ultrafast", "fast", "medium")
HOST_IO_TIMING = "wall-clock-host-io"


@dataclass(frozen=True)
class BenchResult:
    """Latency statistics of one (model or method, backend, precision, size)."""

    name: str
    backend: str
    device: str
    precision: str
    size: str
    network_size: str
    timing: str
    iterations: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    mean_ms: float
    throughput_fps: float


def parse_sizes(text: str) -> list[tuple[int, int]]:
    """``"320x240,640x480"`` -> [(height, width), ...]; raises ValueError naming a bad entry."""
    sizes = []
    for item in filter(None, (part.strip() for part in text.split(","))):
        width, sep, height = item.lower().partition("x")
        if not sep or not width.isdigit() or not height.isdigit() or int(width) < 8 or int(height) < 8:
            raise ValueError(f"bad size {item!r}: expected WIDTHxHEIGHT with both >= 8, e.g. 640x480")
        sizes.append((int(height), int(width)))
    if not sizes:
        raise ValueError("no sizes given")
    return sizes


def _fmt(size: tuple[int, int]) -> str:
    return f"{size[1]}x{size[0]}"


def measure(run_once: Callable[[], Any], warmup: int, iterations: int, cuda_device: str | None = None,
            ) -> list[float]:
    """Per-call latencies in ms after ``warmup`` calls; CUDA events on ``cuda_device``'s stream if given."""
    for _ in range(warmup):
        run_once()
    samples = []
    if cuda_device is None:
        for _ in range(iterations):
            started = time.perf_counter()
            run_once()
            samples.append((time.perf_counter() - started) * 1e3)
        return samples
    import torch

    stream = torch.cuda.current_stream(cuda_device)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(iterations):
        start.record(stream)
        run_once()
        end.record(stream)
        end.synchronize()
        samples.append(start.elapsed_time(end))
    return samples


def _result(name: str, backend: str, device: str, precision: str, size: tuple[int, int],
            network: tuple[int, int], timing: str, samples: Sequence[float]) -> BenchResult:
    p50, p90, p99 = np.percentile(samples, [50, 90, 99])
    mean = float(np.mean(samples))
    return BenchResult(name, backend, device, precision, _fmt(size), _fmt(network), timing, len(samples),
                       round(float(p50), 3), round(float(p90), 3), round(float(p99), 3), round(mean, 3),
                       round(1e3 / mean, 1))


def textured_pair(height: int, width: int, shift: tuple[int, int] = (2, 3), seed: int = 0,
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Two grey uint8 frames (H, W): smooth random texture and the same shifted by (dy, dx) pixels."""
    import cv2

    noise = np.random.default_rng(seed).random((height, width)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), 2.0)
    texture = (255.0 * (blurred - blurred.min()) / max(float(np.ptp(blurred)), 1e-6)).astype(np.uint8)
    return texture, np.roll(texture, shift, axis=(0, 1))


def bench_dis(sizes: Sequence[tuple[int, int]], warmup: int, iterations: int) -> list[BenchResult]:
    """OpenCV DIS optical flow, each preset at each size, and the flow network's initialisation (CPU, wall clock)."""
    from geovis_ros.models.flow import dis_object, initial_flow

    results = []
    for size in sizes:
        first, second = textured_pair(*size)
        for preset in DIS_PRESETS:
            dis = dis_object(preset, *size)
            samples = measure(functools.partial(dis.calc, first, second, None), warmup, iterations)
            results.append(_result(f"dis-{preset}", "opencv", "cpu", "fp32", size, size, "wall-clock", samples))
        first_rgb, second_rgb = (np.repeat(image[..., None], 3, axis=2) for image in (first, second))
        samples = measure(functools.partial(initial_flow, first_rgb, second_rgb), warmup, iterations)
        results.append(_result("dis-medium-seeded", "opencv", "cpu", "fp32", size, size, "wall-clock", samples))
    return results


def network_size(spec: ModelSpec, size: tuple[int, int]) -> tuple[int, int]:
    """The network input (height, width) for a camera ``size`` (height, width).

    Padded up to the model's multiple, or the model's own fixed size when its graph has no symbolic
    height/width.
    """
    for tensor in spec.inputs:
        if len(tensor.shape) == 4 and not any(d in SPATIAL_SYMBOLS for d in tensor.shape):
            return int(tensor.shape[2]), int(tensor.shape[3])
    return padded_size(*size, spec.spatial_multiple)


def bench_model(spec: ModelSpec, sizes: Sequence[tuple[int, int]], options: Sequence[BackendOption],
                precisions: Sequence[str], warmup: int, iterations: int, threads: int,
                ) -> tuple[list[BenchResult], list[str]]:
    """Every usable option x precision x size of one model; returns (results, skipped reasons)."""
    results: list[BenchResult] = []
    skipped: list[str] = []
    for option in options:
        reason = option_unavailable_reason(option, spec)
        if reason is not None:
            skipped.append(f"{spec.name} on {option.label}: {reason}")
            continue
        for precision in (precisions if option.device == "cuda" else ("fp32",)):
            config = EngineConfig(backend=option.backend, device=option.device, precision=precision,
                                  allow_fallback=False, num_threads=threads)
            measured: set[tuple[int, int]] = set()
            engine: Engine | None = None
            for size in sizes:
                network = network_size(spec, size)
                if network in measured:
                    continue
                measured.add(network)
                if engine is None or not any(t.is_dynamic for t in engine.input_specs):
                    try:  # dynamic-shape engines (onnxruntime, torch) serve every size; TensorRT is per size
                        engine = create_engine(spec, *network, config)
                    except InferenceError as err:
                        skipped.append(f"{spec.name} on {option.label} {precision} at {_fmt(network)}: {err}")
                        continue
                inputs: dict[str, Any] = spec.make_inputs(*network)
                cuda_device = engine.device if engine.device.startswith("cuda") else None
                if cuda_device is not None:
                    import torch

                    inputs = {k: torch.from_numpy(v).to(cuda_device) for k, v in inputs.items()}
                engine.warmup(1)
                samples = measure(functools.partial(engine.infer, inputs), warmup, iterations, cuda_device)
                results.append(_result(spec.name, option.backend, engine.device, engine.precision, size, network,
                                       "cuda-events" if cuda_device else "wall-clock", samples))
                if cuda_device is not None:  # what a pipeline stage sees: numpy up, run, numpy down, one wait
                    samples = measure(functools.partial(engine.infer, spec.make_inputs(*network)), warmup,
                                      iterations)
                    results.append(_result(spec.name, option.backend, engine.device, engine.precision, size,
                                           network, HOST_IO_TIMING, samples))
    return results, skipped


def gpu_rows_absent_note() -> str:
    """One line saying why a benchmark printed no GPU rows: CUDA unusable (and why), else none was asked for."""
    reason = cuda_unavailable_reason()
    if reason is not None:
        return f"no GPU rows: {reason}"
    return "no GPU rows: CUDA is usable here but no CUDA backend was chosen or could run (see the skipped lines)"


def machine_info() -> dict[str, Any]:
    """Versions and hardware the figures were measured on."""
    import cv2
    import torch

    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu": _cpu_model(), "physical_cores": physical_cpu_cores(),
                            "torch": torch.__version__, "torch_threads": torch.get_num_threads(),
                            "opencv": cv2.__version__, "opencv_threads": cv2.getNumThreads()}
    try:
        import onnxruntime

        info["onnxruntime"] = onnxruntime.__version__
    except ImportError:
        info["onnxruntime"] = None
    info["gpu"] = None if cuda_unavailable_reason() else torch.cuda.get_device_name()
    return info


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def format_table(results: Sequence[BenchResult]) -> str:
    """A fixed-width table, one row per result."""
    header = (f"{'name':<18}{'backend':<13}{'device':<8}{'prec':<6}{'size':>9}{'network':>9}"
              f"{'p50 ms':>9}{'p90 ms':>9}{'p99 ms':>9}{'fps':>8}  timing")
    rows = [f"{r.name:<18}{r.backend:<13}{r.device:<8}{r.precision:<6}{r.size:>9}{r.network_size:>9}"
            f"{r.p50_ms:>9.2f}{r.p90_ms:>9.2f}{r.p99_ms:>9.2f}{r.throughput_fps:>8.1f}  {r.timing}"
            for r in results]
    return "\n".join([header, "-" * len(header), *rows])


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Options of ``geovis bench``."""
    parser.add_argument("--sizes", default=DEFAULT_SIZES, help=f"camera sizes WxH, comma-separated "
                        f"(default {DEFAULT_SIZES})")
    parser.add_argument("--quick", action="store_true",
                        help=f"CI size: {QUICK_SIZE}, 2 warm-up and 10 timed iterations")
    parser.add_argument("--warmup", type=int, default=5, help="untimed calls before timing (default 5)")
    parser.add_argument("--iterations", type=int, default=50, help="timed calls per row (default 50)")
    parser.add_argument("--backends", default=",".join(o.label for o in AUTO_ORDER),
                        help="backend-device labels to try, comma-separated (default: all; unusable ones are "
                             "listed with the reason)")
    parser.add_argument("--precisions", default="fp32,fp16", help="precisions on CUDA (CPU runs fp32)")
    parser.add_argument("--models", default="", help="registered model names to run (default: all)")
    parser.add_argument("--model-onnx", type=Path, action="append", default=[], metavar="PATH",
                        help="also benchmark this ONNX file (repeatable)")
    parser.add_argument("--threads", type=int, default=0, help="CPU threads (default: physical cores)")
    parser.add_argument("--no-dis", action="store_true", help="skip the OpenCV DIS optical flow rows")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the results as JSON")


def _options(labels: str) -> list[BackendOption]:
    known = {o.label: o for o in (*AUTO_ORDER, BackendOption("onnxruntime", "cuda"))}
    chosen = [label.strip() for label in labels.split(",") if label.strip()]
    unknown = [label for label in chosen if label not in known]
    if unknown:
        from geovis_ros.errors import CommandError

        raise CommandError(f"unknown backend {unknown}; choose from {sorted(known)}")
    return [known[label] for label in chosen]


def run(args: argparse.Namespace) -> int:
    """Benchmark, print the table, optionally write JSON."""
    from geovis_ros.errors import CommandError
    from geovis_ros.inference.export import spec_from_onnx

    try:
        sizes = parse_sizes(QUICK_SIZE if args.quick else args.sizes)
    except ValueError as err:
        raise CommandError(str(err)) from err
    warmup, iterations = (2, 10) if args.quick else (args.warmup, args.iterations)
    if warmup < 0 or iterations < 1 or args.threads < 0:
        raise CommandError("--warmup must be >= 0, --iterations >= 1, --threads >= 0")
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    if not precisions or any(p not in PRECISIONS for p in precisions):
        raise CommandError(f"--precisions must be taken from {PRECISIONS}, got {args.precisions!r}")
    options = _options(args.backends)
    specs, note = registered_model_specs()
    wanted = [n.strip() for n in args.models.split(",") if n.strip()]
    unknown = sorted(set(wanted) - {s.name for s in specs})
    if unknown:
        raise CommandError(f"unknown model {unknown}; registered: {[s.name for s in specs]}")
    specs = tuple(s for s in specs if not wanted or s.name in wanted)
    for path in args.model_onnx:
        if not path.is_file():
            raise CommandError(f"--model-onnx {path}: no such file")
        specs += (spec_from_onnx(path),)
    notes = [note] if note else []
    if args.threads:
        import cv2
        import torch

        torch.set_num_threads(args.threads)
        cv2.setNumThreads(args.threads)

    results = [] if args.no_dis else bench_dis(sizes, warmup, iterations)
    skipped: list[str] = []
    for spec in specs:
        print(f"benchmarking {spec.name} ...", flush=True)
        model_results, model_skipped = bench_model(spec, sizes, options, precisions, warmup, iterations,
                                                   args.threads)
        results += model_results
        skipped += model_skipped
    print(format_table(results))
    if not any(r.device.startswith("cuda") for r in results):
        notes.append(gpu_rows_absent_note())
    for line in notes + [f"skipped {s}" for s in skipped]:
        print(f"note: {line}")
    if args.json:
        report = {"machine": machine_info(), "warmup": warmup, "iterations": iterations,
                  "results": [asdict(r) for r in results], "skipped": skipped, "notes": notes}
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(report, indent=2) + "\n")
        print(f"wrote {args.json}")
    return 0
