"""Tests for samkit.adapters.gaze: fixation detection and fixation -> prompt matching."""
from __future__ import annotations

import dataclasses
import inspect
import logging

import numpy as np
import pytest

from samkit.adapters.gaze import (
    DEFAULT_DISPERSION,
    DEFAULT_VELOCITY,
    Fixations,
    GazeAdapter,
    detect_fixations,
    fixations_to_prompts,
)
from samkit.prompts import Prompts

RATE = 250.0  # Hz
CENTERS = [(100.0, 100.0), (400.0, 250.0), (200.0, 450.0)]
FIXATION_ROWS = 75  # 300 ms of samples: the window spans 74 intervals = 296 ms
SACCADE_ROWS = 5  # 20 ms; every saccade step is > 50 px, far above both default thresholds


def make_trace(*, noise: float = 0.5, seed: int = 0, confidence: bool = False):
    """Three fixations separated by straight fast saccades.

    Returns the (M, 3|4) samples and the (first_row, last_row) of each fixation.
    """
    rng = np.random.default_rng(seed)
    xs, ys, windows, row = [], [], [], 0
    for k, (cx, cy) in enumerate(CENTERS):
        if k:
            px, py = CENTERS[k - 1]
            f = np.arange(1, SACCADE_ROWS + 1) / (SACCADE_ROWS + 1)
            xs.append(px + (cx - px) * f)
            ys.append(py + (cy - py) * f)
            row += SACCADE_ROWS
        xs.append(cx + noise * rng.standard_normal(FIXATION_ROWS))
        ys.append(cy + noise * rng.standard_normal(FIXATION_ROWS))
        windows.append((row, row + FIXATION_ROWS - 1))
        row += FIXATION_ROWS
    x, y = np.concatenate(xs), np.concatenate(ys)
    t = np.arange(x.size) / RATE
    columns = [t, x, y] + ([np.full(x.size, 0.9)] if confidence else [])
    return np.stack(columns, axis=1), windows


def expected(samples, windows):
    """start, end, x, y, n_samples of fixations made of the given (first, last) valid rows."""
    out = []
    for first, last in windows:
        rows = np.arange(first, last + 1)
        ok = np.isfinite(samples[rows, 1])
        if samples.shape[1] == 4:
            ok &= samples[rows, 3] >= 0.6
        rows = rows[ok]
        out.append((samples[first, 0], samples[last, 0], samples[rows, 1].mean(),
                    samples[rows, 2].mean(), rows.size))
    return np.array(out, dtype=np.float64).reshape(-1, 5)


def check(fixations, samples, windows):
    want = expected(samples, windows)
    assert len(fixations) == len(windows)
    np.testing.assert_array_equal(fixations.start, want[:, 0])
    np.testing.assert_array_equal(fixations.end, want[:, 1])
    np.testing.assert_allclose(fixations.x, want[:, 2], rtol=0, atol=1e-9)
    np.testing.assert_allclose(fixations.y, want[:, 3], rtol=0, atol=1e-9)
    np.testing.assert_array_equal(fixations.n_samples, want[:, 4])


@pytest.mark.parametrize("method", ["idt", "ivt"])
def test_three_fixations_exact_windows(method):
    samples, windows = make_trace()
    fixations = detect_fixations(samples, method)
    check(fixations, samples, windows)
    np.testing.assert_allclose(np.stack([fixations.x, fixations.y], 1), CENTERS, atol=0.2)
    np.testing.assert_allclose(fixations.duration, (FIXATION_ROWS - 1) / RATE)
    assert fixations.coordinates == "pixels"


@pytest.mark.parametrize("method", ["idt", "ivt"])
def test_min_duration_drops_short_fixations(method):
    samples, _ = make_trace()
    assert len(detect_fixations(samples, method, min_duration=0.296)) == 3
    assert len(detect_fixations(samples, method, min_duration=0.3)) == 0


BLINK = slice(33, 43)  # rows within fixation 1: 10 rows -> 44 ms between the valid neighbours


def with_blink(samples, windows, fill="nan"):
    s = samples.copy()
    rows = np.arange(windows[1][0], windows[1][1] + 1)[BLINK]
    if fill == "nan":
        s[rows, 1:3] = np.nan
    elif fill == "low_confidence":
        s[rows, 3] = 0.1
    elif fill == "nan_confidence":
        s[rows, 3] = np.nan
    elif fill == "missing":
        s = np.delete(s, rows, axis=0)
    return s, rows


