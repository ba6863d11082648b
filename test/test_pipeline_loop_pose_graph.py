"""SE(3) pose-graph optimisation."""

from __future__ import annotations

import numpy as np
import pytest

from geovis_ros.geometry.se3 import invert, se3_exp
from geovis_ros.slam.backend.pose_graph import (
    PoseGraph,
    PoseGraphConfig,
    PoseGraphEdge,
    PoseGraphError,
    RobustKernel,
)

INFO = np.diag([400.0] * 3 + [4000.0] * 3)


def _circle(n: int, radius: float = 3.0) -> list[np.ndarray]:
    """Poses around a circle, looking outwards-ish, rotating about the camera y axis."""
    return [se3_exp([0, 0, 0, 0, 2 * np.pi * k / n, 0]) @ se3_exp([0, 0, -radius, 0, 0, 0]) for k in range(n)]


def test_gradient_matches_numerical_derivative_of_cost() -> None:
    rng = np.random.default_rng(2)
    graph = PoseGraph()
    for k in range(3):
        graph.add_node(k, se3_exp(rng.normal(size=6)), fixed=k == 0)
    for i, j in ((0, 1), (1, 2), (0, 2)):
        graph.add_edge(PoseGraphEdge(i, j, se3_exp(rng.normal(size=6)), INFO / 100.0))
    edges = graph._stack_edges()
    poses = np.stack(graph._poses)
    free_slot = np.array([-1, 0, 1])
    _, gradient = graph._normal_equations(edges, poses, free_slot)
    numeric = np.zeros(12)
    for slot, node in ((0, 1), (1, 2)):
        for axis in range(6):
            step = np.zeros(6)
            step[axis] = 1e-6
            plus, minus = poses.copy(), poses.copy()
            plus[node] = poses[node] @ se3_exp(step)
            minus[node] = poses[node] @ se3_exp(-step)
            numeric[6 * slot + axis] = (graph._cost(edges, plus) - graph._cost(edges, minus)) / 2e-6
    np.testing.assert_allclose(2.0 * gradient, numeric, rtol=1e-4, atol=1e-4)


def test_consistent_graph_converges_from_perturbed_start() -> None:
    truth = _circle(12)
    rng = np.random.default_rng(3)
    graph = PoseGraph()
    for k, pose in enumerate(truth):
        graph.add_node(k, pose @ se3_exp(0.1 * rng.normal(size=6)) if k else pose)
    for k in range(12):
        j = (k + 1) % 12
        graph.add_edge(PoseGraphEdge(k, j, invert(truth[k]) @ truth[j], INFO))
    report = graph.optimize()
    assert report.converged and report.final_cost < 1e-12 < report.initial_cost
    for k, pose in graph.poses().items():
        np.testing.assert_allclose(pose, truth[k], atol=1e-6)


def test_loop_edge_removes_accumulated_drift() -> None:
    n = 30
    truth = _circle(n)
    bias = se3_exp([0.02, 0.0, 0.01, 0.0, 0.01, 0.0])
    graph = PoseGraph()
    drifted = [truth[0]]
    for k in range(1, n):
        drifted.append(drifted[-1] @ invert(truth[k - 1]) @ truth[k] @ bias)
    for k, pose in enumerate(drifted):
        graph.add_node(k, pose)
    for k in range(1, n):
        graph.add_edge(PoseGraphEdge(k - 1, k, invert(drifted[k - 1]) @ drifted[k], INFO))
    graph.add_edge(PoseGraphEdge(0, n - 1, invert(truth[0]) @ truth[n - 1], INFO, RobustKernel("huber", 3.0)))
    before = np.linalg.norm(drifted[-1][:3, 3] - truth[-1][:3, 3])
    graph.optimize()
    after = np.linalg.norm(graph.pose(n - 1)[:3, 3] - truth[-1][:3, 3])
    assert after < before / 20.0
    np.testing.assert_allclose(graph.pose(0), truth[0])  # gauge: first node fixed


