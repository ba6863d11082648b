"""SE(3) pose-graph optimisation: keyframe poses as nodes, relative-pose measurements as edges.

Conventions (those of :mod:`geovis_ros.geometry.se3`):

- A node holds ``T_world_node`` (4x4 float64); an edge ``i -> j`` holds the measured relative pose
  ``Z = T_i_j`` (the pose of node j in node i's frame) and a 6x6 information matrix over the
  twist ``(v, w)`` (metres, radians).
- Residual of an edge: ``e = log(Z^-1 T_i^-1 T_j)`` (6,), zero when the graph agrees with the
  measurement; its squared Mahalanobis norm is ``chi2 = e^T Omega e``.
- Updates are right-multiplicative, in the body frame of each node: ``T <- T exp(delta)``; the
  information of an edge is therefore expressed in the frame of its target node j.
- Loop edges can carry a robust kernel (Huber or Cauchy, applied to chi2 by iteratively
  re-weighted least squares) so a wrong loop closure cannot pull the whole graph.

The solver is Levenberg-Marquardt on the stacked tangent-space increments, with the normal
equations assembled as a block-sparse matrix and solved by ``scipy.sparse.linalg.spsolve``.
All per-edge work (residuals, Jacobians, block assembly) is vectorised over edges.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Literal

import numpy as np
from numpy.typing import ArrayLike, NDArray

from geovis_ros.errors import GeovisError
from geovis_ros.geometry.se3 import invert, orthonormalized, se3_adjoint, se3_exp, se3_log, se3_right_jacobian_inverse

if TYPE_CHECKING:
    from scipy.sparse import csc_matrix

KernelKind = Literal["huber", "cauchy"]


class PoseGraphError(GeovisError, ValueError):
    """Invalid graph input: unknown or duplicate node, malformed pose or information matrix."""


@dataclass(frozen=True)
class RobustKernel:
    """A robust loss rho(chi2) on an edge's squared Mahalanobis error.

    Attributes:
        kind: ``"huber"`` (quadratic inside ``delta``, linear outside) or ``"cauchy"``
            (logarithmic; bounded influence, for outlier-prone loop closures).
        delta: threshold in units of standard deviations (sqrt(chi2)); > 0.

    """

    kind: KernelKind = "cauchy"
    delta: float = 3.0

    def __post_init__(self) -> None:
        if self.kind not in ("huber", "cauchy"):
            raise PoseGraphError(f"robust kernel kind must be 'huber' or 'cauchy', got {self.kind!r}")
        if not np.isfinite(self.delta) or self.delta <= 0:
            raise PoseGraphError(f"robust kernel delta must be a positive number, got {self.delta}")

    def cost_and_weight(self, chi2: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """rho(chi2) (equal to chi2 for small errors) and the IRLS weight rho'(chi2) in (0, 1]."""
        chi2 = np.asarray(chi2, dtype=np.float64)
        return _kernel_arrays(self.kind, chi2, np.full_like(chi2, self.delta))


@dataclass(frozen=True)
class PoseGraphEdge:
    """A relative-pose measurement between two nodes.

    Attributes:
        source: id of node i.
        target: id of node j.
        measurement: (4, 4) float64 measured ``T_i_j``.
        information: (6, 6) float64 symmetric positive-definite inverse covariance of the
            residual twist (v, w), in node j's frame; 1/m^2 and 1/rad^2.
        kernel: robust kernel, or None for plain least squares (odometry edges).

    """

    source: int
    target: int
    measurement: NDArray[np.float64]
    information: NDArray[np.float64]
    kernel: RobustKernel | None = None


@dataclass(frozen=True)
class PoseGraphConfig:
    """Levenberg-Marquardt settings.

    Attributes:
        max_iterations: maximum number of accepted + rejected steps (per annealing stage).
        initial_damping: initial Marquardt lambda (relative to the diagonal of H).
        relative_tolerance: stop when a step lowers the cost by less than this fraction.
        step_tolerance: stop when the largest increment component is below this (m or rad).
        kernel_annealing: graduated non-convexity for robust edges: the kernels start wide enough
            that every robust edge is in its quadratic region, then shrink by this factor per
            stage down to their own delta. A drifted trajectory then first bends to the loop
            closures that agree with each other instead of rejecting all of them as outliers
            against an over-confident odometry chain. Values <= 1 switch annealing off.

    """

    max_iterations: int = 30
    initial_damping: float = 1e-4
    relative_tolerance: float = 1e-10
    step_tolerance: float = 1e-10
    kernel_annealing: float = 4.0

    def __post_init__(self) -> None:
        if self.max_iterations < 1:
            raise PoseGraphError(f"max_iterations must be >= 1, got {self.max_iterations}")
        if self.initial_damping <= 0:
            raise PoseGraphError(f"initial_damping must be > 0, got {self.initial_damping}")
        if not np.isfinite(self.kernel_annealing):
            raise PoseGraphError(f"kernel_annealing must be finite, got {self.kernel_annealing}")


