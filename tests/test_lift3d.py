"""Tests for samkit.pipelines.lift3d: mask lifting, fusion, voxel thinning and PLY files."""
from __future__ import annotations

import inspect
import os
from types import SimpleNamespace

import numpy as np
import pytest

from samkit.pipelines.lift3d import (
    MasksTo3D,
    PointCloud,
    lift_to_3d,
    read_ply,
    voxel_downsample,
    write_ply,
)

H, W = 6, 8
FX = FY = 256.0  # powers of two keep (u - cx) * z / fx exact in binary
CX, CY = 4.0, 3.0
K = np.array([[FX, 0, CX], [0, FY, CY], [0, 0, 1]])
ROWS, COLS = range(1, 4), range(2, 6)  # the rectangle of the test mask: 3 x 4 pixels


def rect_mask():
    m = np.zeros((H, W), bool)
    m[ROWS.start:ROWS.stop, COLS.start:COLS.stop] = True
    return m


def plane(z=2.0):
    return np.full((H, W), z)


def expected_points(z=2.0, skip=()):
    pts = [((u - CX) * z / FX, (v - CY) * z / FY, z) for v in ROWS for u in COLS
           if (u, v) not in skip]
    return np.array(pts, np.float32).reshape(-1, 3)


def rgb_image():
    return np.arange(H * W * 3, dtype=np.uint8).reshape(H, W, 3)


def test_plane_and_rectangle_exact_points():
    [cloud] = lift_to_3d(rect_mask(), plane(), K)
    assert len(cloud) == 12 and cloud.points.dtype == np.float32
    np.testing.assert_array_equal(cloud.points, expected_points())
    assert cloud.points[0].tolist() == [-2 / 128, -2 / 128, 2.0]  # pixel (u=2, v=1)
    assert cloud.colors is None and cloud.object_id == 0 and cloud.meta == {}


def test_intrinsics_as_four_values_and_general_values():
    [a] = lift_to_3d(rect_mask(), plane(), K)
    [b] = lift_to_3d(rect_mask(), plane(), (FX, FY, CX, CY))
    np.testing.assert_array_equal(a.points, b.points)
    k = np.array([[525.0, 0, 319.5], [0, 520.0, 239.5], [0, 0, 1]])
    [c] = lift_to_3d(rect_mask(), plane(1.3), k)
    v, u = np.nonzero(rect_mask())
    want = np.stack([(u - 319.5) * 1.3 / 525.0, (v - 239.5) * 1.3 / 520.0, np.full(12, 1.3)], 1)
    np.testing.assert_allclose(c.points, want, rtol=1e-6)


def test_skew_is_applied():
    k = K.copy()
    k[0, 1] = 16.0
    [cloud] = lift_to_3d(rect_mask(), plane(), k)
    v, u = np.nonzero(rect_mask())
    np.testing.assert_allclose(cloud.points[:, 0], (u - CX - 16.0 * (v - CY) / FY) * 2.0 / FX)


def test_uint16_millimetres_with_depth_scale():
    depth = np.full((H, W), 2000, np.uint16)
    [cloud] = lift_to_3d(rect_mask(), depth, K, depth_scale=0.001)
    np.testing.assert_allclose(cloud.points, expected_points(), rtol=0, atol=1e-7)


def test_invalid_depth_pixels_are_dropped():
    depth = plane()
    bad = {(2, 1): np.nan, (3, 1): 0.0, (4, 2): np.inf, (5, 3): -1.0}  # (u, v): value
    for (u, v), value in bad.items():
        depth[v, u] = value
    depth[0, 0] = np.nan  # outside the mask: irrelevant
    [cloud] = lift_to_3d(rect_mask(), depth, K)
    assert len(cloud) == 8
    np.testing.assert_array_equal(cloud.points, expected_points(skip=bad))
    [empty] = lift_to_3d(rect_mask(), np.zeros((H, W), np.uint16), K)
    assert len(empty) == 0 and empty.points.shape == (0, 3)


def test_colors_come_from_rgb():
    rgb = rgb_image()
    [cloud] = lift_to_3d(rect_mask(), plane(), K, rgb=rgb)
    v, u = np.nonzero(rect_mask())
    np.testing.assert_array_equal(cloud.colors, rgb[v, u])
    assert cloud.colors.dtype == np.uint8


