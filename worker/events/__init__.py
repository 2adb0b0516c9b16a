"""Rating/interaction event schema, batched decoder and dead-letter records (I/O-free).

See docs/event-schema.md for the wire formats.
"""

from worker.events.binary import (
    KIND_EVENT,
    KIND_RATING,
    KIND_WEIGHT,
    MAGIC,
    VERSION,
    decode_binary,
    encode_binary,
)
from worker.events.decode import DecodedBatch, RawValue, RejectRow, decode_batch, encode_json
from worker.events.dlq import DLQ_MAX_VALUE_BYTES, dead_letter_key, dead_letter_record
from worker.events.schema import (
    DEFAULT_EVENT_WEIGHTS,
    DLQ_REASONS,
    INTERNAL,
    MILLIS_THRESHOLD,
    REASONS,
    DecodeConfig,
    Mode,
)

__all__ = [
    "DEFAULT_EVENT_WEIGHTS",
    "DLQ_MAX_VALUE_BYTES",
    "DLQ_REASONS",
    "INTERNAL",
    "KIND_EVENT",
    "KIND_RATING",
    "KIND_WEIGHT",
    "MAGIC",
    "MILLIS_THRESHOLD",
    "REASONS",
    "VERSION",
    "DecodeConfig",
    "DecodedBatch",
    "Mode",
    "RawValue",
    "RejectRow",
    "dead_letter_key",
    "dead_letter_record",
    "decode_batch",
    "decode_binary",
    "encode_binary",
    "encode_json",
]
