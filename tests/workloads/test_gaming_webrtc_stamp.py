"""The WebRTC baseline's input ack survives the trip its page reads it back from: drawn as
squares in the RGB picture, converted to NV12 (video range) like every frame, encoded by H.264
and decoded again, then read at each square's centre with the page's threshold."""

from __future__ import annotations

import av
import numpy as np
import pytest

from bench.gaming_webrtc import BITS, CELL, stamp
from workloads.gaming.encode import H264Encoder, to_picture


def read_back(rgb: np.ndarray) -> int:
    """What the page does: the red channel at each square's centre, above mid-grey is a 1."""
    centre = CELL // 2
    return sum(1 << bit for bit in range(BITS) if rgb[centre, bit * CELL + centre, 0] > 128)


@pytest.mark.parametrize("value", [0, 1, 2, 0b1010_0101_1100_0011_1001, (1 << BITS) - 1, 123_456])
def test_the_ack_drawn_in_the_corner_reads_back_after_h264(value: int) -> None:
    rng = np.random.default_rng(value)
    rgb = (rng.random((360, 640, 3)) * 255).astype(np.uint8)  # a busy picture around the squares
    stamp(rgb, value)
    encoder = H264Encoder(640, 360, 30, kbps=300, max_kbps=600, threads=1)  # a low bitrate: a blurry picture
    payload = encoder.encode(to_picture(rgb)).payload
    decoder = av.CodecContext.create("h264", "r")
    frames = list(decoder.decode(av.Packet(payload))) + list(decoder.decode(None))
    assert frames, "the encoder's first frame did not decode"
    assert read_back(frames[0].to_ndarray(format="rgb24")) == value


def test_only_the_low_bits_are_drawn() -> None:
    rgb = np.zeros((360, 640, 3), np.uint8)
    stamp(rgb, (1 << BITS) | 5)  # 2**20 inputs: far more than a bench row sends
    assert read_back(rgb) == 5