@pytest.mark.parametrize("method", ["idt", "ivt"])
@pytest.mark.parametrize("fill", ["nan", "low_confidence", "nan_confidence", "missing"])
@pytest.mark.parametrize("max_gap, bridged", [(0.075, True), (0.045, True), (0.043, False)])
def test_invalid_stretch_bridged_or_split(method, fill, max_gap, bridged):
    samples, windows = make_trace(confidence=fill != "nan")
    s, rows = with_blink(samples, windows, fill)
    fixations = detect_fixations(s, method, max_gap=max_gap)
    if fill == "missing":  # rows removed: re-index windows on the shortened array
        n = rows.size
        windows = [windows[0], (windows[1][0], windows[1][1] - n),
                   (windows[2][0] - n, windows[2][1] - n)]
        blink_first, blink_last = rows[0], rows[0] - 1
    else:
        blink_first, blink_last = rows[0], rows[-1]
    if bridged:
        want = windows
    else:
        want = [windows[0], (windows[1][0], blink_first - 1), (blink_last + 1, windows[1][1]),
                windows[2]]
    check(fixations, s, want)


def test_low_confidence_ignored_when_gate_is_off():
    samples, windows = make_trace(confidence=True)
    samples[:, 3] = 0.1
    assert len(detect_fixations(samples)) == 0
    check(detect_fixations(samples, min_confidence=0.0), samples[:, :3], windows)


def test_smoothing_removes_single_sample_spike():
    samples, windows = make_trace()
    samples[windows[0][0] + 37, 1] += 200.0
    split = detect_fixations(samples, "ivt")
    assert len(split) == 4
    np.testing.assert_array_equal(split.end[0], samples[windows[0][0] + 36, 0])
    smoothed = detect_fixations(samples, "ivt", smoothing=3)
    np.testing.assert_array_equal(smoothed.start, samples[[w[0] for w in windows], 0])
    np.testing.assert_array_equal(smoothed.end, samples[[w[1] for w in windows], 0])
    # the centroid is the mean of the raw samples, spike included
    assert smoothed.x[0] == pytest.approx(samples[windows[0][0]:windows[0][1] + 1, 1].mean())


@pytest.mark.parametrize("method", ["idt", "ivt"])
def test_out_of_frame_fixations_dropped_and_logged(method, caplog):
    samples, windows = make_trace()
    with caplog.at_level(logging.INFO, logger="samkit.adapters.fixations"):
        fixations = detect_fixations(samples, method, frame_size=(480, 350))
    check(fixations, samples, [windows[0], windows[2]])  # (400, 250) has x > W = 350
    assert "dropped 1 of 3" in caplog.text


@pytest.mark.parametrize("method", ["idt", "ivt"])
def test_normalized_coordinates(method):
    h, w = 1080, 1920
    samples, windows = make_trace()
    normalized = samples.copy()
    normalized[:, 1] /= w
    normalized[:, 2] /= h
    fixations = detect_fixations(normalized, method, coordinates="normalized", frame_size=(h, w))
    check(fixations, normalized, windows)
    assert fixations.coordinates == "normalized"
    prompts = fixations_to_prompts(fixations, [fixations.start[1]], frame_size=(h, w))
    np.testing.assert_allclose(prompts[0].points[0, 0], CENTERS[1], atol=0.2)
    with pytest.raises(ValueError, match="frame_size=\\(H, W\\) is required"):
        fixations_to_prompts(fixations, [0.0])
    # the frame check of normalized gaze is [0, 1] on both axes
    shifted = normalized.copy()
    shifted[:, 2] += 0.7  # moves the third fixation below the frame
    assert len(detect_fixations(shifted, method, coordinates="normalized", frame_size=(h, w))) == 2


def test_duplicate_timestamps_and_empty_inputs():
    samples, windows = make_trace()
    doubled = np.repeat(samples, 2, axis=0)
    assert len(detect_fixations(doubled, "idt")) == 3
    assert len(detect_fixations(doubled, "ivt")) == 3
    assert len(detect_fixations(np.zeros((0, 3)))) == 0
    blinks_only = np.column_stack([np.arange(10) / RATE, np.full(10, np.nan), np.full(10, np.nan)])
    assert len(detect_fixations(blinks_only)) == 0
    assert detect_fixations(np.zeros((0, 4)), coordinates="normalized").coordinates == "normalized"


