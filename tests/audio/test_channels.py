"""A HAT's 32-bit, multi-channel blocks become the ring's int16 mono: scaling, rounding, mixing."""

import numpy as np
import pytest

from appliance.audio.channels import ChannelPlan, int32_to_int16, mix, plan_for

I32_MAX, I32_MIN = 2**31 - 1, -(2**31)


def interleave(*channels: np.ndarray) -> bytes:
    return np.stack(channels, axis=1).astype("<i4").tobytes()


def test_int32_scales_to_int16_rounding_to_nearest_with_halves_up() -> None:
    x = np.array([0, 32767, 32768, 65535, 65536, -32768, -32769, -65536, 3 * 65536 + 40000])
    assert int32_to_int16(x).tolist() == [0, 0, 1, 1, 1, 0, -1, -1, 4]


def test_int32_full_scale_is_held_at_int16_full_scale_not_wrapped() -> None:
    x = np.array([I32_MAX, I32_MAX - 32768, I32_MIN, I32_MIN + 1], dtype=np.int32)
    assert int32_to_int16(x).tolist() == [32767, 32767, -32768, -32768]


def test_every_int16_value_shifted_into_int32_comes_back_exactly() -> None:
    x = np.arange(-32768, 32768, dtype=np.int32)
    np.testing.assert_array_equal(int32_to_int16(x << 16), x)


def test_mix_is_the_rounded_mean_of_the_chosen_channels() -> None:
    frames = np.array([[1, 2, 100], [1, 1, 100], [-1, -2, 100], [32767, 32767, 0]])
    assert mix(frames, (0, 1), "int16").tolist() == [2, 1, -1, 32767]


def test_mixing_full_scale_channels_never_clips_or_wraps() -> None:
    top = np.full(4, I32_MAX, dtype=np.int64)
    bottom = np.full(4, I32_MIN, dtype=np.int64)
    frames = np.stack([top, top, bottom, bottom], axis=1)
    assert mix(frames, (0, 1), "int32").tolist() == [32767] * 4
    assert mix(frames, (2, 3), "int32").tolist() == [-32768] * 4
    assert mix(frames, (0, 1, 2, 3), "int32").tolist() == [0] * 4


def test_one_int32_channel_of_four_is_kept_alone() -> None:
    n = np.arange(6, dtype=np.int64)
    block = interleave(n << 16, (n + 100) << 16, (n + 200) << 16, (n + 300) << 16)
    assert ChannelPlan("int32", 4, (2,)).to_ring(block).tolist() == [200, 201, 202, 203, 204, 205]


def test_a_listed_mix_of_int32_channels_ignores_the_others() -> None:
    ones = np.full(3, 1000 << 16)
    block = interleave(ones, ones * 9, ones * 3, np.full(3, I32_MAX))
    assert ChannelPlan("int32", 4, (0, 2)).to_ring(block).tolist() == [2000] * 3


def test_int16_single_channel_is_a_view_of_the_block() -> None:
    block = np.array([5, -5, 7], dtype="<i2").tobytes()
    samples = ChannelPlan("int16", 1, (0,)).to_ring(block)
    assert samples.dtype == np.int16 and samples.tolist() == [5, -5, 7]
    assert not samples.flags.owndata


def test_plan_opens_just_enough_channels_for_the_one_kept() -> None:
    assert plan_for("int16", 1, None, None, 2) == ChannelPlan("int16", 2, (1,))
    assert plan_for("int32", 0, [1, 3], None, 8) == ChannelPlan("int32", 4, (1, 3))


def test_plan_to_mix_all_opens_what_the_device_has_unless_told() -> None:
    assert plan_for("int32", 0, [], None, 4) == ChannelPlan("int32", 4, (0, 1, 2, 3))
    assert plan_for("int32", 0, [], 2, 8) == ChannelPlan("int32", 2, (0, 1))


@pytest.mark.parametrize(
    ("channels", "used"), [(2, (2,)), (4, (1, 1)), (4, ()), (0, (0,)), (4, (-1,))]
)
def test_plan_refuses_channels_it_cannot_keep(channels: int, used: tuple[int, ...]) -> None:
    with pytest.raises(ValueError):
        ChannelPlan("int32", channels, used)


def test_plan_describes_format_channels_and_what_is_kept() -> None:
    assert ChannelPlan("int32", 4, (0, 1, 2, 3)).describe() == "S32_LE, 4 channels, mix of 0,1,2,3"
    assert ChannelPlan("int16", 1, (0,)).describe() == "S16_LE, 1 channel, channel 0"
