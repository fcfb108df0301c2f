from pydantic import Field

from shared.config import CommonSettings


class MatchingSettings(CommonSettings):
    #: Commands between two snapshots of a shard's books.
    snapshot_every: int = Field(default=5000, ge=1)
    #: Commands applied (and committed) together at most.
    max_batch: int = Field(default=500, ge=1, le=10_000)