@pytest.mark.parametrize("rotation, translation", [
    (np.eye(3), [1.0, 2.0, 3.0]),
    (np.array([[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]), [0.0, 0.0, 0.0]),  # 90 degrees about z
    (np.array([[1.0, 0, 0], [0, 0, -1], [0, 1, 0]]), [0.5, -1.0, 4.0]),  # 90 degrees about x
])
def test_pose_camera_to_world(rotation, translation):
    pose = np.eye(4)
    pose[:3, :3], pose[:3, 3] = rotation, translation
    [cloud] = lift_to_3d(rect_mask(), plane(), K, pose=pose)
    want = expected_points().astype(np.float64) @ rotation.T + translation
    np.testing.assert_allclose(cloud.points, want, rtol=0, atol=1e-6)


def test_several_masks_ids_and_meta():
    a, b = rect_mask(), np.zeros((H, W), bool)
    b[0, 0] = True
    clouds = lift_to_3d(np.stack([a, b]), plane(), K)
    assert [len(c) for c in clouds] == [12, 1] and [c.object_id for c in clouds] == [0, 1]
    clouds = lift_to_3d(np.stack([a, b]).astype(np.uint8), plane(), K, object_ids=["cup", "pen"])
    assert [c.object_id for c in clouds] == ["cup", "pen"]
    assert lift_to_3d(np.zeros((0, H, W), bool), plane(), K) == []


def segmentation(k=3, meta=None, scores=True):
    masks = np.zeros((2, k, H, W), bool)
    masks[0, :, 0, 0] = True
    masks[0, k - 1] = rect_mask()  # best-scoring output of prompt 0
    masks[1, :, 5, 7] = True
    s = np.tile(np.linspace(0.1, 0.9, k), (2, 1)) if scores else None
    return SimpleNamespace(masks=masks, scores=s, meta=meta)


def test_segmentation_like_input():
    meta = [{"track_id": 7, "label": "cup"}, {"object_id": "b"}]
    clouds = lift_to_3d(segmentation(meta=meta), plane(), K)
    assert [len(c) for c in clouds] == [12, 1]
    assert [c.object_id for c in clouds] == [7, "b"]
    assert clouds[0].meta == meta[0] and clouds[0].meta is not meta[0]
    single = lift_to_3d(segmentation(k=1, scores=False), plane(), K)
    assert [len(c) for c in single] == [12, 1] and [c.object_id for c in single] == [0, 1]
    with pytest.raises(ValueError, match="K=3 masks per prompt and no scores"):
        lift_to_3d(segmentation(scores=False), plane(), K)


def test_torch_masks_accepted():
    torch = pytest.importorskip("torch")
    [cloud] = lift_to_3d(torch.from_numpy(rect_mask()), torch.from_numpy(plane()), K)
    np.testing.assert_array_equal(cloud.points, expected_points())


def bad_pose():
    p = np.eye(4)
    p[3, 0] = 1.0
    return p


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(masks=np.ones((H, W - 1), bool)), ValueError,
     r"masks must have the same \(H, W\) as depth \(6, 8\), got \(6, 7\)"),
    (dict(masks=np.ones((1, 1, H, W), bool)), ValueError, r"\(H, W\) or \(N, H, W\), got"),
    (dict(masks=np.full((H, W), 0.5)), ValueError, "boolean .* threshold logits"),
    (dict(masks=np.full((H, W), "a")), ValueError, "boolean"),
    (dict(depth=np.ones((H, W, 1))), ValueError, r"depth must have shape \(H, W\)"),
    (dict(depth=np.ones((H, W), bool)), ValueError, "depth must be numeric"),
    (dict(intrinsics=np.eye(2)), ValueError, r"3x3 matrix K .*\(2, 2\)"),
    (dict(intrinsics=[[0.0, 0, 1], [0, 5, 1], [0, 0, 1]]), ValueError, "fx > 0 and fy > 0"),
    (dict(intrinsics=[[5.0, 0, 1], [0, -5, 1], [0, 0, 1]]), ValueError, "fy=-5.0"),
    (dict(intrinsics=[[5.0, 0, 1], [0, 5, 1], [0, 1, 1]]), ValueError, r"\[0, 0, 1\]\]"),
    (dict(intrinsics=[[np.nan, 0, 1], [0, 5, 1], [0, 0, 1]]), ValueError, "finite"),
    (dict(rgb=np.zeros((H, W, 3), np.float32)), ValueError, r"rgb must be uint8 .*\(6, 8, 3\)"),
    (dict(rgb=np.zeros((H, W), np.uint8)), ValueError, "rgb must be uint8"),
    (dict(depth_scale=0), ValueError, "depth_scale must be finite and > 0, got 0"),
    (dict(depth_scale=np.nan), ValueError, "depth_scale"),
    (dict(pose=np.eye(3)), ValueError, r"pose must be a 4x4 .*\(3, 3\)"),
    (dict(pose=bad_pose()), ValueError, r"last row \[0, 0, 0, 1\], got \[1.0, 0.0, 0.0, 1.0\]"),
    (dict(pose=np.full((4, 4), np.nan)), ValueError, "pose must be finite"),
    (dict(object_ids=[1, 2]), ValueError, r"one id per mask \(1\), got 2"),
])
def test_lift_validation(kwargs, error, match):
    args = dict(masks=rect_mask(), depth=plane(), intrinsics=K)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        lift_to_3d(args.pop("masks"), args.pop("depth"), args.pop("intrinsics"), **args)


