"""Tests for samkit.pipelines.gaze_to_mask: mask reuse, frame sources, frame times, gaze adapters.

The reuse rule is checked exactly with a test-double segmenter whose masks are known; the same
sequences also run through the real tiny SAM model.
"""
from __future__ import annotations

import sys
from types import SimpleNamespace

import numpy as np
import pytest

import samkit
from samkit.prompts import Prompts
from samkit.results import Segmentation
from samkit.pipelines.gaze_to_mask import (
    GazeMaskSequence,
    GazeToMask,
    gaze_to_mask,
    iter_frames,
    list_image_files,
    read_video,
)

H, W = 48, 64


def point(x, y, **meta):
    return Prompts(points=[[[x, y]]], labels=[[1]], meta=[meta])


class LeftHalfSegmenter:
    """Test double: every mask is the left half of the frame; logits hold the call number."""

    def __init__(self):
        self.encoded, self.calls = [], []

    def encode(self, image):
        self.encoded.append(image)
        return SimpleNamespace(original_size=image.shape[:2])

    def segment(self, embedding, *, prompts, multimask):
        h, w = embedding.original_size
        k = 3 if multimask else 1
        masks = np.zeros((len(prompts), k, h, w), bool)
        masks[..., : w // 2] = True
        logits = np.full((len(prompts), k, 16, 16), float(len(self.calls)), np.float32)
        scores = np.tile(np.linspace(0.5, 0.9, k), (len(prompts), 1))
        self.calls.append(SimpleNamespace(prompts=prompts, multimask=multimask))
        return Segmentation(masks, scores, logits, prompts.meta)


class Spy:
    def __init__(self, inner):
        self.inner, self.encoded, self.calls = inner, [], []

    def encode(self, image):
        self.encoded.append(image)
        return self.inner.encode(image)

    def segment(self, embedding, *, prompts, multimask):
        result = self.inner.segment(embedding, prompts=prompts, multimask=multimask)
        self.calls.append(SimpleNamespace(prompts=prompts, multimask=multimask, result=result))
        return result


@pytest.fixture
def frames(images):
    base = images["chelsea_300x451"]
    return [np.ascontiguousarray(base[10 * i:10 * i + H, 20 * i:20 * i + W]) for i in range(5)]


SEQUENCE = [point(10, 10), point(12, 20), point(50, 10), None, point(10, 10)]


def test_reuse_rule_with_known_masks(frames):
    seg = LeftHalfSegmenter()
    out = gaze_to_mask(frames, seg, SEQUENCE, fps=10)
    assert isinstance(out, GazeMaskSequence) and len(out) == 5
    # frame 1's point lies in frame 0's (left-half) mask; frame 2's does not; frame 3 has no
    # prompt (not encoded); frame 4 starts afresh after the gap
    assert out.reused.tolist() == [False, True, False, False, False]
    assert out[3] is None and len(seg.encoded) == 4
    assert [c.multimask for c in seg.calls] == [True, False, True, True]
    np.testing.assert_array_equal(seg.calls[1].prompts.mask_inputs, np.zeros((1, 1, 16, 16)))  # call 0's logits
    np.testing.assert_array_equal(seg.calls[1].prompts.points, [[[12, 20]]])
    assert seg.calls[0].prompts.mask_inputs is None and seg.calls[2].prompts.mask_inputs is None
    np.testing.assert_allclose(out.frame_times, [0.0, 0.1, 0.2, 0.3, 0.4])
    assert out[0].masks.shape == (1, 1, H, W) and out[0].meta[0]["output_index"] == 2  # best of three
    assert [s.meta[0]["frame_index"] for s in out if s is not None] == [0, 1, 2, 4]
    assert out[1].meta[0]["reused_previous_mask"] is True and out[1].meta[0]["frame_time"] == pytest.approx(0.1)
    assert out.prompted.tolist() == [0, 1, 2, 4]
    stack = out.masks()
    assert stack.shape == (5, H, W) and not stack[3].any() and stack[0, :, : W // 2].all()


@pytest.mark.parametrize("kind", ["fake", "real"])
def test_no_reuse_when_disabled(frames, kind, tiny_model):
    spy = Spy(LeftHalfSegmenter() if kind == "fake" else samkit.Segmenter(tiny_model))
    out = gaze_to_mask(frames, spy, SEQUENCE, reuse_previous_mask=False)
    assert not out.reused.any() and all(c.prompts.mask_inputs is None for c in spy.calls)
    assert np.isnan(out.frame_times).all() and out[0].meta[0]["frame_time"] is None


def test_real_model_reuses_exactly_when_point_is_inside(frames, tiny_model):
    spy = Spy(samkit.Segmenter(tiny_model))
    out = gaze_to_mask(frames, spy, SEQUENCE, fps=10)
    assert len(spy.encoded) == 4 and out[3] is None
    previous = None
    for i, (prompt, result) in enumerate(zip(SEQUENCE, out)):
        if prompt is None:
            previous = None
            continue
        x, y = prompt.points[0, 0].astype(int)
        inside = previous is not None and bool(previous.masks[0, 0, y, x])
        assert out.reused[i] == inside
        assert result.masks.shape == (1, 1, H, W) and result.logits.shape[:2] == (1, 1)
        previous = result
    for call, reused in zip(spy.calls, out.reused[out.prompted]):
        assert call.multimask is (not reused)
        assert (call.prompts.mask_inputs is not None) == reused


def test_real_model_same_point_same_frame_reuses_previous_logits(frames, tiny_model):
    spy = Spy(samkit.Segmenter(tiny_model))
    first = gaze_to_mask([frames[0]], spy, [point(30, 20)])[0]
    ys, xs = np.nonzero(first.masks[0, 0])
    assert len(xs), "the tiny random model should give a non-empty mask here"
    inside = point(float(xs[0]) + 0.5, float(ys[0]) + 0.5)
    out = gaze_to_mask([frames[0], frames[0]], spy, [point(30, 20), inside])
    assert out.reused.tolist() == [False, True]
    np.testing.assert_array_equal(spy.calls[-1].prompts.mask_inputs, out[0].logits)


@pytest.mark.parametrize("kind", ["fake", "real"])
def test_class_equals_function(frames, kind, tiny_model):
    make = LeftHalfSegmenter if kind == "fake" else (lambda: samkit.Segmenter(tiny_model))
    a = GazeToMask(make(), SEQUENCE, fps=10)(frames)
    b = gaze_to_mask(frames, make(), SEQUENCE, fps=10)
    assert a.reused.tolist() == b.reused.tolist()
    assert [None if s is None else s.meta for s in a] == [None if s is None else s.meta for s in b]
    np.testing.assert_array_equal(a.masks(), b.masks())


# -- frame sources and times -----------------------------------------------------------------
def save_png(path, array):
    from PIL import Image

    Image.fromarray(array).save(path)


def test_folder_in_natural_order(tmp_path, tiny_model):
    for i, name in enumerate(["frame10.png", "frame2.png", "frame1.jpg.txt", "frame1.png"]):
        if name.endswith(".png"):
            save_png(tmp_path / name, np.full((8, 8, 3), i * 50, np.uint8))
        else:
            (tmp_path / name).write_text("not an image")
    assert [p.rsplit("/", 1)[-1] for p in list_image_files(tmp_path)] == ["frame1.png", "frame2.png", "frame10.png"]
    for seg in (LeftHalfSegmenter(), Spy(samkit.Segmenter(tiny_model))):
        out = gaze_to_mask(tmp_path, seg, [point(1, 1)] * 3, frame_times=[1.0, 2.0, 3.0])
        assert [int(im[0, 0, 0]) for im in seg.encoded] == [150, 50, 0]
        assert out.frame_times.tolist() == [1.0, 2.0, 3.0] and out.masks().shape == (3, 8, 8)


def write_video(path, colours, fps=10):
    av = pytest.importorskip("av")
    with av.open(str(path), "w") as container:
        stream = container.add_stream("png", rate=fps)  # lossless, so colours survive exactly
        stream.width, stream.height, stream.pix_fmt = 32, 24, "rgb24"
        for colour in colours:
            frame = np.zeros((24, 32, 3), np.uint8)
            frame[...] = colour
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


@pytest.mark.parametrize("reader", ["av", "cv2"])
def test_video_frames_are_rgb_with_timestamps(tmp_path, reader):
    pytest.importorskip(reader)
    path = tmp_path / "clip.avi"
    write_video(path, [(255, 0, 0), (0, 255, 0), (0, 0, 255)])
    got = list(read_video(path, reader=reader))
    assert [f[0, 0].tolist() for f, _ in got] == [[255, 0, 0], [0, 255, 0], [0, 0, 255]]
    seg = LeftHalfSegmenter()
    out = GazeToMask(seg, [point(3, 3), None, point(3, 3)], video_reader=reader)(path)
    assert [im[0, 0].tolist() for im in seg.encoded] == [[255, 0, 0], [0, 0, 255]]
    np.testing.assert_allclose(out.frame_times, [0.0, 0.1, 0.2], atol=1e-6)  # the video's own clock


def test_video_reader_missing(tmp_path, monkeypatch):
    path = tmp_path / "clip.avi"
    path.write_bytes(b"")
    monkeypatch.setitem(sys.modules, "av", None)
    with pytest.raises(ImportError, match="pip install av"):
        read_video(path, reader="av")
    monkeypatch.setitem(sys.modules, "cv2", None)
    with pytest.raises(ImportError, match="PyAV or OpenCV"):
        read_video(path)


# -- through the gaze adapter -----------------------------------------------------------------------
def gaze_samples():
    t = np.arange(0, 0.9, 1 / 250)
    x = np.where(t < 0.35, 20.0, 50.0)  # fixation on the left, a saccade at 0.35 s, then the right
    y = np.where(t < 0.35, 15.0, 30.0)
    keep = (t < 0.3) | (t > 0.4)  # no samples during the saccade
    return np.stack([t, x, y], axis=1)[keep]


from samkit.adapters import gaze  # noqa: E402  (beside the tests that use it)


def test_gaze_adapter_end_to_end(frames, tiny_model):
    adapter = gaze.GazeAdapter(method="idt", min_duration=0.1)
    spy = Spy(samkit.Segmenter(tiny_model))
    times = np.array([0.05, 0.15, 0.37, 0.5, 0.7])
    out = GazeToMask(spy, adapter)(frames, gaze_samples(), frame_times=times)
    expected = gaze.fixations_to_prompts(gaze.detect_fixations(gaze_samples(), method="idt", min_duration=0.1), times)
    assert [p is None for p in expected] == [s is None for s in out] == [False, False, True, False, False]
    for p, s, call in zip([p for p in expected if p is not None], [s for s in out if s is not None], spy.calls):
        np.testing.assert_allclose(call.prompts.points, p.points)
        assert s.meta[0]["fixation_index"] == p.meta[0]["fixation_index"] and s.meta[0]["source"] == "gaze"
    assert [s.meta[0]["frame_index"] for s in out if s is not None] == [0, 1, 3, 4]
    # the same through precomputed fixations and per-frame prompts
    fixations = adapter.detect(gaze_samples())
    again = GazeToMask(samkit.Segmenter(tiny_model), adapter)(frames, fixations=fixations, frame_times=times)
    precomputed = gaze_to_mask(frames, samkit.Segmenter(tiny_model), expected, frame_times=times)
    for a, b, c in zip(out, again, precomputed):
        assert (a is None) == (b is None) == (c is None)
        if a is not None:
            np.testing.assert_array_equal(a.masks, b.masks)
            np.testing.assert_array_equal(a.masks, c.masks)


def test_gaze_adapter_uses_fps(frames):
    adapter = gaze.GazeAdapter()
    out = GazeToMask(LeftHalfSegmenter(), adapter, fps=10)(frames, gaze_samples())
    np.testing.assert_allclose(out.frame_times, np.arange(5) / 10)
    expected = adapter(gaze_samples(), np.arange(5) / 10)
    assert [s is None for s in out] == [p is None for p in expected]
    for s, p in zip(out, expected):
        if p is not None:
            assert s.meta[0]["fixation_index"] == p.meta[0]["fixation_index"]
    assert {s.meta[0]["fixation_index"] for s in out if s is not None} == {0, 1}


# -- errors -------------------------------------------------------------------------------------------
class FakeAdapter:
    def detect(self, samples):
        return "fixations"

    def to_prompts(self, fixations, frame_times):
        return [point(1, 1)]


@pytest.mark.parametrize("make, call, error, match", [
    (lambda s: GazeToMask(s, 42), None, TypeError, "GazeAdapter-like"),
    (lambda s: GazeToMask(s, "prompts"), None, TypeError, "GazeAdapter-like"),
    (lambda s: GazeToMask(s, [None], fps=0), None, ValueError, "fps must be finite and > 0"),
    (lambda s: GazeToMask(s, [None], video_reader="ffmpeg"), None, ValueError, "video_reader"),
    (lambda s: GazeToMask(s, [None] * 5), dict(samples=np.zeros((3, 3))), ValueError, "precomputed prompts"),
    (lambda s: GazeToMask(s, FakeAdapter()), dict(), ValueError, "exactly one of samples= or fixations="),
    (lambda s: GazeToMask(s, FakeAdapter()), dict(samples=1, fixations=2), ValueError, "exactly one"),
    (lambda s: GazeToMask(s, FakeAdapter()), dict(samples=np.zeros((3, 3))), ValueError, "needs frame times"),
    (lambda s: GazeToMask(s, [None] * 4), dict(), ValueError, "prompts has 4 entries"),
    (lambda s: GazeToMask(s, [None] * 6), dict(), ValueError, "prompts has 6 entries for 5 frames"),
    (lambda s: GazeToMask(s, [None] * 5), dict(frame_times=[0, 1]), ValueError, "frame_times has 2 entries"),
    (lambda s: GazeToMask(s, [None] * 5), dict(frame_times=[0, 1, 2, 3, 4, 5]), ValueError, "6 entries for 5"),
    (lambda s: GazeToMask(s, [None] * 5), dict(frame_times=[0, 1, np.nan, 3, 4]), ValueError, "finite"),
    (lambda s: GazeToMask(s, ["point"] * 5), dict(), TypeError, "frame 0 must be samkit.Prompts or None"),
])
def test_bad_setups(frames, make, call, error, match):
    with pytest.raises(error, match=match):
        pipeline = make(LeftHalfSegmenter())
        pipeline(frames, **(call or {}))


def test_bad_frame_sources(tmp_path):
    with pytest.raises(ValueError, match="wrap it in a list"):
        list(iter_frames(np.zeros((8, 8, 3), np.uint8)))
    with pytest.raises(TypeError, match="list of images"):
        iter_frames(42)
    with pytest.raises(ValueError, match="holds no images"):
        list_image_files(tmp_path)
    with pytest.raises(FileNotFoundError, match="video file not found"):
        read_video(tmp_path / "missing.mp4")


def test_masks_needs_one_size():
    seq = GazeMaskSequence([None, None], np.zeros(2), np.zeros(2, bool), [(4, 4), (5, 5)])
    with pytest.raises(ValueError, match="one size"):
        seq.masks()