# -- fixations -> prompts ---------------------------------------------------------------------
def two_fixations(**kw):
    return Fixations(start=[0.0, 0.5], end=[0.3, 0.8], x=[100.0, 300.0], y=[50.0, 60.0], **kw)


@pytest.mark.parametrize("tolerance, times, want", [
    (0.02, [0.31, 0.35, 0.49, 0.6, 0.81, 0.9, -0.01], [0, None, 1, 1, 1, None, 0]),
    (0.0, [0.0, 0.3, 0.31, 0.49, 0.8, 0.81], [0, 0, None, None, 1, None]),
    (0.2, [0.38, 0.42, 1.0, 1.01], [0, 1, 1, None]),  # both candidates: the nearest wins
])
def test_frame_matching_with_tolerance(tolerance, times, want):
    prompts = fixations_to_prompts(two_fixations(), times, tolerance=tolerance)
    assert len(prompts) == len(times)
    got = [None if p is None else p.meta[0]["fixation_index"] for p in prompts]
    assert got == want
    for frame_index, (p, t) in enumerate(zip(prompts, times)):
        if p is None:
            continue
        assert isinstance(p, Prompts) and len(p) == 1
        k = p.meta[0]["fixation_index"]
        np.testing.assert_array_equal(p.points, [[[[100.0, 50.0], [300.0, 60.0]][k]]])
        np.testing.assert_array_equal(p.labels, [[1]])
        assert p.meta[0] == {"source": "gaze", "fixation_index": k,
                             "fixation_start": [0.0, 0.5][k], "fixation_end": [0.3, 0.8][k],
                             "frame_index": frame_index, "frame_time": t}


def test_tie_goes_to_the_earliest_fixation():
    f = Fixations(start=[0.75, 0.0], end=[1.0, 0.25], x=[1, 2], y=[1, 2])
    prompts = fixations_to_prompts(f, [0.5, 0.5 + 2 ** -10], tolerance=0.25)
    assert [p.meta[0]["fixation_index"] for p in prompts] == [1, 0]


def test_unsorted_fixations_keep_their_index():
    f = two_fixations()[[1, 0]]
    prompts = fixations_to_prompts(f, [0.1, 0.6], negative_from_previous=True)
    assert [p.meta[0]["fixation_index"] for p in prompts] == [1, 0]
    assert prompts[1].meta[0]["negative_fixation_index"] == 1


@pytest.mark.parametrize("min_distance, want_negative", [(50.0, True), (200.0, True),
                                                         (201.0, False)])
def test_negative_point_from_previous_fixation(min_distance, want_negative):
    f = two_fixations()  # centroids 200.25 px apart
    prompts = fixations_to_prompts(f, [0.1, 0.6], negative_from_previous=True,
                                   min_negative_distance=min_distance)
    np.testing.assert_array_equal(prompts[0].labels, [[1]])  # no previous fixation
    if want_negative:
        np.testing.assert_array_equal(prompts[1].points, [[[300.0, 60.0], [100.0, 50.0]]])
        np.testing.assert_array_equal(prompts[1].labels, [[1, 0]])
        assert prompts[1].meta[0]["negative_fixation_index"] == 0
    else:
        np.testing.assert_array_equal(prompts[1].labels, [[1]])
        assert "negative_fixation_index" not in prompts[1].meta[0]
    plain = fixations_to_prompts(f, [0.6])
    np.testing.assert_array_equal(plain[0].labels, [[1]])


def test_prompts_skip_fixations_outside_the_frame():
    f = two_fixations()
    prompts = fixations_to_prompts(f, [0.1, 0.6], frame_size=(100, 200),
                                   negative_from_previous=True)
    assert prompts[1] is None  # (300, 60) has x > W = 200
    inside = fixations_to_prompts(f, [0.6], frame_size=(100, 400), negative_from_previous=True)
    np.testing.assert_array_equal(inside[0].labels, [[1, 0]])
    normalized = Fixations(start=[0.0, 0.5], end=[0.3, 0.8], x=[0.25, 0.75], y=[0.5, 0.25],
                           coordinates="normalized")
    out = fixations_to_prompts(normalized, [0.6], frame_size=(480, 640),
                               negative_from_previous=True)
    np.testing.assert_array_equal(out[0].points, [[[480.0, 120.0], [160.0, 240.0]]])  # x*W, y*H


def test_empty_fixations_give_no_prompts():
    assert fixations_to_prompts(Fixations.empty(), [0.0, 1.0]) == [None, None]
    assert fixations_to_prompts(two_fixations(), []) == []