def test_segmentation_validation():
    with pytest.raises(ValueError, match="scores must have shape"):
        seg = segmentation()
        seg.scores = np.ones(2)
        lift_to_3d(seg, plane(), K)
    with pytest.raises(ValueError, match=r"one dict per mask \(2\), got 1"):
        lift_to_3d(segmentation(meta=[{}]), plane(), K)


# -- fusion -----------------------------------------------------------------------------------
def shifted_pose(dx):
    pose = np.eye(4)
    pose[0, 3] = dx
    return pose


def test_two_frames_fused_per_object():
    fuser = MasksTo3D(K)
    meta = [{"track_id": 3, "label": "cup"}]
    seg = SimpleNamespace(masks=rect_mask()[None, None], scores=None, meta=meta)
    fuser.add_frame(seg, plane(), pose=np.eye(4))
    fuser.add_frame(seg, plane(), pose=shifted_pose(1.0))
    other = np.zeros((H, W), bool)
    other[0, 0] = True
    fuser.add_frame(other, plane(), pose=np.eye(4), object_ids=["pen"])
    clouds = fuser.clouds()
    assert list(clouds) == [3, "pen"] and fuser.frames == 3
    want = np.concatenate([expected_points(), expected_points() + [1, 0, 0]])
    np.testing.assert_array_equal(clouds[3].points, want)
    assert clouds[3].meta == {"track_id": 3, "label": "cup", "n_views": 2}
    assert clouds[3].object_id == 3 and len(clouds["pen"]) == 1


def test_fusion_with_voxel_downsampling():
    fuser = MasksTo3D(K, voxel_size=10.0)  # the voxel [0, 10)^3 holds everything
    up = shifted_pose(5.0)
    up[1, 3] = 5.0
    fuser.add_frame(rect_mask(), plane(), rgb=rgb_image(), pose=up)
    up[0, 3] = 6.0
    fuser.add_frame(rect_mask(), plane(), rgb=rgb_image(), pose=up)
    [cloud] = fuser.clouds().values()
    np.testing.assert_allclose(cloud.points, [expected_points().mean(0) + [5.5, 5, 0]], atol=1e-6)
    v, u = np.nonzero(rect_mask())
    np.testing.assert_array_equal(cloud.colors, [np.rint(rgb_image()[v, u].mean(0))])