def test_cauchy_kernel_limits_a_wrong_loop_closure() -> None:
    n = 10
    truth = [se3_exp([0.5 * k, 0, 0, 0, 0, 0]) for k in range(n)]

    def build(kernel: RobustKernel | None) -> PoseGraph:
        graph = PoseGraph()
        for k, pose in enumerate(truth):
            graph.add_node(k, pose)
        for k in range(1, n):
            graph.add_edge(PoseGraphEdge(k - 1, k, invert(truth[k - 1]) @ truth[k], INFO))
        wrong = se3_exp([1.0, 1.0, 0.0, 0.0, 0.5, 0.0])  # says node 9 sits 1 m from node 0
        graph.add_edge(PoseGraphEdge(0, n - 1, wrong, INFO, kernel))
        graph.optimize()
        return graph

    plain = np.linalg.norm(build(None).pose(n - 1)[:3, 3] - truth[-1][:3, 3])
    robust = np.linalg.norm(build(RobustKernel("cauchy", 1.0)).pose(n - 1)[:3, 3] - truth[-1][:3, 3])
    assert plain > 1.0
    assert robust < 0.05


def test_kernel_cost_and_weight() -> None:
    chi2 = np.array([0.0, 1.0, 100.0])
    cost, weight = RobustKernel("huber", 2.0).cost_and_weight(chi2)
    np.testing.assert_allclose(cost, [0.0, 1.0, 2 * 2.0 * 10.0 - 4.0])
    np.testing.assert_allclose(weight, [1.0, 1.0, 0.2])
    cost, weight = RobustKernel("cauchy", 1.0).cost_and_weight(chi2)
    np.testing.assert_allclose(weight, [1.0, 0.5, 1.0 / 101.0])
    assert np.all(cost <= chi2)


def test_graph_without_edges_or_free_nodes_is_a_no_op() -> None:
    graph = PoseGraph()
    assert graph.optimize().iterations == 0
    graph.add_node(0, np.eye(4))
    graph.add_node(1, se3_exp([1, 0, 0, 0, 0, 0]), fixed=True)
    graph.add_edge(PoseGraphEdge(0, 1, np.eye(4), INFO))
    graph.set_fixed(0)
    report = graph.optimize()
    assert report.iterations == 0 and report.final_cost > 0
    np.testing.assert_allclose(graph.edge_chi2(), [400.0])


@pytest.mark.parametrize(
    ("action", "message"),
    [
        (lambda g: g.add_node(0, np.eye(4)), "already exists"),
        (lambda g: g.add_node(5, np.eye(3)), "4x4"),
        (lambda g: g.add_node(5, np.diag([2.0, 1.0, 1.0, 1.0])), "rigid"),
        (lambda g: g.add_edge(PoseGraphEdge(0, 7, np.eye(4), INFO)), "unknown node 7"),
        (lambda g: g.add_edge(PoseGraphEdge(0, 0, np.eye(4), INFO)), "itself"),
        (lambda g: g.add_edge(PoseGraphEdge(0, 1, np.eye(4), -INFO)), "positive definite"),
        (lambda g: g.add_edge(PoseGraphEdge(0, 1, np.eye(4), np.triu(INFO + 1))), "symmetric"),
        (lambda g: g.pose(3), "unknown node 3"),
        (lambda g: RobustKernel("tukey", 1.0), "huber"),  # type: ignore[arg-type]
        (lambda g: RobustKernel("huber", 0.0), "delta"),
        (lambda g: PoseGraphConfig(max_iterations=0), "max_iterations"),
    ],
)
def test_bad_input_raises_clear_errors(action, message: str) -> None:
    graph = PoseGraph()
    graph.add_node(0, np.eye(4))
    graph.add_node(1, np.eye(4))
    with pytest.raises(PoseGraphError, match=message):
        action(graph)


def test_removing_the_fixed_node_fixes_the_next_and_drops_its_edges() -> None:
    graph = PoseGraph()
    poses = _circle(6)
    for node, pose in enumerate(poses):
        graph.add_node(node, pose)
    for node in range(5):
        graph.add_edge(PoseGraphEdge(node, node + 1, invert(poses[node]) @ poses[node + 1], INFO))
    graph.add_edge(PoseGraphEdge(0, 5, invert(poses[0]) @ poses[5], INFO))  # a loop to the oldest
    graph.remove_node(0)
    assert 0 not in graph and len(graph) == 5
    assert all(0 not in (edge.source, edge.target) for edge in graph.edges) and len(graph.edges) == 4
    graph.optimize()
    assert np.allclose(graph.pose(1), poses[1])  # the new gauge node stayed put
    with pytest.raises(PoseGraphError, match="unknown node 0"):
        graph.remove_node(0)
