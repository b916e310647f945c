"""Card decoders: one raw frame from a reader → exactly one verdict (never imports app/).

`decode(frame, options, today)` gives `id` (a loyalty ID), `dl` (a driver licence: only over_21
and age), `reject` (with a reason) or `ignore` (an empty frame). `connectbox card decode` is
`drivers.decoding.cli`.
"""

from .decoder import decode
from .verdict import DecodeOptions, Verdict

__all__ = ["DecodeOptions", "Verdict", "decode"]
