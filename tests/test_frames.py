"""``downscale_frames`` and ``FrameDownscaler`` against the float64 reference of SPEC section 6
(``reference.reference_downscale_frames``): 3-D windows, time geometry, partial windows."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import downpool  # noqa: E402
from downpool import api  # noqa: E402
from downpool.frames import FrameDownscaler, downscale_frames, time_windows  # noqa: E402
from reference import (  # noqa: E402
    assert_matches,
    mode_downscale_frames,
    reference_downscale_frames,
    time_windows as reference_time_windows,
    to_work,
)
from helpers import DTYPES, random_image  # noqa: E402
from test_reference import (  # noqa: E402
    DERANDOMIZE,
    PARAMS,
    as_labels,
    geometries,
)

EXAMPLES = int(os.environ.get("DOWNPOOL_TEST_EXAMPLES", "25"))
METHODS = list(downpool.METHODS)


def frames_of(rng, t, h, w, dtype, layout):
    return np.stack([random_image((h, w), dtype, rng, layout=layout, extremes=True)
                     for _ in range(t)])


def check_frames(frames, method, params, geom, time_kernel, time_stride, *, data_scale=1.0,
                 has_alpha=False, linear=False):
    before = frames.copy()
    out = downscale_frames(frames, method, time_kernel=time_kernel, time_stride=time_stride,
                           device="cpu", has_alpha=has_alpha, linear=linear, **geom, **params)
    assert np.array_equal(frames, before), "the input was modified"
    n_out = len(reference_time_windows(len(frames), time_kernel, time_stride or time_kernel))
    if downpool.METHODS[method].labels:
        expected = mode_downscale_frames(frames, time_kernel=time_kernel, time_stride=time_stride,
                                         **geom)
        assert out.shape == expected.shape and out.dtype == expected.dtype
        assert np.array_equal(out.view(np.uint8), expected.view(np.uint8)), (method, geom)
        return out
    ref = reference_downscale_frames(frames, method, time_kernel=time_kernel,
                                     time_stride=time_stride, has_alpha=has_alpha, linear=linear,
                                     **geom, **params)
    assert out.shape[0] == n_out == ref.shape[0]
    for f in range(n_out):
        assert_matches(out[f], ref[f], frames.dtype, data_scale=data_scale,
                       what=f"{method} {params} {geom} kt={time_kernel} st={time_stride} "
                            f"frame {f} of {frames.dtype} {frames.shape}")
    return out


@given(n=st.integers(1, 40), kt=st.integers(1, 9), st_=st.integers(1, 9))
@settings(max_examples=200, deadline=None, derandomize=True)
def test_time_windows_follow_section_6(n, kt, st_):
    windows = time_windows(n, kt, st_)
    assert windows == [(r.start, r.stop) for r in reference_time_windows(n, kt, st_)]
    assert all(0 <= a < b <= n and b - a <= kt for a, b in windows)  # partial, never empty
    if n >= kt:
        assert windows[0] == (0, kt)


def test_time_windows_examples():
    assert time_windows(5, 2, 2) == [(0, 2), (2, 4), (4, 5)]  # partial last window
    assert time_windows(3, 5, 5) == [(0, 3)]  # T < kt: one window of every frame
    assert time_windows(5, 3, 1) == [(0, 3), (1, 4), (2, 5)]
    assert time_windows(6, 2, 3) == [(0, 2), (3, 5)]  # frame 5 read by none
    assert time_windows(5, 1, 3) == [(0, 1), (3, 4)]  # ceil((5-1)/3)+1 = 3, the third empty


@pytest.mark.parametrize("method", METHODS)
@settings(max_examples=EXAMPLES, deadline=None, derandomize=DERANDOMIZE,
          suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_hypothesis_against_section_6_reference(method, data):
    t = data.draw(st.integers(1, 5), label="T")
    h, w = data.draw(st.integers(1, 9), label="H"), data.draw(st.integers(1, 9), label="W")
    dtype = data.draw(st.sampled_from(DTYPES))
    layout = data.draw(st.sampled_from(["2d", 1, 2, 3, 4]))
    rng = np.random.default_rng(data.draw(st.integers(0, 2**32 - 1)))
    frames = frames_of(rng, t, h, w, dtype, layout)
    kt = data.draw(st.integers(1, 4), label="time_kernel")
    ts = data.draw(st.one_of(st.none(), st.integers(1, 4)), label="time_stride")
    geom = data.draw(geometries((h, w), area_only=method == "dpid"))
    params = data.draw(PARAMS[method])
    if downpool.METHODS[method].labels:
        frames = as_labels(frames, data.draw(st.integers(1, 4)), data.draw(st.booleans()))
        check_frames(frames, method, params, geom, kt, ts)
        return
    has_alpha = frames.ndim == 4 and frames.shape[3] >= 2 and data.draw(st.booleans())
    linear = data.draw(st.booleans())
    check_frames(frames, method, params, geom, kt, ts, has_alpha=has_alpha, linear=linear)


@pytest.mark.parametrize("method", METHODS)
def test_wide_float_values_and_extreme_parameters(method):
    """Floats far outside [0, 1] (negative where the method allows), the parameters at
    their extremes, 3 frames into one with overlap."""
    rng = np.random.default_rng(7)
    frames = frames_of(rng, 4, 7, 6, np.float64, 3)
    nonneg = downpool.METHODS[method].needs_nonnegative
    frames = frames * 1e6 if nonneg else (frames - 0.5) * 1e6
    params = {"lp": {"p": 1000.0}, "softpool": {"beta": 1e4}, "dpp": {"lam": 100.0},
              "dpid": {"lam": 100.0}, "stochastic": {"mode": "expectation"}}.get(method, {})
    if method == "mode":
        frames = np.round(frames / 3e5)
    check_frames(frames, method, params, {"size": (3, 4)} if method == "dpid" else {"kernel_size": 3},
                 3, 2, data_scale=float(np.abs(frames).max()))


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("options", [{}, {"has_alpha": True}, {"linear": True}],
                         ids=["plain", "alpha", "linear"])
def test_one_frame_windows_are_downscale_per_frame(method, options):
    """time_kernel=1: each frame is ``downscale`` of it, bit for bit; stochastic sample's
    frame 0 draws as ``downscale`` does, later frames by their own output index."""
    if downpool.METHODS[method].labels and options:
        pytest.skip("labels take no alpha or linear light")
    rng = np.random.default_rng(3)
    frames = frames_of(rng, 3, 11, 9, np.uint8, 4)
    out = downscale_frames(frames, method, kernel_size=3, **options)
    per_frame = np.stack([downpool.downscale(f, method, kernel_size=3, **options) for f in frames])
    if method == "stochastic":
        np.testing.assert_array_equal(out[0], per_frame[0])
        frames[:] = frames[0]  # the same picture in every frame: only the draws differ
        out = downscale_frames(frames, method, kernel_size=3, **options)
        assert not np.array_equal(out[1], out[0]) and not np.array_equal(out[2], out[1])
    else:
        np.testing.assert_array_equal(out, per_frame)


@pytest.mark.parametrize("channels", [1, 3, 4])
def test_stochastic_sample_draws_one_pixel_of_the_3d_window(channels):
    """Sample mode copies every channel of one pixel of the 3-D window; a window whose
    only non-zero pixels are in one frame always draws from that frame."""
    rng = np.random.default_rng(11)
    frames = frames_of(rng, 4, 8, 8, np.uint8, channels)
    frames[0] = 0
    frames[2] = 0
    out = downscale_frames(frames, "stochastic", time_kernel=2, kernel_size=2, seed=5)
    assert out.shape == (2, 4, 4, channels)
    for f in range(2):
        for i in range(4):
            for j in range(4):
                block = frames[2 * f + 1, 2 * i:2 * i + 2, 2 * j:2 * j + 2].reshape(-1, channels)
                if block.any():
                    assert any(np.array_equal(out[f, i, j], p) for p in block), (f, i, j)
    # Over 3-D windows of two non-zero frames, both frames are drawn from.
    frames = np.stack([np.full((16, 16, 3), 100, np.uint8), np.full((16, 16, 3), 200, np.uint8)])
    drawn = downscale_frames(frames, "stochastic", time_kernel=2, kernel_size=2, seed=1)
    assert set(np.unique(drawn)) == {100, 200}


@settings(max_examples=30, deadline=None, derandomize=True)
@given(t=st.integers(1, 9), kt=st.integers(1, 4), ts=st.integers(1, 5),
       method=st.sampled_from(METHODS), seed=st.integers(0, 2**16))
def test_frame_downscaler_holds_at_most_the_frames_a_window_reads(t, kt, ts, method, seed):
    """Fed one frame at a time with ``max_bytes=0``: the same output frames as the whole
    sequence, each as soon as its window is complete, with at most kt frames held."""
    rng = np.random.default_rng(seed)
    frames = frames_of(rng, t, 6, 5, np.uint8, 3)
    whole = downscale_frames(frames, method, time_kernel=kt, time_stride=ts)
    pooler = FrameDownscaler(frames.shape[1:], frames.dtype, method, time_kernel=kt,
                             time_stride=ts, max_bytes=0)
    got = []
    for index, frame in enumerate(frames):
        got.extend(pooler.feed(frame.copy()))  # a decoder's new array per frame
        assert len(pooler._frames) <= kt
        # every window that ends at or before this frame has been given out
        assert len(got) == sum(1 for a, b in time_windows(t, kt, ts) if a + kt <= index + 1)
    got.extend(pooler.close())
    np.testing.assert_array_equal(np.stack(got), whole)


@settings(max_examples=40, deadline=None, derandomize=True)
@given(t=st.integers(1, 12), kt=st.integers(1, 3), ts=st.integers(1, 3),
       method=st.sampled_from(METHODS), dtype=st.sampled_from([np.uint8, np.uint16]),
       geometry=st.sampled_from([{"kernel_size": 2}, {"kernel_size": 3}, {"size": (3, 2)},
                                 {"kernel_size": 2, "stride": 1}]),
       frames_per_call=st.integers(1, 5), seed=st.integers(0, 2**16),
       options=st.sampled_from([{}, {"has_alpha": True}, {"linear": True}]))
def test_several_windows_in_one_call_give_each_windows_result(t, kt, ts, method, dtype, geometry,
                                                              frames_per_call, seed, options):
    """Small integer frames are pooled several time windows per kernel call (``max_bytes``):
    bit for bit what one call per window gives, the stochastic draws included, for frames
    whose height is and is not a multiple of the kernel, with alpha and linear light too."""
    # dpid takes no stride; a label method takes neither alpha nor linear light.
    assume(not ((method == "dpid" and "stride" in geometry)
                or (downpool.METHODS[method].labels and bool(options))))
    rng = np.random.default_rng(seed)
    frames = frames_of(rng, t, 6, 5, dtype, 3)
    kw = dict(time_kernel=kt, time_stride=ts, **geometry, **options)
    single = FrameDownscaler(frames.shape[1:], dtype, method, max_bytes=0, **kw)
    expected = [o for f in frames for o in single.feed(f)] + single.close()
    budget = frames_per_call * frames[0].nbytes
    for pooler, bound in ((FrameDownscaler(frames.shape[1:], dtype, method, max_bytes=budget, **kw),
                           kt + frames_per_call * max(kt, ts)),
                          (FrameDownscaler(frames.shape[1:], dtype, method, **kw), t)):
        got = []
        for frame in frames:
            got.extend(pooler.feed(frame.copy()))
            assert len(pooler._frames) <= bound
        got.extend(pooler.close())
        np.testing.assert_array_equal(np.stack(got), np.stack(expected))
    # and through downscale_frames, whose single frames are read in place
    np.testing.assert_array_equal(downscale_frames(frames, method, **kw), np.stack(expected))


@pytest.mark.parametrize("method", ["softpool", "dpid", "stochastic"])
def test_strips_of_converted_rows_give_the_whole_frames_result(monkeypatch, method):
    """With alpha, the time window's interleaved image is converted a strip at a time."""
    rng = np.random.default_rng(2)
    frames = frames_of(rng, 5, 13, 9, np.uint16, 4)
    kw = dict(time_kernel=2, kernel_size=2, has_alpha=True, linear=True)
    whole = downscale_frames(frames, method, **kw)
    monkeypatch.setattr(api, "STRIP_BYTES", 1)
    np.testing.assert_array_equal(downscale_frames(frames, method, **kw), whole)


