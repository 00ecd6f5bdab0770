"""What a member's input is: the channels its net takes, and the multiple its H and W are padded to.

Both are measured on the source and the exported member rather than assumed: a net that fails on
the member's channel count but runs on the other is a channel mismatch named in one line, and the
size multiple is the smallest power of two the member runs at (`verify.size_multiple`).
"""

from __future__ import annotations

import math

import numpy as np

from ensemble.errors import EnsError
from exporters.request import ExportRequest
from exporters.source import LoadedSource
from exporters.verify import size_multiple


def net_channels(request: ExportRequest, source: LoadedSource) -> int:
    """The net's input channels: --channels, else what the model's input declares (Keras), else 3 with
    --gray-to-rgb and 1 (grayscale) without."""
    if request.channels is not None and source.channels is not None and request.channels != source.channels:
        raise EnsError(
            f"--channels {request.channels} differs from the model's input, which takes {source.channels} "
            "channel(s); drop --channels or pass the model's"
        )
    if request.gray_to_rgb and source.channels == 1:
        raise EnsError(
            "--gray-to-rgb copies a grayscale image into an RGB net's three inputs, but the model's input "
            "takes 1 channel; drop --gray-to-rgb (and --channels)"
        )
    return request.channels or source.channels or (3 if request.gray_to_rgb else 1)


def channel_mismatch(check) -> EnsError | None:
    """When the source failed on its first run, does it run with the other channel count? Then the
    net's input channels differ from the member's: say so in one line naming --channels."""
    fed = 3 if check.request.gray_to_rgb else check.pixels.shape[1]
    other = 1 if fed == 3 else 3
    probe = np.full((1, other, *check.pixels.shape[2:]), 0.5, np.float32)
    if check.source.channels_last:
        probe = probe.transpose(0, 2, 3, 1)
    try:
        check.source.run(np.ascontiguousarray(probe))
    except Exception:  # it fails either way: the channel count is not the problem
        return None
    if other == 3:
        return EnsError(
            "the net takes 3 input channels (RGB) but the member was to take 1 (grayscale, --channels 1, "
            "the default); pass --channels 3 for an RGB net, and add --gray-to-rgb to build the gray-to-RGB "
            "copy into the member so that it takes grayscale images and joins grayscale members"
        )
    given = "--gray-to-rgb" if check.request.gray_to_rgb else "--channels 3"
    return EnsError(
        f"the net takes 1 input channel (grayscale) but was fed 3 ({given}); drop {given} for a grayscale "
        "net (--channels 1, the default)"
    )


def padding_multiple(check, session, given: int | None) -> tuple[int, str]:
    """The multiple H and W are padded to: measured on the member (`verify.size_multiple`), or
    --size-multiple when it is a multiple of the measured one; and the note saying which."""
    measured, failed = size_multiple(session, check.pixels, check.probabilities, check.request.tolerance)
    why = f"; it does not run at {failed}" if failed else ""
    if given is None:
        return measured, f", in multiples of {measured} (measured{why})" if measured > 1 else ""
    if given % measured:
        raise EnsError(
            f"--size-multiple {given} is too small for this net: it needs H and W in multiples of "
            f"{measured} (measured{why}); pass --size-multiple {math.lcm(measured, given)}, "
            "or drop it to use the measured multiple"
        )
    return given, f", in multiples of {given} (--size-multiple; measured {measured})" if given > 1 else ""
