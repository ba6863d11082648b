"""Camera trajectories for the synthetic world: handheld, driving, drone, rotation, standstill, loop.

World frame: z up, metres, the floor / ground at z = 0. Every trajectory is a (F, 4, 4) float64
array of poses T_world_camera (OpenCV optical camera frame: x right, y down, z forward) sampled at
``fps``, deterministic for a given generator state, and confined to a :class:`CameraSpace` that
the scene builder guarantees to be free of geometry.

Motion models (all smooth: sums of sinusoids, no random walks):
- ``handheld``: walking at ``walk_speed`` with a slow look-around, step bob and a few millimetres /
  tenths of a degree of hand tremor at 0.7-3 Hz;
- ``driving``: constant ``drive_speed`` at ``drive_height``, heading along the path (yaw changes
  where the path bends), tiny vibration;
- ``drone``: ``drone_speed`` with altitude changes through the space's height range, looking
  somewhat down, with slow yaw / pitch / roll swings;
- ``rotation``: fixed position, panning / tilting / rolling at up to about 1 rad/s;
- ``standstill``: one constant pose;
- ``loop``: one closed lap at up to 1.5 x ``walk_speed`` (short sequences make small loops):
  frame F (one past the last) would be frame 0, so the last frame is one step from the start
  (for loop-closure tests). The camera turns with the path on laps of 6 s or more; on shorter
  laps it keeps its heading.

In elongated spaces (``along_x``: corridors, streets) handheld, driving and drone sweep along +x;
elsewhere (and for ``loop`` everywhere) the path is a smooth closed curve inscribed in the space.
When the space has a ``focus`` point (a tabletop), the camera always looks at it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from geovis_ros.errors import GeovisError

TRAJECTORY_KINDS = ("handheld", "driving", "drone", "rotation", "standstill", "loop")

_DERIVATIVE_STEP_S = 1e-3
_CURVE_SAMPLES = 4096
_MIN_TURNING_LAP_S = 6.0  # shorter loops keep a fixed heading instead of turning 360 degrees


class TrajectoryError(GeovisError, ValueError):
    """Unknown trajectory kind or an inconsistent camera space."""


@dataclass(frozen=True)
class CameraSpace:
    """Where a camera may be in a scene, and how fast it moves there.

    Attributes:
        low, high: corners (x, y, z) of the axis-aligned box (world frame, metres) that the camera
            centre stays in; the scene keeps this box (plus a clearance) free of geometry.
        eye_height: handheld camera height above the floor (m), inside [low z, high z].
        drive_height: driving camera height (m), inside [low z, high z].
        walk_speed, drive_speed, drone_speed: path speeds, m/s.
        focus: a point (x, y, z) the camera keeps looking at (tabletop), or None.
        along_x: the space is a long x-aligned strip (corridor, street): open paths sweep along +x.

    """

    low: tuple[float, float, float]
    high: tuple[float, float, float]
    eye_height: float
    drive_height: float
    walk_speed: float
    drive_speed: float
    drone_speed: float
    focus: tuple[float, float, float] | None = None
    along_x: bool = False

    def __post_init__(self) -> None:
        low, high = np.asarray(self.low, dtype=float), np.asarray(self.high, dtype=float)
        if low.shape != (3,) or high.shape != (3,) or not np.all(np.isfinite(low)) or not np.all(low < high):
            raise TrajectoryError(f"camera space needs finite low < high per axis, got {self.low}, {self.high}")
        for name in ("eye_height", "drive_height"):
            value = getattr(self, name)
            if not low[2] <= value <= high[2]:
                raise TrajectoryError(f"{name} {value} m is outside the space's heights [{low[2]}, {high[2]}]")
        for name in ("walk_speed", "drive_speed", "drone_speed"):
            if not getattr(self, name) > 0:
                raise TrajectoryError(f"{name} must be > 0 m/s, got {getattr(self, name)}")


def _check_kind(kind: str) -> None:
    if kind not in TRAJECTORY_KINDS:
        raise TrajectoryError(f"unknown trajectory {kind!r}; expected one of {', '.join(TRAJECTORY_KINDS)}")


def travel_speed(kind: str, space: CameraSpace) -> float:
    """Nominal path speed (m/s) of a trajectory kind in a space; 0 for rotation and standstill."""
    _check_kind(kind)
    return {
        "handheld": space.walk_speed,
        "loop": space.walk_speed,
        "driving": space.drive_speed,
        "drone": space.drone_speed,
    }.get(kind, 0.0)


def sweep_length(kind: str, space: CameraSpace, frames: int, fps: float) -> float:
    """Length (m) along x that an ``along_x`` space needs for this trajectory to fit.

    Open paths cover ``speed * (frames - 1) / fps``; a loop goes out and back, so it needs half
    of its lap ``speed * frames / fps``.
    """
    speed = travel_speed(kind, space)
    if kind == "loop":
        return 0.5 * speed * frames / fps
    return speed * max(frames - 1, 0) / fps


# ------------------------------------------------------------------------------------ building blocks


def camera_rotations(
    yaw: NDArray[np.float64], pitch: NDArray[np.float64], roll: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Rotations R_world_camera (F, 3, 3) of a camera with the given angles (F,) in radians.

    yaw: heading about world +z, 0 = looking along +x; pitch: positive looks up; roll: about the
    optical axis, positive turns the image clockwise. Camera frame is OpenCV optical.
    """
    cy, sy, cp, sp = np.cos(yaw), np.sin(yaw), np.cos(pitch), np.sin(pitch)
    forward = np.stack([cp * cy, cp * sy, sp], axis=-1)
    right = np.stack([sy, -cy, np.zeros_like(yaw)], axis=-1)
    down = np.cross(forward, right)
    cr, sr = np.cos(roll)[:, None], np.sin(roll)[:, None]
    rolled_right = cr * right + sr * down
    rolled_down = cr * down - sr * right
    return np.stack([rolled_right, rolled_down, forward], axis=-1)


