"""The one wiring of the SLAM front end to the back end: odometry keyframes into the pose graph and map.

:class:`KeyframeFeed` listens to an :class:`~geovis_ros.slam.frontend.odometry.OdometryStage`'s
keyframe events and, when the caller flushes it (once per frame, after the odometry stage ran),
hands every keyframe finalized since (its fused depth is final) to a
:class:`~geovis_ros.slam.backend.slam_backend.SlamBackend`: loop detection, pose graph, map. The
caller decides when the back end's work happens (and times it); at the end of a stream,
``flush(include_active=True)`` adds the keyframe still being refined. :class:`Pipeline
<geovis_ros.pipeline.pipeline.Pipeline>` and ``geovis odometry`` / ``geovis vo-bench`` run it.
"""

from __future__ import annotations

from collections.abc import Callable

from geovis_ros.slam.backend.slam_backend import SlamBackend
from geovis_ros.slam.frontend.keyframes import Keyframe
from geovis_ros.slam.frontend.odometry import KeyframeEvent, KeyframeEventKind, OdometryStage


class KeyframeFeed:
    """Hands an odometry stage's finished keyframes to a SLAM back end, each keyframe once.

    Attributes:
        odometry: the stage whose keyframe events are followed (a listener is added to it).
        backend: the back end that receives the keyframes.
        loops: verified loop closures the back end accepted since construction or :meth:`reset`.

    """

    def __init__(
        self, odometry: OdometryStage, backend: SlamBackend, on_keyframe: Callable[[Keyframe], None] | None = None,
    ) -> None:
        """Follow ``odometry``'s keyframes; ``on_keyframe(keyframe)`` runs after each one the back end took."""
        self.odometry = odometry
        self.backend = backend
        self.loops = 0
        self._on_keyframe = on_keyframe
        self._finished: list[Keyframe] = []
        self._handed_over: set[int] = set()
        odometry.add_keyframe_listener(self._on_event)

    def flush(self, include_active: bool = False) -> int:
        """Hand the keyframes finalized since the last flush (and the active one) to the back end.

        Args:
            include_active: also hand over the keyframe still being refined (end of a stream: its
                depth is as good as it gets).

        Returns:
            The number of keyframes added; a keyframe id already handed over is skipped, so a
            repeated end-of-stream flush adds nothing.

        """
        keyframes, self._finished = self._finished, []
        active = self.odometry.keyframe if include_active else None
        if active is not None:
            keyframes.append(active)
        added = 0
        for keyframe in keyframes:
            if keyframe.id in self._handed_over:
                continue
            self._handed_over.add(keyframe.id)
            update = self.backend.add_keyframe(keyframe.id, keyframe.pose, keyframe.image, keyframe.depth,
                                               keyframe.depth_std, keyframe.intrinsics, keyframe.relative_covariance)
            self.loops += len(update.loops)
            added += 1
            if self._on_keyframe is not None:
                self._on_keyframe(keyframe)
        return added

    def reset(self) -> None:
        """Forget pending and handed-over keyframes and the loop count (with the stage and back end reset)."""
        self._finished.clear()
        self._handed_over.clear()
        self.loops = 0

    def _on_event(self, event: KeyframeEvent) -> None:
        """Keyframe listener: a finalized keyframe's fused depth is final, so it waits for the next flush."""
        if event.kind is KeyframeEventKind.FINALIZED:
            self._finished.append(event.keyframe)
