"""Matching: one price-time priority book per product, sequencing and market data."""

from fastapi import FastAPI

from services.matching.routes import router
from services.matching.settings import MatchingSettings
from services.matching.shard import ShardWorker
from shared.app import create_service_app
from shared.contracts import system_queues
from shared.runtime import ServiceRuntime


def create_app(settings: MatchingSettings | None = None) -> FastAPI:
    settings = settings or MatchingSettings()
    queues = {q.name: q for q in system_queues(settings.matching_shards)}
    workers = {
        shard: ShardWorker(
            shard,
            queues[f"matching.shard.{shard}"],
            snapshot_every=settings.snapshot_every,
            max_batch=settings.max_batch,
        )
        for shard in range(settings.matching_shards)
    }
    # Recovery compares replayed events with the published ones: the outbox stays.
    runtime = ServiceRuntime(
        "matching", settings, components=list(workers.values()), prune_outbox=False
    )
    app = create_service_app(runtime, title="Matching", routers=[router])
    app.state.shard_workers = workers
    app.state.shard_count = settings.matching_shards
    return app
