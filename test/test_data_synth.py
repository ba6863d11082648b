"""Synthetic world renderer: configuration, determinism, scene validity and exact ground truth."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import cv2
import numpy as np
import pytest

from geovis_ros.geometry.camera import Intrinsics, backproject, rigid_flow
from geovis_ros.geometry.se3 import invert, so3_exp
from geovis_ros.synthetic.scenes import (
    SCENES,
    SYNTH_START_NS,
    SynthConfig,
    SynthConfigError,
    bench_render,
    build_scene,
    render_sequence,
)
from geovis_ros.synthetic.textures import TextureBank
from geovis_ros.synthetic.world import (
    Lighting,
    Material,
    RenderError,
    Shape,
    ShapeKind,
    World,
    render_view,
    scene_flow,
    shape_pose,
)

CLOSED_SCENES = ("room", "corridor", "tabletop")


def tiny(**overrides) -> SynthConfig:
    return SynthConfig(**{"frames": 3, "width": 64, "height": 48, **overrides})


def warp_back(next_rgb: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """Frame t+1 sampled (bilinear) at x + flow(x): frame t as predicted by the flow, float32."""
    h, w = flow.shape[:2]
    grid_x, grid_y = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
    return cv2.remap(next_rgb.astype(np.float32), grid_x + flow[..., 0], grid_y + flow[..., 1], cv2.INTER_LINEAR)


def interior(mask: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood is inside ``mask`` (bilinear warps of them stay on the surface)."""
    return cv2.erode(mask.astype(np.uint8), np.ones((3, 3), np.uint8), borderValue=0).astype(bool)


def same_surface_3x3(surface: np.ndarray) -> np.ndarray:
    """Pixels whose 3x3 neighbourhood sees one face of one shape (no texture seam or silhouette)."""
    h, w = surface.shape
    padded = np.pad(surface, 1, mode="edge")
    uniform = np.ones((h, w), dtype=bool)
    for dy in range(3):
        for dx in range(3):
            uniform &= padded[dy:dy + h, dx:dx + w] == surface
    return uniform


# ----------------------------------------------------------------------------------- config


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("scene", "moon", "unknown scene"),
        ("trajectory", "teleport", "unknown trajectory"),
        ("frames", 0, "frames"),
        ("width", 4, "image size"),
        ("fps", 0.0, "fps"),
        ("fps", float("nan"), "fps"),
        ("hfov_deg", 180.0, "hfov_deg"),
        ("moving_objects", -1, "moving_objects"),
        ("seed", -3, "seed"),
        ("texture_dir", "/nonexistent/textures", "texture_dir"),
    ],
)
def test_bad_config_is_refused_naming_the_field(field, value, message):
    with pytest.raises(SynthConfigError, match=message):
        tiny(**{field: value})


def test_intrinsics_follow_size_and_field_of_view():
    k = tiny(width=64, height=48, hfov_deg=90.0).intrinsics
    assert k.fx == pytest.approx(32.0) and k.fy == pytest.approx(32.0)
    assert (k.cx, k.cy, k.width, k.height) == (31.5, 23.5, 64, 48)


# ------------------------------------------------------------------------ frames, determinism


def test_frames_have_the_documented_fields_stamps_and_types():
    frames = list(render_sequence(tiny(frames=4, fps=20.0)))
    assert [f.name for f in frames] == ["000000", "000001", "000002", "000003"]
    assert [f.stamp_ns for f in frames] == [SYNTH_START_NS + i * 50_000_000 for i in range(4)]
    for frame in frames:
        assert frame.rgb.shape == (48, 64, 3) and frame.rgb.dtype == np.uint8
        assert frame.depth.shape == (48, 64) and frame.depth.dtype == np.float32
        assert frame.pose.shape == (4, 4) and np.allclose(frame.pose[:3, :3] @ frame.pose[:3, :3].T, np.eye(3))
        assert frame.intrinsics == tiny().intrinsics
    for frame in frames[:-1]:
        assert frame.flow.shape == (48, 64, 2) and frame.flow.dtype == np.float32
        assert frame.flow_valid.shape == (48, 64) and frame.flow_valid.dtype == bool
        assert np.isfinite(frame.flow).all() and frame.flow_valid.mean() > 0.5
    assert frames[-1].flow is None and frames[-1].flow_valid is None