# -- containers and settings ------------------------------------------------------------------
def test_fixations_container():
    f = Fixations(start=[0.0, 0.5, 1.0], end=[0.2, 0.7, 1.5], x=[1, 2, 3], y=[4, 5, 6],
                  n_samples=[10, 20, 30])
    assert len(f) == 3
    assert len(f[1]) == 1 and f[1].x.tolist() == [2.0]
    assert f[1:].start.tolist() == [0.5, 1.0]
    assert f[np.array([True, False, True])].n_samples.tolist() == [10, 30]
    np.testing.assert_allclose(f.to_array(), [[0.0, 0.2, 1, 4, 0.2, 10], [0.5, 0.7, 2, 5, 0.2, 20],
                                              [1.0, 1.5, 3, 6, 0.5, 30]])
    assert Fixations.empty().to_array().shape == (0, 6)
    with pytest.raises(IndexError):
        f[3]


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(start=[0, 1], end=[1], x=[0, 0], y=[0, 0]), ValueError, "same length"),
    (dict(start=[1.0], end=[0.5], x=[0], y=[0]), ValueError, "end >= start"),
    (dict(start=[0.0], end=[np.nan], x=[0], y=[0]), ValueError, "finite"),
    (dict(start=[[0.0]], end=[[1.0]], x=[[0]], y=[[0]]), ValueError, r"shape \(F,\)"),
    (dict(start=[0.0], end=[1.0], x=[0], y=[0], n_samples=[1, 2]), ValueError, "n_samples"),
    (dict(start=[0.0], end=[1.0], x=[0], y=[0], coordinates="mm"), ValueError, "coordinates"),
])
def test_fixations_validation(kwargs, error, match):
    with pytest.raises(error, match=match):
        Fixations(**kwargs)


GOOD = np.array([[0.0, 1.0, 1.0], [0.1, 1.0, 1.0]])


@pytest.mark.parametrize("samples, kwargs, error, match", [
    (np.zeros(5), {}, ValueError, r"shape \(M, 3\) or \(M, 4\).*got \(5,\)"),
    (np.zeros((5, 2)), {}, ValueError, r"got \(5, 2\)"),
    (np.zeros((5, 5)), {}, ValueError, r"got \(5, 5\)"),
    (np.zeros((2, 3, 1)), {}, ValueError, r"got \(2, 3, 1\)"),
    (np.array([["a", "b", "c"]]), {}, TypeError, "numeric"),
    (np.array([[0.2, 1, 1], [0.1, 1, 1]]), {}, ValueError, r"non-decreasing.*t\[0\]=0.2"),
    (np.array([[0.0, 1, 1], [np.nan, 1, 1]]), {}, ValueError, "finite.*row 1"),
    (np.array([[0.0, 1, 1], [np.inf, 1, 1]]), {}, ValueError, "finite"),
    (GOOD, {"method": "hmm"}, ValueError, r"method must be one of \('idt', 'ivt'\), got 'hmm'"),
    (GOOD, {"coordinates": "degrees"}, ValueError, "coordinates must be one of"),
    (GOOD, {"dispersion_threshold": 0}, ValueError, "dispersion_threshold must be finite and > 0"),
    (GOOD, {"velocity_threshold": -5}, ValueError, "velocity_threshold"),
    (GOOD, {"velocity_threshold": "fast"}, TypeError, "velocity_threshold must be a number"),
    (GOOD, {"min_duration": -0.1}, ValueError, "min_duration must be finite and >= 0"),
    (GOOD, {"max_gap": np.nan}, ValueError, "max_gap"),
    (GOOD, {"min_confidence": "high"}, ValueError, "min_confidence must be a finite number"),
    (GOOD, {"min_confidence": np.nan}, ValueError, "min_confidence"),
    (GOOD, {"smoothing": 4}, ValueError, "smoothing must be an odd integer >= 1.*got 4"),
    (GOOD, {"smoothing": 0}, ValueError, "smoothing"),
    (GOOD, {"smoothing": 3.0}, ValueError, "smoothing"),
    (GOOD, {"frame_size": (480,)}, ValueError, r"frame_size must be \(H, W\)"),
    (GOOD, {"frame_size": (0, 640)}, ValueError, "frame_size"),
])
def test_detect_fixations_bad_input(samples, kwargs, error, match):
    with pytest.raises(error, match=match):
        detect_fixations(samples, **kwargs)


