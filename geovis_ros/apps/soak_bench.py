"""``geovis soak-bench``: a long synthetic loop through the whole Pipeline, until its memory bounds bite.

The map and keyframe stores are bounded by counts (``map_max_points`` voxels, ``max_keyframes``
stored keyframe clouds and loop-retrieval entries). This benchmark drives the real
:class:`~geovis_ros.pipeline.pipeline.Pipeline` (networks, odometry, per-frame cloud, back end)
round and round a closed synthetic lap, with bounds small enough to be reached early, and samples
the resident set size (RSS) before the bounds are reached, when they are reached and after. Flat
memory after the bounds is the claim under test: ``growth after the bounds`` is
(largest RSS sample after the bounds - RSS when they were reached) / RSS when they were reached.

The lap (``--lap-frames`` frames of the ``room/loop`` sequence) is rendered once before the first
RSS sample and replayed with increasing stamps, so the renderer's memory is not counted.
A benchmark, not a test: a 10,000-frame run at 160x120 takes tens of minutes on two CPU cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from geovis_ros.apps.stage_benchmarks import resident_memory_bytes
from geovis_ros.errors import CommandError
from geovis_ros.frame import Frame
from geovis_ros.pipeline.pipeline import Pipeline, PipelineConfig, pipeline_config_from_parameters
from geovis_ros.synthetic.scenes import SYNTH_START_NS, SynthConfig, render_sequence

BACKENDS = ("auto", "onnxruntime", "torch")


@dataclass(frozen=True)
class SoakSettings:
    """What one soak run does.

    Attributes:
        frames: frames pushed through the pipeline (laps are repeated as needed).
        lap_frames: frames of the rendered closed lap (>= 30).
        width, height: image size in pixels.
        map_max_points: voxel-map bound (points).
        max_keyframes: bound on stored keyframe clouds and on loop-retrieval entries (>= 2; below
            16 the loop detector's window of recent keyframes shrinks to fit).
        sample_every: frames between RSS samples.
        backend: inference backend of the networks.

    """

    frames: int = 10_000
    lap_frames: int = 240
    width: int = 160
    height: int = 120
    map_max_points: int = 8_000
    max_keyframes: int = 40
    sample_every: int = 50
    backend: str = "auto"

    def __post_init__(self) -> None:
        checks = {
            "frames must be >= 1": self.frames >= 1,
            "lap_frames must be >= 30": self.lap_frames >= 30,
            "width and height must be >= 32": min(self.width, self.height) >= 32,
            "map_max_points must be >= 1": self.map_max_points >= 1,
            "max_keyframes must be >= 2": self.max_keyframes >= 2,
            "sample_every must be >= 1": self.sample_every >= 1,
            f"backend must be one of {', '.join(BACKENDS)}": self.backend in BACKENDS,
        }
        failed = [message for message, ok in checks.items() if not ok]
        if failed:
            raise ValueError("; ".join(failed))

    def pipeline_config(self) -> PipelineConfig:
        """The default pipeline with this run's backend, input width and (small) memory bounds."""
        config = pipeline_config_from_parameters({
            "backend": self.backend, "device": "cpu", "input_width": self.width, "input_height": self.height,
            "map_max_points": self.map_max_points,
        })
        mapping = config.mapping_config
        loop = mapping.loop and replace(
            mapping.loop, max_database_size=self.max_keyframes,
            recent_keyframes_excluded=min(mapping.loop.recent_keyframes_excluded, self.max_keyframes - 1))
        return replace(config, mapping_config=replace(
            mapping, map=replace(mapping.map, max_keyframes=self.max_keyframes), loop=loop))


@dataclass(frozen=True)
class SoakReport:
    """Figures of :func:`run_soak` (RSS in MiB; None where the bounds were never reached)."""

    frames: int
    ms_per_frame: float
    keyframes_created: int
    keyframes_stored: int
    map_points: int
    bound_reached_at_frame: int | None
    rss_before_mb: float
    rss_at_bound_mb: float | None
    rss_after_bound_max_mb: float | None
    rss_end_mb: float

    @property
    def growth_after_bound(self) -> float | None:
        """(largest RSS after the bounds - RSS at the bounds) / RSS at the bounds; None if never reached."""
        if self.rss_at_bound_mb is None or self.rss_after_bound_max_mb is None:
            return None
        return (self.rss_after_bound_max_mb - self.rss_at_bound_mb) / self.rss_at_bound_mb


def _rss_mb() -> float:
    """Resident set size of this process in MiB (0 where /proc is not available)."""
    return (resident_memory_bytes() or 0) / 2**20


def bounds_reached(pipeline: Pipeline) -> bool:
    """Whether the voxel map has evicted and the keyframe and loop stores are full."""
    backend = pipeline.backend
    if backend is None:
        return False
    stores_full = len(backend.map.keyframe_ids) >= backend.map.config.max_keyframes
    database_full = backend.detector is None or len(backend.detector) >= backend.detector.config.max_database_size
    return backend.map.voxels.evicted_total > 0 and stores_full and database_full


def run_soak(settings: SoakSettings, progress: Callable[[str], None] | None = None) -> SoakReport:
    """Push ``settings.frames`` frames of a repeated synthetic lap through a fresh Pipeline; sample RSS.

    ``progress`` receives one line per RSS sample (frame, RSS, keyframes, map points).
    """
    lap = list(render_sequence(SynthConfig(scene="room", trajectory="loop", frames=settings.lap_frames,
                                           width=settings.width, height=settings.height), with_flow=False))
    period_ns = lap[1].stamp_ns - lap[0].stamp_ns
    pipeline = Pipeline(settings.pipeline_config())
    rss_before = _rss_mb()
    bound_frame: int | None = None
    rss_at_bound: float | None = None
    after_bound: list[float] = []
    started = time.perf_counter()
    for index in range(settings.frames):
        item = lap[index % len(lap)]
        pipeline(Frame(SYNTH_START_NS + index * period_ns, item.rgb, item.intrinsics, "camera"))
        if bound_frame is None and bounds_reached(pipeline):
            bound_frame, rss_at_bound = index, _rss_mb()
        if index % settings.sample_every == 0 or index == settings.frames - 1:
            rss = _rss_mb()
            if bound_frame is not None:
                after_bound.append(rss)
            if progress is not None:
                state = pipeline.describe()
                progress(f"frame {index}: RSS {rss:.1f} MiB, keyframes {state.get('keyframes')}, map points "
                         f"{state.get('map_points')}{', bounds reached' if bound_frame is not None else ''}")
    elapsed = time.perf_counter() - started
    backend = pipeline.backend
    assert backend is not None
    return SoakReport(
        frames=settings.frames,
        ms_per_frame=elapsed * 1e3 / settings.frames,
        keyframes_created=backend.keyframe_count,
        keyframes_stored=len(backend.map.keyframe_ids),
        map_points=len(backend.map),
        bound_reached_at_frame=bound_frame,
        rss_before_mb=rss_before,
        rss_at_bound_mb=rss_at_bound,
        rss_after_bound_max_mb=max(after_bound) if after_bound else None,
        rss_end_mb=_rss_mb(),
    )


def format_report(report: SoakReport, settings: SoakSettings) -> str:
    """The human-readable summary of a soak run."""
    head = (f"soak: {report.frames} frames at {settings.width}x{settings.height}, {report.ms_per_frame:.1f} ms/frame; "
            f"{report.keyframes_created} keyframes created, {report.keyframes_stored} stored "
            f"(bound {settings.max_keyframes}); {report.map_points} map points (bound {settings.map_max_points})")
    if report.bound_reached_at_frame is None:
        return (f"{head}\n  bounds NOT reached (run more --frames or lower the bounds); "
                f"RSS {report.rss_before_mb:.1f} -> {report.rss_end_mb:.1f} MiB")
    growth = report.growth_after_bound
    assert growth is not None and report.rss_at_bound_mb is not None
    return (f"{head}\n  RSS before {report.rss_before_mb:.1f} MiB; bounds reached at frame "
            f"{report.bound_reached_at_frame} with {report.rss_at_bound_mb:.1f} MiB; after them max "
            f"{report.rss_after_bound_max_mb:.1f} MiB, end {report.rss_end_mb:.1f} MiB; "
            f"growth after the bounds {100.0 * growth:+.2f} %")


_HELP = {
    "frames": "frames pushed through the pipeline",
    "lap_frames": "frames of the rendered closed lap, replayed round and round",
    "width": "image width, pixels",
    "height": "image height, pixels",
    "map_max_points": "voxel-map bound (points), small so that it is reached early",
    "max_keyframes": "bound on stored keyframe clouds and loop-retrieval entries",
    "sample_every": "frames between RSS samples",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Flags of ``geovis soak-bench``."""
    defaults = SoakSettings()
    for name, text in _HELP.items():
        parser.add_argument("--" + name.replace("_", "-"), type=int, default=getattr(defaults, name),
                            help=f"{text} (default {getattr(defaults, name)})")
    parser.add_argument("--backend", choices=BACKENDS, default=defaults.backend,
                        help=f"inference backend on the CPU (default {defaults.backend})")
    parser.add_argument("--quiet", action="store_true", help="print the summary only")


def run(args: argparse.Namespace) -> int:
    """Run the soak and print its summary."""
    names: Sequence[str] = [field.name for field in dataclasses.fields(SoakSettings)]
    try:
        settings = SoakSettings(**{name: getattr(args, name) for name in names})
    except ValueError as err:
        raise CommandError(str(err)) from None
    report = run_soak(settings, None if args.quiet else lambda line: print(line, flush=True))
    print(format_report(report, settings))
    return 0
