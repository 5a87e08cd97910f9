"""Conversions between the codec's Payload / (height, width) sizes and the wire messages.

One place for them, so that the device's uplink and the edge's front doors cannot disagree.
"""

from __future__ import annotations

from shared.codecs import CodecId, Payload
from shared.wire import pb

Size = tuple[int, int]  # (height, width)


def latent_message(payload: Payload) -> pb.Latent:
    return pb.Latent(
        codec=pb.Codec.Name(payload.codec), shape=list(payload.shape), strings=payload.strings
    )


def latent_payload(latent: pb.Latent) -> Payload:
    """The Payload a latent message declares (its codec id is checked by `CodecId`)."""
    return Payload(CodecId(latent.codec), tuple(latent.shape), tuple(latent.strings))


def image_size(size: Size) -> pb.ImageSize:
    return pb.ImageSize(height=size[0], width=size[1])


def size_of(message: pb.ImageSize) -> Size:
    return (message.height, message.width)