@dataclass(frozen=True)
class OptimizationReport:
    """Outcome of :meth:`PoseGraph.optimize`: robust costs before/after, iterations, convergence."""

    initial_cost: float
    final_cost: float
    iterations: int
    converged: bool


def nearest_rigid(pose: ArrayLike, tolerance: float = 1e-3) -> NDArray[np.float64]:
    """The rigid transform (4, 4) closest to ``pose`` (rotation re-orthonormalised by SVD).

    Long chains of pose products drift away from SO(3) by rounding; this repairs that. Raises
    PoseGraphError when the rotation part is further than ``tolerance`` (max |R R^T - I|) from a
    rotation, or the pose is not a finite 4x4 with last row 0 0 0 1.
    """
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (4, 4) or not np.all(np.isfinite(pose)) or not np.allclose(pose[3], [0.0, 0.0, 0.0, 1.0]):
        raise PoseGraphError(f"expected a finite 4x4 rigid transform, got shape {pose.shape}")
    rotation = pose[:3, :3]
    deviation = float(np.abs(rotation @ rotation.T - np.eye(3)).max())
    if deviation > tolerance:
        raise PoseGraphError(f"rotation is not orthonormal (max |R R^T - I| = {deviation:.2g} > {tolerance:g})")
    return orthonormalized(pose)


def _check_pose(pose: ArrayLike, what: str) -> NDArray[np.float64]:
    pose = np.asarray(pose, dtype=np.float64)
    if pose.shape != (4, 4) or not np.all(np.isfinite(pose)):
        raise PoseGraphError(f"{what} must be a finite 4x4 pose, got shape {pose.shape}")
    if not np.allclose(pose[:3, :3] @ pose[:3, :3].T, np.eye(3), atol=1e-6) or not np.allclose(
        pose[3], [0.0, 0.0, 0.0, 1.0]
    ):
        raise PoseGraphError(f"{what} is not a rigid transform (rotation not orthonormal or last row not 0 0 0 1)")
    return pose


def _check_information(information: ArrayLike) -> NDArray[np.float64]:
    info = np.asarray(information, dtype=np.float64)
    if info.shape != (6, 6) or not np.all(np.isfinite(info)):
        raise PoseGraphError(f"information must be a finite 6x6 matrix, got shape {info.shape}")
    if not np.allclose(info, info.T, rtol=1e-6, atol=1e-9):
        raise PoseGraphError("information matrix must be symmetric")
    if np.linalg.eigvalsh(info).min() <= 0:
        raise PoseGraphError("information matrix must be positive definite")
    return info


@dataclass
class _EdgeArrays:
    """Edges stacked for vectorised evaluation."""

    source: NDArray[np.intp]  # (E,) node indices
    target: NDArray[np.intp]
    measurement_inv: NDArray[np.float64]  # (E, 4, 4) Z^-1
    information: NDArray[np.float64]  # (E, 6, 6)
    kernel_kind: NDArray[np.int8]  # (E,) 0 none, 1 huber, 2 cauchy
    kernel_delta: NDArray[np.float64]  # (E,)


_KERNEL_CODE = {None: 0, "huber": 1, "cauchy": 2}


