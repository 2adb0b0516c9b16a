"""Rating producers: files, PostgreSQL and synthetic streams -> Kafka (see docs/producers.md)."""

from producers.producer import ProducerStats, RatingProducer, TokenBucket, replay
from producers.sources import file_chunks, implicit_from_ratings, limit_rows, time_ordered
from producers.synthetic import ML20M, SyntheticConfig, generate, plant

__all__ = [
    "ML20M",
    "ProducerStats",
    "RatingProducer",
    "SyntheticConfig",
    "TokenBucket",
    "file_chunks",
    "generate",
    "implicit_from_ratings",
    "limit_rows",
    "plant",
    "replay",
    "time_ordered",
]