def test_without_flow_no_frame_has_flow():
    assert all(f.flow is None and f.flow_valid is None for f in render_sequence(tiny(), with_flow=False))


@pytest.mark.parametrize("scene", SCENES)
def test_same_seed_same_sequence_other_seed_other_sequence(scene):
    config = tiny(scene=scene, moving_objects=1, lighting_changes=True)
    first, again = list(render_sequence(config)), list(render_sequence(config))
    for a, b in zip(first, again, strict=True):
        assert np.array_equal(a.rgb, b.rgb) and np.array_equal(a.pose, b.pose)
        assert np.array_equal(a.depth, b.depth, equal_nan=True)
        assert (a.flow is None and b.flow is None) or np.array_equal(a.flow, b.flow)
    other = next(iter(render_sequence(dataclasses.replace(config, seed=1))))
    assert not np.array_equal(first[0].rgb, other.rgb)


def test_moving_objects_do_not_change_the_camera_path():
    still = build_scene(tiny(frames=10))
    busy = build_scene(tiny(frames=10, moving_objects=2))
    assert np.array_equal(still.camera_poses, busy.camera_poses)
    assert busy.world.body_poses.shape[0] == 3


# ------------------------------------------------------------------------------ scene validity


@pytest.mark.parametrize("scene", CLOSED_SCENES)
def test_closed_scenes_have_finite_positive_depth_everywhere(scene):
    for frame in render_sequence(tiny(scene=scene, frames=2, moving_objects=1)):
        assert np.isfinite(frame.depth).all()
        assert frame.depth.min() > 0.1


def test_street_sky_has_nan_depth_and_never_valid_flow():
    frames = list(render_sequence(tiny(scene="street", trajectory="driving", frames=2)))
    sky = np.isnan(frames[0].depth)
    assert 0 < sky.mean() < 0.5
    assert sky[0].sum() > sky[-1].sum()  # sky at the top of the image, ground at the bottom
    assert not frames[0].flow_valid[sky].any()
    assert np.nanmin(frames[0].depth) > 0.5


def test_rendering_a_hole_in_a_closed_world_is_an_error():
    bank = TextureBank.from_textures([np.full((4, 4, 3), 0.5)])
    material = Material((0,) * 6, ((1.0, 1.0, 1.0),) * 6, 1.0)
    lonely_box = Shape(ShapeKind.BOX, (1.0, 1.0, 1.0), shape_pose((5.0, 0.0, 0.0)), material)
    world = World((lonely_box,), np.eye(4)[None, None], bank, open_sky=False)
    with pytest.raises(RenderError, match="escaped"):
        render_view(world, 0, np.eye(4), Intrinsics(20, 20, 7.5, 7.5, 16, 16), Lighting())


def test_lighting_changes_vary_brightness_but_not_geometry():
    steady = list(render_sequence(tiny(trajectory="standstill", frames=15), with_flow=False))
    varying = list(render_sequence(tiny(trajectory="standstill", frames=15, lighting_changes=True), with_flow=False))
    assert all(np.array_equal(f.rgb, steady[0].rgb) for f in steady)
    means = [f.rgb.mean() for f in varying]
    assert max(means) - min(means) > 3.0
    assert all(np.array_equal(f.depth, varying[0].depth) for f in varying)


def test_texture_folder_images_end_up_on_surfaces(tmp_path: Path):
    stripes = np.zeros((40, 40, 3), np.uint8)
    stripes[:, ::4] = (255, 0, 255)  # a magenta the procedural palettes never produce this pure
    cv2.imwrite(str(tmp_path / "poster.png"), stripes)
    scene = build_scene(tiny(texture_dir=str(tmp_path)))
    bank = scene.world.textures
    assert bank.user_count == 1
    user_texture = bank.count - 1
    assert any(user_texture in shape.material.textures for shape in scene.world.shapes)


def test_bench_render_reports_timing(capsys):
    result = bench_render(tiny(frames=2))
    assert result["frames"] == 2 and result["frames_per_s"] > 0 and result["total_s"] > 0
    assert "frames/s" in capsys.readouterr().out


# --------------------------------------------------------------------------- exact ground truth