def _look_angles(
    positions: NDArray[np.float64], target: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Yaw and pitch (F,) radians of cameras at ``positions`` (F, 3) looking at ``target`` (3,)."""
    offset = target - positions
    yaw = np.arctan2(offset[:, 1], offset[:, 0])
    pitch = np.arctan2(offset[:, 2], np.hypot(offset[:, 0], offset[:, 1]))
    return yaw, pitch


class SmoothSignals:
    """Smooth zero-mean random signals in [-1, 1] on fixed sample times.

    With a ``loop_period`` every frequency is rounded to a whole multiple of 1 / loop_period, so
    the signal returns exactly to its start value after one period; terms slower than one cycle
    per period are dropped.
    """

    def __init__(self, rng: np.random.Generator, times: NDArray[np.float64], loop_period: float | None):
        self.rng = rng
        self.times = times
        self.loop_period = loop_period

    def _frequency(self, period_s: float) -> float:
        if self.loop_period is None:
            return 1.0 / period_s
        return round(self.loop_period / period_s) / self.loop_period

    def smooth(self, period_range: tuple[float, float], terms: int = 3) -> NDArray[np.float64]:
        """Sum of ``terms`` sinusoids with periods drawn in ``period_range`` (s), scaled to [-1, 1]."""
        amplitudes = self.rng.uniform(0.5, 1.0, terms)
        signal = np.zeros_like(self.times)
        for amplitude in amplitudes:
            frequency = self._frequency(self.rng.uniform(*period_range))
            phase = self.rng.uniform(0.0, 2.0 * np.pi)
            if frequency > 0:
                signal += amplitude * np.sin(2.0 * np.pi * frequency * self.times + phase)
        return signal / amplitudes.sum()

    def tremor(self, amplitude: float) -> NDArray[np.float64]:
        """Hand tremor: ``amplitude`` times a 0.7-3 Hz signal."""
        return amplitude * self.smooth((1.0 / 3.0, 1.0 / 0.7), terms=3)


class _ClosedCurve:
    """A rounded rectangle ``centre +- semi_axes`` in the xy plane, parameterised by arc length.

    The corner radius is ``corner`` times the smaller semi-axis (gentle turns even in a long
    narrow space); the curve has a continuous tangent everywhere.
    """

    def __init__(self, centre: NDArray[np.float64], semi_axes: NDArray[np.float64], corner: float):
        phi = np.linspace(0.0, 2.0 * np.pi, _CURVE_SAMPLES, endpoint=False)
        radius = corner * float(np.min(semi_axes))
        straight = semi_axes - radius
        c, s = np.cos(phi), np.sin(phi)
        # Quarter circles around the corners; the straight sides appear as the single segments
        # between the two samples around each sign change of cos / sin.
        outline = np.stack([np.sign(c) * straight[0] + radius * c, np.sign(s) * straight[1] + radius * s], axis=-1)
        self.points = centre + np.concatenate([outline, outline[:1]])  # closed: last = first
        self.arc = np.concatenate([[0.0], np.cumsum(np.linalg.norm(np.diff(self.points, axis=0), axis=1))])
        self.perimeter = float(self.arc[-1])

    @staticmethod
    def semi_axes_for(perimeter: float, semi_axes: NDArray[np.float64], corner: float) -> NDArray[np.float64]:
        """The largest semi-axes within ``semi_axes`` whose curve has at most ``perimeter`` metres.

        The long side shrinks first (towards a rounded square), then both sides together, so small
        loops stay round instead of becoming thin slivers with hairpin turns.
        """
        # Perimeter of a rounded rectangle (a >= b, corner radius r = corner * b):
        # 4 (a - r) + 4 (b - r) + 2 pi r = 4 a + (4 + (2 pi - 8) corner) b.
        long_axis, short_axis = int(np.argmax(semi_axes)), int(np.argmin(semi_axes))
        b = float(semi_axes[short_axis])
        per_b = 4.0 + (2.0 * np.pi - 8.0) * corner
        a = (perimeter - per_b * b) / 4.0
        if a >= semi_axes[long_axis]:
            return semi_axes.copy()
        if a >= b:
            result = semi_axes.copy()
            result[long_axis] = a
            return result
        return np.full(2, perimeter / (4.0 + per_b))

    def at(self, arc_length: NDArray[np.float64]) -> NDArray[np.float64]:
        """Points (N, 2) at arc lengths (N,) metres, wrapping around the perimeter."""
        s = np.mod(arc_length, self.perimeter)
        return np.stack([np.interp(s, self.arc, self.points[:, c]) for c in range(2)], axis=-1)


def _heading(
    path_xy: Callable[[NDArray[np.float64]], NDArray[np.float64]], times: NDArray[np.float64]
) -> NDArray[np.float64]:
    """Yaw (F,) of the direction of travel of a path xy(t), by central differences."""
    delta = path_xy(times + _DERIVATIVE_STEP_S) - path_xy(times - _DERIVATIVE_STEP_S)
    return np.unwrap(np.arctan2(delta[:, 1], delta[:, 0]))


# ----------------------------------------------------------------------------------------- paths


def _planar_path(
    kind: str, space: CameraSpace, frames: int, fps: float, rng: np.random.Generator
) -> tuple[Callable[[NDArray[np.float64]], NDArray[np.float64]], float | None]:
    """Path xy(t) (seconds -> (N, 2) metres) and the loop period (s) or None for open paths."""
    low, high = np.asarray(space.low), np.asarray(space.high)
    centre, half = (low + high)[:2] / 2, (high - low)[:2] / 2
    speed = travel_speed(kind, space)
    if space.along_x and kind != "loop":
        lateral_period = rng.uniform(6.0, 14.0)
        lateral_phase = rng.uniform(0.0, 2.0 * np.pi)
        lateral_amplitude = 0.8 * half[1]

        def sweep(t: NDArray[np.float64]) -> NDArray[np.float64]:
            x = low[0] + speed * t
            y = centre[1] + lateral_amplitude * np.sin(2.0 * np.pi * t / lateral_period + lateral_phase)
            return np.stack([x, y], axis=-1)

        return sweep, None
    corner = rng.uniform(0.6, 0.95)
    direction = rng.choice([-1.0, 1.0])
    if kind != "loop":
        curve = _ClosedCurve(centre, half, corner)
        start = rng.uniform(0.0, curve.perimeter)
        return (lambda t: curve.at(start + direction * speed * t)), None
    # One lap per sequence at no more than 1.5x walking speed: short sequences make small loops,
    # placed at random in the space (away from the focus, when there is one).
    period = frames / fps
    semi = _ClosedCurve.semi_axes_for(1.5 * speed * period, half, corner)
    room = half - semi
    if space.focus is None:
        centre = centre + rng.uniform(-room, room)
    else:
        away = rng.normal(size=2)
        centre = centre + np.clip(away / np.linalg.norm(away) * half.max(), -room, room)
    curve = _ClosedCurve(centre, semi, corner)
    speed = curve.perimeter / period
    return (lambda t: curve.at(direction * speed * t)), period


def camera_trajectory(
    kind: str, space: CameraSpace, frames: int, fps: float, rng: np.random.Generator
) -> NDArray[np.float64]:
    """Camera poses T_world_camera (frames, 4, 4) float64 of a trajectory ``kind`` in ``space``.

    Deterministic for a given generator state; positions stay inside ``[space.low, space.high]``.
    """
    _check_kind(kind)
    if frames < 1 or not math.isfinite(fps) or fps <= 0:
        raise TrajectoryError(f"need frames >= 1 and fps > 0, got frames={frames}, fps={fps}")
    times = np.arange(frames) / fps
    low, high = np.asarray(space.low), np.asarray(space.high)
    focus = None if space.focus is None else np.asarray(space.focus, dtype=float)
    path, loop_period = _planar_path(kind, space, frames, fps, rng)
    signals = SmoothSignals(rng, times, loop_period)

    if kind in ("rotation", "standstill"):
        # Stand where the path would start: the space centre, or the orbit when there is a focus.
        start_xy = path(np.zeros(1))[0] if focus is not None else (low + high)[:2] / 2
        xy = np.repeat(start_xy[None], frames, axis=0)
        z = np.full(frames, space.eye_height)
        heading = np.full(frames, rng.uniform(-np.pi, np.pi))
    else:
        xy = path(times)
        heading = _heading(path, times)
        if kind == "driving":
            z = space.drive_height + 0.003 * signals.smooth((0.2, 0.5))
        elif kind == "drone":
            mid, amplitude = (low[2] + high[2]) / 2, 0.45 * (high[2] - low[2])
            z = mid + amplitude * signals.smooth((5.0, 12.0), terms=2)
        else:  # handheld, loop: eye height with a slow drift and the step bob
            z = space.eye_height + 0.08 * signals.smooth((5.0, 10.0)) + 0.015 * signals.smooth((0.5, 0.6), 1)
    positions = np.concatenate([xy, z[:, None]], axis=1)

    if focus is not None:
        yaw, pitch = _look_angles(positions, focus)
    elif loop_period is not None and loop_period < _MIN_TURNING_LAP_S:
        yaw, pitch = np.full(frames, heading[0]), np.full(frames, -0.05)  # small loop: carried, not walked
    else:
        yaw, pitch = heading, np.full(frames, -0.05)
    roll = np.zeros(frames)
    if kind in ("handheld", "loop"):
        look = 0.1 if focus is not None else 1.0
        yaw = yaw + look * 0.3 * signals.smooth((6.0, 14.0))
        pitch = pitch + 0.08 * signals.smooth((5.0, 12.0))
        roll = 0.03 * signals.smooth((4.0, 9.0))
        yaw, pitch, roll = yaw + signals.tremor(0.01), pitch + signals.tremor(0.01), roll + signals.tremor(0.005)
        positions += np.stack([signals.tremor(0.004) for _ in range(3)], axis=-1)
    elif kind == "driving":
        pitch = pitch + 0.002 * signals.smooth((0.2, 0.5))
        roll = 0.002 * signals.smooth((0.2, 0.5))
    elif kind == "drone":
        tilt = 0.1 if focus is not None else 1.0
        yaw = yaw + tilt * 0.35 * signals.smooth((5.0, 12.0))
        pitch = pitch + (0.0 if focus is not None else -0.15) + 0.12 * signals.smooth((4.0, 10.0))
        roll = 0.12 * signals.smooth((4.0, 10.0))
    elif kind == "rotation":
        yaw = yaw + 0.9 * signals.smooth((3.0, 7.0), terms=2)
        pitch = pitch + 0.25 * signals.smooth((3.0, 7.0), terms=2)
        roll = 0.1 * signals.smooth((3.0, 7.0), terms=2)
    positions = np.clip(positions, low, high)

    poses = np.zeros((frames, 4, 4))
    poses[:, :3, :3] = camera_rotations(yaw, pitch, roll)
    poses[:, :3, 3] = positions
    poses[:, 3, 3] = 1.0
    return poses