def test_voxel_downsample_exact():
    cloud = PointCloud([[0.0, 0, 0], [0.5, 0, 0], [1.25, 0, 0], [-0.5, 0, 0]],
                       colors=[[0, 0, 0], [10, 20, 31], [5, 5, 5], [1, 2, 3]], object_id=1,
                       meta={"a": 1})
    thin = voxel_downsample(cloud, 1.0)
    np.testing.assert_array_equal(thin.points, [[-0.5, 0, 0], [0.25, 0, 0], [1.25, 0, 0]])
    np.testing.assert_array_equal(thin.colors, [[1, 2, 3], [5, 10, 16], [5, 5, 5]])
    assert thin.object_id == 1 and thin.meta == {"a": 1}
    assert len(voxel_downsample(PointCloud.empty(), 0.1)) == 0
    with pytest.raises(ValueError, match="voxel_size must be finite and > 0"):
        voxel_downsample(cloud, 0.0)


def test_fusion_consistency_errors():
    fuser = MasksTo3D(K)
    fuser.add_frame(rect_mask(), plane(), pose=np.eye(4))
    with pytest.raises(ValueError, match="pose must be given for every frame or for none"):
        fuser.add_frame(rect_mask(), plane())
    with pytest.raises(ValueError, match="rgb must be given for all its frames or none"):
        fuser.add_frame(rect_mask(), plane(), pose=np.eye(4), rgb=rgb_image())
    assert fuser.frames == 1 and len(fuser.clouds()[0]) == 12  # failed frames add nothing
    fuser.clear()
    assert fuser.clouds() == {} and fuser.frames == 0
    fuser.add_frame(rect_mask(), plane())
    with pytest.raises(ValueError, match="depth_scale"):
        MasksTo3D(K, depth_scale=-1)
    with pytest.raises(ValueError, match="intrinsics"):
        MasksTo3D(np.eye(2))


def test_class_calls_function_with_same_defaults():
    function = inspect.signature(lift_to_3d).parameters
    method = inspect.signature(MasksTo3D).parameters
    assert method["depth_scale"].default == function["depth_scale"].default
    depth = np.full((H, W), 2000, np.uint16)
    fuser = MasksTo3D(K, depth_scale=0.001)
    got = fuser.add_frame(rect_mask(), depth, rgb=rgb_image(), pose=shifted_pose(2.0))
    [want] = lift_to_3d(rect_mask(), depth, K, rgb=rgb_image(), depth_scale=0.001,
                        pose=shifted_pose(2.0))
    np.testing.assert_array_equal(got[0].points, want.points)
    np.testing.assert_array_equal(got[0].colors, want.colors)


# -- PLY --------------------------------------------------------------------------------------
@pytest.mark.parametrize("binary", [True, False])
@pytest.mark.parametrize("with_colors", [True, False])
@pytest.mark.parametrize("n", [0, 1, 500])
def test_ply_round_trip(tmp_path, binary, with_colors, n):
    rng = np.random.default_rng(n)
    points = (rng.standard_normal((n, 3)) * 10 ** rng.uniform(-4, 4, (n, 1))).astype(np.float32)
    colors = rng.integers(0, 256, (n, 3), dtype=np.uint8) if with_colors else None
    path = write_ply(tmp_path / "cloud.ply", points, colors, binary=binary)
    header = path.read_bytes().split(b"end_header\n")[0].decode()
    assert header.startswith("ply\nformat " + ("binary_little_endian" if binary else "ascii") + " 1.0\n")
    assert f"element vertex {n}\n" in header and ("property uchar red" in header) == with_colors
    cloud = read_ply(path)
    np.testing.assert_array_equal(cloud.points, points)
    if with_colors:
        np.testing.assert_array_equal(cloud.colors, colors)
    else:
        assert cloud.colors is None
    assert os.listdir(tmp_path) == ["cloud.ply"]  # no temporary file left


def test_write_ply_accepts_point_cloud_and_replaces_atomically(tmp_path, monkeypatch):
    path = tmp_path / "a.ply"
    cloud = PointCloud([[1.0, 2.0, 3.0]], colors=[[1, 2, 3]])
    write_ply(path, cloud)
    np.testing.assert_array_equal(read_ply(path).colors, [[1, 2, 3]])
    before = path.read_bytes()

    def fail(*args):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", fail)
    with pytest.raises(OSError, match="disk full"):
        write_ply(path, np.zeros((4, 3)))
    assert path.read_bytes() == before and os.listdir(tmp_path) == ["a.ply"]