@pytest.mark.parametrize(
    ("scene", "trajectory"),
    [("room", "handheld"), ("corridor", "drone"), ("street", "driving"), ("tabletop", "loop"), ("room", "rotation")],
)
def test_depth_and_relative_pose_reproduce_the_flow_of_static_scenes(scene, trajectory):
    """Back-projecting depth(t) with T_{t+1}_t and projecting gives the GT flow to < 0.01 px."""
    frames = list(render_sequence(tiny(scene=scene, trajectory=trajectory)))
    for this, following in zip(frames[:-1], frames[1:], strict=True):
        relative = invert(following.pose) @ this.pose
        predicted = rigid_flow(this.depth, this.intrinsics, relative)
        valid = this.flow_valid
        assert valid.mean() > 0.5
        assert np.abs(predicted[valid] - this.flow[valid]).max() < 0.01


@pytest.mark.parametrize(("scene", "trajectory"), [("room", "handheld"), ("street", "driving"), ("tabletop", "drone")])
def test_flow_warp_beats_a_half_pixel_error_on_rendered_scenes(scene, trajectory):
    """On the rich procedural textures, warping t+1 with the GT flow reproduces t far better than
    a flow off by half a pixel (the remaining error is bilinear interpolation of fine texture)."""
    this, following, _ = render_sequence(tiny(scene=scene, trajectory=trajectory, width=96, height=72))
    pixels = interior(this.flow_valid)
    error = np.abs(warp_back(following.rgb, this.flow) - this.rgb).mean(axis=2)[pixels].mean()
    shifted = this.flow + np.float32(0.5 / np.sqrt(2))
    shifted_error = np.abs(warp_back(following.rgb, shifted) - this.rgb).mean(axis=2)[pixels].mean()
    assert error < 8.0
    assert error < 0.7 * shifted_error


def _smooth_world() -> tuple[World, np.ndarray, Intrinsics]:
    """A room with a box, a sphere, a poster and one moving box, textured with smooth sinusoids."""
    size = 256
    u, v = np.meshgrid((np.arange(size) + 0.5) / size, (np.arange(size) + 0.5) / size)

    def texture(phase: float) -> np.ndarray:
        return np.stack([
            0.5 + 0.3 * np.sin(2 * np.pi * (u + phase)) * np.cos(2 * np.pi * v),
            0.5 + 0.3 * np.cos(2 * np.pi * (2 * u + v) + phase),
            0.5 + 0.25 * np.sin(2 * np.pi * (u - 2 * v) + 2 * phase),
        ], axis=-1)

    def material(index: int, tile_m: float) -> Material:
        return Material((index,) * 6, ((1.0, 1.0, 1.0),) * 6, tile_m)

    poster_rotation = [[0, 0, -1], [1, 0, 0], [0, 1, 0]]
    shapes = (
        Shape(ShapeKind.BOX, (4.0, 4.0, 2.0), shape_pose((0, 0, 2)), material(0, 2.0), hollow=True),
        Shape(ShapeKind.BOX, (0.4, 0.5, 0.6), shape_pose((2.5, 0.6, 0.6), yaw=0.4), material(1, 1.5)),
        Shape(ShapeKind.SPHERE, (0.5, 0.5, 0.5), shape_pose((2.8, -1.2, 1.2)), material(1, 1.5)),
        Shape(ShapeKind.QUAD, (0.5, 0.4, 0.0), shape_pose((3.99, 1.5, 1.5), rotation=poster_rotation),
              material(0, 0.7)),
        Shape(ShapeKind.BOX, (0.3, 0.3, 0.3), np.eye(4), material(1, 1.0), body=1),
    )
    bodies = np.tile(np.eye(4), (2, 2, 1, 1))
    bodies[1, 0, :3, 3] = (2.0, -0.3, 1.3)
    bodies[1, 1, :3, 3] = (2.0, -0.25, 1.33)
    bodies[1, 1, :3, :3] = so3_exp([0.03, 0.05, 0.02])
    world = World(shapes, bodies, TextureBank.from_textures([texture(0.0), texture(1.0)]))
    cameras = np.tile(np.eye(4), (2, 1, 1))
    looking_along_x = np.array([[0.0, 0.0, 1.0], [-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]])
    cameras[0, :3, :3] = looking_along_x
    cameras[1, :3, :3] = so3_exp([0.01, -0.02, 0.03]) @ looking_along_x
    cameras[0, :3, 3] = (0.0, 0.0, 1.2)
    cameras[1, :3, 3] = (0.06, 0.03, 1.21)
    return world, cameras, Intrinsics(80.0, 80.0, 47.5, 35.5, 96, 72)