def test_bad_arguments_are_value_errors():
    frames = np.zeros((3, 4, 4), np.uint8)
    for bad in (0, -1, 1.5, True, None):
        with pytest.raises(ValueError, match="time_kernel must be a positive integer"):
            downscale_frames(frames, "avg", time_kernel=bad)
    with pytest.raises(ValueError, match="time_stride must be a positive integer"):
        downscale_frames(frames, "avg", time_stride=0)
    with pytest.raises(ValueError, match="3-D .* or 4-D"):
        downscale_frames(np.zeros((4, 4), np.uint8), "avg")
    with pytest.raises(ValueError, match="empty axis"):
        downscale_frames(np.zeros((0, 4, 4), np.uint8), "avg")
    with pytest.raises(TypeError, match="not supported"):
        downscale_frames(np.zeros((2, 4, 4), np.int32), "avg")
    nan = np.zeros((3, 4, 4), np.float32)
    nan[2, 1, 1] = np.nan
    with pytest.raises(ValueError, match="frame 2 contains NaN"):
        downscale_frames(nan, "avg")
    with pytest.raises(ValueError, match="unknown method"):
        downscale_frames(frames, "median")
    pooler = FrameDownscaler((4, 4), np.uint8, "avg")
    with pytest.raises(ValueError, match="every frame must be uint8 of shape"):
        pooler.feed(np.zeros((4, 5), np.uint8))
    with pytest.raises(ValueError, match="no frames were fed"):
        pooler.close()


def test_shapes_keep_their_dimensions():
    gray = np.zeros((5, 8, 6), np.float32)
    assert downscale_frames(gray, "avg", time_kernel=2).shape == (3, 4, 3)
    rgb = np.zeros((5, 8, 6, 3), np.uint8)
    assert downscale_frames(rgb, "dpid", time_kernel=5, scale=0.5).shape == (1, 4, 3, 3)
    assert to_work(downscale_frames(rgb, "max", time_kernel=9)[0]).shape == (4, 3, 3)