@pytest.mark.parametrize("fixations, times, kwargs, error, match", [
    (np.zeros((2, 4)), [0.0], {}, TypeError, "fixations must be Fixations"),
    (two_fixations(), [[0.0]], {}, ValueError, r"frame_times must have shape \(T,\)"),
    (two_fixations(), [np.nan], {}, ValueError, "frame_times must be finite"),
    (two_fixations(), [0.0], {"tolerance": -1}, ValueError, "tolerance"),
    (two_fixations(), [0.0], {"coordinates": "normalized"}, ValueError, "disagrees"),
    (two_fixations(), [0.0], {"frame_size": (1, 2, 3)}, ValueError, "frame_size"),
    (two_fixations(), [0.0], {"min_negative_distance": -1}, ValueError, "min_negative_distance"),
])
def test_fixations_to_prompts_bad_input(fixations, times, kwargs, error, match):
    with pytest.raises(error, match=match):
        fixations_to_prompts(fixations, times, **kwargs)


def test_adapter_defaults_match_functions():
    fields = {f.name: f.default for f in dataclasses.fields(GazeAdapter)}
    params = {**inspect.signature(detect_fixations).parameters,
              **inspect.signature(fixations_to_prompts).parameters}
    params = {k: p.default for k, p in params.items()
              if p.default is not inspect.Parameter.empty and k != "coordinates"}
    params["coordinates"] = inspect.signature(detect_fixations).parameters["coordinates"].default
    assert fields == params
    assert DEFAULT_DISPERSION.keys() == DEFAULT_VELOCITY.keys() == {"pixels", "normalized"}


@pytest.mark.parametrize("settings", [{}, {"method": "ivt", "negative_from_previous": True},
                                      {"smoothing": 5, "frame_size": (480, 350)}])
def test_adapter_equals_functions(settings):
    samples, _ = make_trace(seed=3)
    times = np.arange(0, samples[-1, 0], 1 / 30)
    adapter = GazeAdapter(**settings)
    detect_kw = {k: v for k, v in settings.items() if k in ("method", "smoothing", "frame_size")}
    fixations = detect_fixations(samples, **detect_kw)
    np.testing.assert_array_equal(adapter.detect(samples).to_array(), fixations.to_array())
    prompt_kw = {k: v for k, v in settings.items() if k in ("negative_from_previous", "frame_size")}
    want = fixations_to_prompts(fixations, times, **prompt_kw)
    got = adapter(samples, times)
    assert [p is None for p in got] == [p is None for p in want]
    for a, b in zip(got, want):
        if a is not None:
            np.testing.assert_array_equal(a.points, b.points)
            np.testing.assert_array_equal(a.labels, b.labels)
            assert a.meta == b.meta


def test_adapter_validates_settings_early():
    with pytest.raises(ValueError, match="method"):
        GazeAdapter(method="idk")
    with pytest.raises(TypeError):
        GazeAdapter("ivt")  # keyword-only


def naive_idt(t, x, y, threshold, min_duration):
    """Textbook I-DT, one sample at a time (reference for the block-wise growth)."""
    found, i, n = [], 0, len(t)
    while i < n:
        j = i + 1
        while j < n and t[j] - t[i] < min_duration - 1e-9:
            j += 1
        if j >= n:
            break
        if np.ptp(x[i:j + 1]) + np.ptp(y[i:j + 1]) > threshold:
            i += 1
            continue
        while j + 1 < n and np.ptp(x[i:j + 2]) + np.ptp(y[i:j + 2]) <= threshold:
            j += 1
        found.append((t[i], t[j]))
        i = j + 1
    return found


@pytest.mark.parametrize("seed", range(4))
def test_idt_matches_textbook_version_on_random_walks(seed):
    rng = np.random.default_rng(seed)
    n = 3000
    t = np.cumsum(rng.uniform(0.002, 0.006, n))
    jumps = rng.random(n) < 0.01  # occasional saccades, slow drift otherwise
    x = np.cumsum(rng.normal(0, 1.5, n) + jumps * rng.normal(0, 200, n))
    y = np.cumsum(rng.normal(0, 1.5, n) + jumps * rng.normal(0, 200, n))
    samples = np.stack([t, x, y], axis=1)
    fixations = detect_fixations(samples, dispersion_threshold=40.0, max_gap=1.0)
    want = naive_idt(t, x, y, 40.0, 0.1)
    assert len(want) > 10
    assert list(zip(fixations.start.tolist(), fixations.end.tolist())) == want