@dataclass
class PoseGraph:
    """A growing SE(3) pose graph; node ids are arbitrary ints (e.g. keyframe ids).

    Use :meth:`add_node`, :meth:`add_edge`, then :meth:`optimize`; read the result with
    :meth:`pose` / :meth:`poses`. The first node added is fixed (gauge) unless other nodes are
    fixed explicitly.
    """

    config: PoseGraphConfig = field(default_factory=PoseGraphConfig)
    _ids: list[int] = field(default_factory=list, init=False)
    _index: dict[int, int] = field(default_factory=dict, init=False)
    _poses: list[NDArray[np.float64]] = field(default_factory=list, init=False)
    _fixed: list[bool] = field(default_factory=list, init=False)
    _edges: list[PoseGraphEdge] = field(default_factory=list, init=False)

    def __len__(self) -> int:
        """Number of nodes."""
        return len(self._ids)

    @property
    def edges(self) -> tuple[PoseGraphEdge, ...]:
        """All edges, in insertion order."""
        return tuple(self._edges)

    def __contains__(self, node_id: object) -> bool:
        """True when ``node_id`` is a node of the graph."""
        return node_id in self._index

    def add_node(self, node_id: int, pose: ArrayLike, fixed: bool = False) -> None:
        """Add node ``node_id`` with initial pose ``T_world_node`` (4, 4); raises on a duplicate id."""
        if node_id in self._index:
            raise PoseGraphError(f"node {node_id} already exists")
        self._index[node_id] = len(self._ids)
        self._ids.append(node_id)
        self._poses.append(_check_pose(pose, f"pose of node {node_id}").copy())
        self._fixed.append(bool(fixed))

    def remove_node(self, node_id: int) -> None:
        """Drop node ``node_id`` and every edge touching it; when no fixed node is left, the oldest is fixed (gauge)."""
        index = self._node_index(node_id)
        del self._ids[index], self._poses[index], self._fixed[index]
        self._index = {key: position for position, key in enumerate(self._ids)}
        self._edges = [edge for edge in self._edges if node_id not in (edge.source, edge.target)]
        if self._fixed and not any(self._fixed):
            self._fixed[0] = True

    def set_fixed(self, node_id: int, fixed: bool = True) -> None:
        """Hold node ``node_id`` constant during optimisation (or release it)."""
        self._fixed[self._node_index(node_id)] = bool(fixed)

    def add_edge(self, edge: PoseGraphEdge) -> None:
        """Add a relative-pose measurement; both nodes must exist and differ."""
        if edge.source == edge.target:
            raise PoseGraphError(f"edge from node {edge.source} to itself")
        self._node_index(edge.source)
        self._node_index(edge.target)
        checked = PoseGraphEdge(
            edge.source, edge.target, _check_pose(edge.measurement, "edge measurement").copy(),
            _check_information(edge.information).copy(), edge.kernel,
        )
        self._edges.append(checked)

    def pose(self, node_id: int) -> NDArray[np.float64]:
        """Current ``T_world_node`` (4, 4) of node ``node_id`` (a copy)."""
        return self._poses[self._node_index(node_id)].copy()

    def poses(self) -> dict[int, NDArray[np.float64]]:
        """All current poses, id -> ``T_world_node`` (4, 4) copies."""
        return {node_id: pose.copy() for node_id, pose in zip(self._ids, self._poses, strict=True)}

    def _node_index(self, node_id: int) -> int:
        try:
            return self._index[node_id]
        except KeyError:
            raise PoseGraphError(f"unknown node {node_id}") from None

    def _stack_edges(self) -> _EdgeArrays:
        edges = self._edges
        return _EdgeArrays(
            source=np.array([self._index[e.source] for e in edges], dtype=np.intp),
            target=np.array([self._index[e.target] for e in edges], dtype=np.intp),
            measurement_inv=invert(np.stack([e.measurement for e in edges])),
            information=np.stack([e.information for e in edges]),
            kernel_kind=np.array([_KERNEL_CODE[e.kernel.kind if e.kernel else None] for e in edges], dtype=np.int8),
            kernel_delta=np.array([e.kernel.delta if e.kernel else 1.0 for e in edges]),
        )

    @staticmethod
    def _residuals(edges: _EdgeArrays, poses: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Residual twists (E, 6) and the error transforms ``Z^-1 T_i^-1 T_j`` (E, 4, 4)."""
        error_pose = edges.measurement_inv @ invert(poses[edges.source]) @ poses[edges.target]
        return se3_log(error_pose), error_pose

    @staticmethod
    def _robust(edges: _EdgeArrays, chi2: NDArray[np.float64]) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        """Per-edge robust cost rho(chi2) and IRLS weight rho'(chi2), both (E,)."""
        cost, weight = chi2.copy(), np.ones_like(chi2)
        kinds: tuple[tuple[int, KernelKind], ...] = ((1, "huber"), (2, "cauchy"))
        for code, kind in kinds:
            mask = edges.kernel_kind == code
            if np.any(mask):
                # Deltas differ per edge: evaluate the kernel formula with per-edge thresholds.
                kernel_cost, kernel_weight = _kernel_arrays(kind, chi2[mask], edges.kernel_delta[mask])
                cost[mask], weight[mask] = kernel_cost, kernel_weight
        return cost, weight

    def _cost(self, edges: _EdgeArrays, poses: NDArray[np.float64]) -> float:
        residual, _ = self._residuals(edges, poses)
        chi2 = np.einsum("ni,nij,nj->n", residual, edges.information, residual)
        return float(np.sum(self._robust(edges, chi2)[0]))

    def edge_chi2(self) -> NDArray[np.float64]:
        """Squared Mahalanobis error (E,) of every edge at the current poses (order of :attr:`edges`)."""
        if not self._edges:
            return np.zeros(0)
        edges = self._stack_edges()
        residual, _ = self._residuals(edges, np.stack(self._poses))
        return np.einsum("ni,nij,nj->n", residual, edges.information, residual)

    def _normal_equations(
        self, edges: _EdgeArrays, poses: NDArray[np.float64], free_slot: NDArray[np.intp]
    ) -> tuple[csc_matrix, NDArray[np.float64]]:
        """Sparse H (6F, 6F) and gradient b (6F,) of the robustified Gauss-Newton system."""
        from scipy import sparse

        residual, error_pose = self._residuals(edges, poses)
        chi2 = np.einsum("ni,nij,nj->n", residual, edges.information, residual)
        _, weight = self._robust(edges, chi2)
        # d e / d delta_j = Jr^-1(e); d e / d delta_i = -Jr^-1(e) Ad(T_j^-1 T_i), T_j^-1 T_i = E^-1 Z^-1.
        jr_inv = se3_right_jacobian_inverse(residual)
        jac_target = jr_inv
        jac_source = -jr_inv @ se3_adjoint(invert(error_pose) @ edges.measurement_inv)
        weighted_info = weight[:, None, None] * edges.information
        blocks = {
            ("s", "s"): np.swapaxes(jac_source, 1, 2) @ weighted_info @ jac_source,
            ("s", "t"): np.swapaxes(jac_source, 1, 2) @ weighted_info @ jac_target,
            ("t", "s"): np.swapaxes(jac_target, 1, 2) @ weighted_info @ jac_source,
            ("t", "t"): np.swapaxes(jac_target, 1, 2) @ weighted_info @ jac_target,
        }
        node_of = {"s": edges.source, "t": edges.target}
        rows, cols, values = [], [], []
        offsets = np.arange(6)
        for (a, b), block in blocks.items():
            slot_a, slot_b = free_slot[node_of[a]], free_slot[node_of[b]]
            keep = (slot_a >= 0) & (slot_b >= 0)
            r = (6 * slot_a[keep])[:, None, None] + offsets[None, :, None]
            c = (6 * slot_b[keep])[:, None, None] + offsets[None, None, :]
            rows.append(np.broadcast_to(r, block[keep].shape).ravel())
            cols.append(np.broadcast_to(c, block[keep].shape).ravel())
            values.append(block[keep].ravel())
        size = 6 * int(free_slot.max() + 1)
        hessian = sparse.coo_matrix(
            (np.concatenate(values), (np.concatenate(rows), np.concatenate(cols))), shape=(size, size)
        ).tocsc()
        gradient = np.zeros(size)
        weighted_error = np.einsum("nij,nj->ni", weighted_info, residual)
        for jac, node in ((jac_source, edges.source), (jac_target, edges.target)):
            slot = free_slot[node]
            keep = slot >= 0
            contribution = np.einsum("nji,nj->ni", jac[keep], weighted_error[keep])
            np.add.at(gradient, (6 * slot[keep])[:, None] + offsets[None, :], contribution)
        return hessian, gradient

    def optimize(self) -> OptimizationReport:
        """Levenberg-Marquardt over all non-fixed nodes (with kernel annealing); updates the poses in place.

        The first node is held fixed when no node is fixed. Costs in the report use the edges' own
        kernels. Raises ImportError naming scipy when it is missing.
        """
        fixed = np.array(self._fixed, dtype=bool)
        if fixed.size and not fixed.any():
            fixed[0] = True
        if not self._edges or fixed.all():
            cost = self._cost(self._stack_edges(), np.stack(self._poses)) if self._edges else 0.0
            return OptimizationReport(cost, cost, 0, True)
        free_slot = np.full(len(self._ids), -1, dtype=np.intp)
        free_slot[~fixed] = np.arange(int((~fixed).sum()))
        edges = self._stack_edges()
        poses = np.stack(self._poses)
        initial_cost = self._cost(edges, poses)
        iterations = 0
        converged = False
        for scale in self._annealing_scales(edges, poses):
            stage_edges = replace(edges, kernel_delta=edges.kernel_delta * scale)
            poses, stage_iterations, converged = self._levenberg_marquardt(stage_edges, poses, free_slot)
            iterations += stage_iterations
        self._poses = list(poses)
        return OptimizationReport(initial_cost, self._cost(edges, poses), iterations, converged)

    def _annealing_scales(self, edges: _EdgeArrays, poses: NDArray[np.float64]) -> list[float]:
        """Kernel width multipliers, widest first, ending at 1."""
        robust = edges.kernel_kind > 0
        factor = self.config.kernel_annealing
        if factor <= 1.0 or not np.any(robust):
            return [1.0]
        residual, _ = self._residuals(edges, poses)
        chi2 = np.einsum("ni,nij,nj->n", residual[robust], edges.information[robust], residual[robust])
        widest = float(np.max(np.sqrt(chi2) / edges.kernel_delta[robust]))
        scales = [1.0]
        while scales[-1] * factor < widest:
            scales.append(scales[-1] * factor)
        if widest > 1.0:
            scales.append(widest)
        return scales[::-1]

    def _levenberg_marquardt(
        self, edges: _EdgeArrays, poses: NDArray[np.float64], free_slot: NDArray[np.intp]
    ) -> tuple[NDArray[np.float64], int, bool]:
        """Minimise the robust cost from ``poses``; returns (poses, iterations, converged)."""
        try:
            from scipy import sparse
            from scipy.sparse import linalg as sparse_linalg
        except ImportError as err:  # pragma: no cover - scipy ships with the environment
            raise ImportError("pose-graph optimisation needs scipy (pip install scipy)") from err
        free = free_slot >= 0
        cost = self._cost(edges, poses)
        damping = self.config.initial_damping
        converged = False
        iteration = 0
        hessian, gradient = self._normal_equations(edges, poses, free_slot)
        while iteration < self.config.max_iterations and not converged:
            iteration += 1
            diagonal = hessian.diagonal()
            damped = hessian + sparse.diags(damping * (diagonal + 1e-9 * max(float(diagonal.max()), 1.0)))
            step = -sparse_linalg.spsolve(damped.tocsc(), gradient)
            finite = bool(np.all(np.isfinite(step)))
            small_step = finite and float(np.abs(step).max()) < self.config.step_tolerance
            candidate = poses.copy()
            candidate[free] = poses[free] @ se3_exp(np.nan_to_num(step).reshape(-1, 6))
            new_cost = self._cost(edges, candidate) if finite else np.inf
            if new_cost < cost:
                converged = (cost - new_cost) <= self.config.relative_tolerance * cost or small_step
                poses, cost = candidate, new_cost
                damping = max(damping / 3.0, 1e-12)
                hessian, gradient = self._normal_equations(edges, poses, free_slot)
            else:
                damping *= 10.0
                # No descent direction left at any damping: a (local) minimum.
                converged = damping > 1e12 or small_step
        return poses, iteration, converged


def _kernel_arrays(
    kind: KernelKind, chi2: NDArray[np.float64], delta: NDArray[np.float64]
) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
    """Robust cost and weight of ``chi2`` (N,) with per-element thresholds ``delta`` (N,)."""
    d2 = delta**2
    if kind == "huber":
        inside = chi2 <= d2
        root = np.sqrt(np.maximum(chi2, d2))
        return np.where(inside, chi2, 2.0 * delta * root - d2), np.where(inside, 1.0, delta / root)
    return d2 * np.log1p(chi2 / d2), 1.0 / (1.0 + chi2 / d2)
