"""PNG figures for ``geovis eval --plot``: trajectories, depth and error maps, flow with its colour wheel.

matplotlib is imported lazily (only when a plot is asked for) and used through its object API with
the Agg canvas, so no global backend or pyplot state is touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geovis_ros.visualization import depth_to_color, flow_to_color

if TYPE_CHECKING:
    from matplotlib.figure import Figure

_AXIS_NAMES = ("x", "y", "z")


def _new_figure(width_in: float, height_in: float) -> Figure:
    try:
        from matplotlib.figure import Figure
    except ImportError as err:
        raise ImportError("plots need the 'matplotlib' package: pip install matplotlib") from err
    return Figure(figsize=(width_in, height_in), layout="constrained")


def _save(figure: Figure, path: str | Path) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=100, format="png")
    return path


def view_axes(xyz: ArrayLike) -> tuple[tuple[int, int], tuple[int, int]]:
    """Axis indices of the top and side views of positions (N, 3).

    The frame convention of a trajectory file is unknown (z up for TUM, y down for camera-centred
    worlds), so the views follow the data: the top view spans the two axes of largest extent, the side
    view the largest against the smallest.
    """
    extent = np.ptp(np.asarray(xyz, dtype=np.float64), axis=0)
    order = np.argsort(-extent, kind="stable")
    top = (int(min(order[0], order[1])), int(max(order[0], order[1])))
    return top, (int(order[0]), int(order[2]))


def plot_trajectory(
    path: str | Path,
    gt_xyz: ArrayLike,
    est_xyz: ArrayLike,
    stamps_s: ArrayLike,
    title: str = "",
    time_label: str = "time since start [s]",
) -> Path:
    """Top view, side view and position error over time of an aligned estimate against ground truth.

    Args:
        path: output PNG.
        gt_xyz: (N, 3) ground-truth positions, metres.
        est_xyz: (N, 3) associated estimated positions, metres, already aligned.
        stamps_s: (N,) seconds (or frame indices) for the error-over-time panel.
        title: figure title (e.g. the scores).
        time_label: x-axis label of the error panel (e.g. ``"frame"`` for KITTI files).

    """
    gt = np.asarray(gt_xyz, dtype=np.float64)
    est = np.asarray(est_xyz, dtype=np.float64)
    stamps = np.asarray(stamps_s, dtype=np.float64)
    figure = _new_figure(15, 5)
    axes = figure.subplots(1, 3)
    for ax, (a, b), name in zip(axes[:2], view_axes(gt), ("top view", "side view"), strict=True):
        ax.plot(gt[:, a], gt[:, b], "-", color="0.3", label="ground truth")
        ax.plot(est[:, a], est[:, b], "-", color="tab:red", label="estimate")
        ax.plot(gt[:1, a], gt[:1, b], "o", color="tab:green", label="start")
        ax.set(xlabel=f"{_AXIS_NAMES[a]} [m]", ylabel=f"{_AXIS_NAMES[b]} [m]", title=name, aspect="equal")
        ax.set_adjustable("datalim")
        ax.grid(True, alpha=0.3)
        ax.legend(loc="best", fontsize=8)
    errors = np.linalg.norm(est - gt, axis=1)
    axes[2].plot(stamps - stamps[0], errors, color="tab:red")
    axes[2].set(xlabel=time_label, ylabel="position error [m]", title="absolute error")
    axes[2].grid(True, alpha=0.3)
    figure.suptitle(title)
    return _save(figure, path)


def _image_panel(figure: Figure, ax: Any, image: NDArray[Any], title: str, **imshow: Any) -> None:
    handle = ax.imshow(image, interpolation="nearest", **imshow)
    ax.set_title(title)
    ax.set_axis_off()
    if image.ndim == 2:
        figure.colorbar(handle, ax=ax, shrink=0.8)


def plot_depth(
    path: str | Path,
    gt: ArrayLike,
    pred: ArrayLike,
    min_depth: float,
    max_depth: float,
    title: str = "",
) -> Path:
    """Ground truth, prediction (same colours, near = bright) and the absolute relative error map.

    The colours span the 1st to 99th percentile of the valid ground truth, so that indoor scenes are
    not washed out by a wide evaluation range.

    Args:
        path: output PNG.
        gt: (H, W) ground-truth depth, metres, NaN invalid.
        pred: (H, W) predicted depth, metres, as scored (e.g. after median scaling).
        min_depth: nearest scored and coloured depth, metres.
        max_depth: farthest scored and coloured depth, metres.
        title: figure title.

    """
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        valid = np.isfinite(gt) & (gt > min_depth) & (gt < max_depth)
        error = np.where(valid, np.abs(np.clip(pred, min_depth, max_depth) - gt) / gt, np.nan)
    finite_error = error[np.isfinite(error)]
    near, far = np.percentile(gt[valid], [1, 99]) if valid.any() else (min_depth, max_depth)
    far = max(far, near + 1e-3)
    figure = _new_figure(15, 4)
    axes = figure.subplots(1, 3)
    colour_range = f"\n(bright {near:.3g} m, dark {far:.3g} m, black invalid)"
    _image_panel(figure, axes[0], depth_to_color(gt, near, far), "ground truth" + colour_range)
    _image_panel(figure, axes[1], depth_to_color(pred, near, far), "prediction")
    vmax = float(np.percentile(finite_error, 99)) if finite_error.size else 1.0
    _image_panel(figure, axes[2], error, "|pred - gt| / gt", cmap="magma", vmin=0.0, vmax=max(vmax, 1e-6))
    figure.suptitle(title)
    return _save(figure, path)


def color_wheel_image(size: int = 101) -> NDArray[np.uint8]:
    """(size, size, 3) uint8 legend of :func:`flow_to_color`: flow (u, v) = offset from the centre.

    The rim is ``max_flow``; outside the disc is white.
    """
    coords = np.linspace(-1.0, 1.0, size)
    u, v = np.meshgrid(coords, coords)
    flow = np.stack([u, v], axis=-1)
    image = flow_to_color(flow, max_flow=1.0)
    image[np.hypot(u, v) > 1.0] = 255
    return image


def plot_flow(
    path: str | Path,
    gt: ArrayLike,
    pred: ArrayLike,
    valid: ArrayLike | None = None,
    title: str = "",
) -> Path:
    """Ground-truth and predicted flow (Middlebury colours, same scale), the EPE map and the colour wheel.

    Args:
        path: output PNG.
        gt: (H, W, 2) ground-truth flow, pixels; NaN where unknown.
        pred: (H, W, 2) predicted flow, pixels; NaN where missing (drawn black, scored as zero).
        valid: optional (H, W) bool mask of scored pixels (the EPE map is blank elsewhere).
        title: figure title.

    """
    gt = np.asarray(gt, dtype=np.float64)
    pred = np.asarray(pred, dtype=np.float64)
    mask = np.all(np.isfinite(gt), axis=-1)
    if valid is not None:
        mask &= np.asarray(valid, dtype=bool)
    gt_shown = np.where(mask[..., None], gt, np.nan)
    magnitude = np.hypot(gt_shown[..., 0], gt_shown[..., 1])
    max_flow = float(np.nanmax(magnitude)) if mask.any() else None
    epe = np.where(mask, np.linalg.norm(np.nan_to_num(pred) - np.nan_to_num(gt), axis=-1), np.nan)
    figure = _new_figure(17, 4)
    axes = figure.subplots(1, 4, width_ratios=[1, 1, 1, 0.45])
    _image_panel(figure, axes[0], flow_to_color(gt_shown, max_flow), "ground truth")
    _image_panel(figure, axes[1], flow_to_color(pred, max_flow), "prediction")
    _image_panel(figure, axes[2], epe, "end-point error [px]", cmap="magma", vmin=0.0)
    _image_panel(figure, axes[3], color_wheel_image(), f"colour wheel\n(rim = {max_flow or 0:.1f} px)")
    figure.suptitle(title)
    return _save(figure, path)