def test_read_ply_from_another_writer(tmp_path):
    text = ("ply\r\nformat ascii 1.0\r\ncomment other tool\r\nelement vertex 2\r\n"
            "property double x\r\nproperty double y\r\nproperty double z\r\n"
            "property float nx\r\nproperty uchar red\r\nproperty uchar green\r\n"
            "property uchar blue\r\nelement face 1\r\nproperty list uchar int vertex_indices\r\n"
            "end_header\r\n1 2 3 0.5 10 20 30\r\n4 5 6 0.5 40 50 60\r\n3 0 1 1\r\n")
    (tmp_path / "o.ply").write_bytes(text.encode())
    cloud = read_ply(tmp_path / "o.ply")
    np.testing.assert_array_equal(cloud.points, [[1, 2, 3], [4, 5, 6]])
    np.testing.assert_array_equal(cloud.colors, [[10, 20, 30], [40, 50, 60]])


@pytest.mark.parametrize("content, match", [
    (b"hello", "not a PLY file"),
    (b"ply\nformat binary_big_endian 1.0\nelement vertex 0\nproperty float x\nend_header\n",
     "ascii or binary_little_endian, got binary_big_endian"),
    (b"ply\nformat ascii 1.0\nelement face 0\nend_header\n", "'vertex' as the first"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\nend_header\n1 2\n",
     "needs properties x, y, z"),
    (b"ply\nformat ascii 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
     b"property float z\nend_header\n1 2 3\n", r"expected 2 vertex rows of 3 values"),
    (b"ply\nformat binary_little_endian 1.0\nelement vertex 2\nproperty float x\nproperty float y\n"
     b"property float z\nend_header\n" + b"\0" * 20, "truncated"),
    (b"ply\nformat ascii 1.0\nelement vertex 1\nproperty float x\nproperty float y\n"
     b"property float z\nproperty float red\nproperty float green\nproperty float blue\n"
     b"end_header\n1 2 3 0.5 0.5 0.5\n", r"integers in \[0, 255\]"),
])
def test_read_ply_errors(tmp_path, content, match):
    (tmp_path / "bad.ply").write_bytes(content)
    with pytest.raises(ValueError, match=match):
        read_ply(tmp_path / "bad.ply")


@pytest.mark.parametrize("points, colors, match", [
    (np.zeros((3, 2)), None, r"points must be numeric with shape \(P, 3\)"),
    (np.zeros((3, 3)), np.zeros((2, 3), np.uint8), r"colors must be uint8 with shape \(3, 3\)"),
    (np.zeros((1, 3)), np.full((1, 3), 0.5), "colors must be uint8"),
    (np.zeros((1, 3)), np.full((1, 3), 300), "colors must be uint8"),
])
def test_write_ply_validation(tmp_path, points, colors, match):
    with pytest.raises(ValueError, match=match):
        write_ply(tmp_path / "x.ply", points, colors)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("binary", [True, False])
def test_fuser_writes_one_file_per_object(tmp_path, binary):
    fuser = MasksTo3D(K)
    masks = np.stack([rect_mask(), ~rect_mask()])
    fuser.add_frame(masks, plane(), rgb=rgb_image(), object_ids=[5, "lid/top"])
    paths = fuser.write_ply(tmp_path / "out", binary=binary)
    assert sorted(p.name for p in paths.values()) == ["object_5.ply", "object_lid_top.ply"]
    for object_id, cloud in fuser.clouds().items():
        back = read_ply(paths[object_id])
        np.testing.assert_array_equal(back.points, cloud.points)
        np.testing.assert_array_equal(back.colors, cloud.colors)
    clash = MasksTo3D(K)
    clash.add_frame(masks, plane(), object_ids=["a/b", "a_b"])
    with pytest.raises(ValueError, match="clashing file names"):
        clash.write_ply(tmp_path / "clash")


def test_real_segmentation_type():
    results = pytest.importorskip("samkit.results")
    seg = segmentation(meta=[{"track_id": 1}, {"track_id": 2}])
    real = results.Segmentation(masks=seg.masks, scores=seg.scores, meta=seg.meta)
    clouds = lift_to_3d(real, plane(), K)
    assert [len(c) for c in clouds] == [12, 1] and [c.object_id for c in clouds] == [1, 2]