def test_flow_warp_reproduces_the_frame_to_quantisation_level_on_smooth_textures():
    """Exactness of the flow, texture attachment and occlusion mask, free of texture aliasing:
    on smooth textures, t+1 warped with the GT flow matches t to about half a grey level,
    static and moving surfaces alike."""
    world, cameras, k = _smooth_world()
    flat_light = Lighting(ambient=1.0, gain=1.0)  # shading of the rotating box must not change
    this = render_view(world, 0, cameras[0], k, flat_light)
    following = render_view(world, 1, cameras[1], k, flat_light)
    flow, valid = scene_flow(world, 0, this, cameras[1], k)
    pixels = interior(valid) & same_surface_3x3(this.shape * 6 + this.face)
    error = np.abs(warp_back(following.rgb, flow) - this.rgb).mean(axis=2)
    moving = pixels & (this.body == 1)
    assert pixels.mean() > 0.6 and moving.sum() > 300
    assert error[pixels].mean() < 0.7
    assert error[moving].mean() < 0.7
    assert np.percentile(error[pixels], 99) < 5.0


def test_moving_object_flow_is_its_rigid_motion_projected():
    """For pixels on moving objects: back-project depth(t), apply the object's motion
    T_world_body(t+1) T_world_body(t)^-1, project with the camera at t+1: equals the GT flow."""
    config = tiny(scene="room", trajectory="handheld", moving_objects=3, width=96, height=72, seed=2)
    scene = build_scene(config)
    k = config.intrinsics
    checked = 0
    for t in range(config.frames - 1):
        view = render_view(scene.world, t, scene.camera_poses[t], k, scene.lighting[t])
        flow, valid = scene_flow(scene.world, t, view, scene.camera_poses[t + 1], k)
        points_t = backproject(view.depth, k).astype(np.float64) @ scene.camera_poses[t][:3, :3].T
        points_t += scene.camera_poses[t][:3, 3]
        for body in range(1, scene.world.body_poses.shape[0]):
            on_body = (view.body == body) & valid
            if not on_body.any():
                continue
            motion = scene.world.body_poses[body, t + 1] @ invert(scene.world.body_poses[body, t])
            moved = points_t[on_body] @ motion[:3, :3].T + motion[:3, 3]
            camera = invert(scene.camera_poses[t + 1])
            in_next = moved @ camera[:3, :3].T + camera[:3, 3]
            expected = np.stack([k.fx * in_next[:, 0] / in_next[:, 2] + k.cx,
                                 k.fy * in_next[:, 1] / in_next[:, 2] + k.cy], axis=-1)
            expected -= np.argwhere(on_body)[:, ::-1]
            assert np.abs(expected - flow[on_body]).max() < 0.01
            camera_only = rigid_flow(view.depth, k, invert(scene.camera_poses[t + 1]) @ scene.camera_poses[t])
            assert np.abs(camera_only[on_body] - flow[on_body]).mean() > 0.05  # the object really moves
            checked += int(on_body.sum())
    assert checked > 100


def test_static_camera_flow_is_zero_and_valid_exactly_where_the_surface_stays_visible():
    """With a still camera a static pixel keeps its place; it is valid iff frame t+1 still shows
    the same shape there (moving objects occlude and uncover the background)."""
    config = tiny(trajectory="standstill", moving_objects=3, frames=4, seed=1)
    scene = build_scene(config)
    k = config.intrinsics
    occluded = 0
    for t in range(config.frames - 1):
        this = render_view(scene.world, t, scene.camera_poses[t], k, scene.lighting[t])
        following = render_view(scene.world, t + 1, scene.camera_poses[t + 1], k, scene.lighting[t + 1])
        flow, valid = scene_flow(scene.world, t, this, scene.camera_poses[t + 1], k)
        static = this.body == 0
        assert np.abs(flow[static]).max() < 1e-3
        np.testing.assert_array_equal(valid[static], (following.shape == this.shape)[static])
        occluded += int((static & ~valid).sum())
    assert occluded > 0  # the movers did hide something: the mask was exercised
