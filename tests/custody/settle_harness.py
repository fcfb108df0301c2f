"""Apply one settlement batch in a process of its own, so a test can kill it mid-batch.

    python tests/custody/settle_harness.py <request.json>

Configuration from the EXCHANGE_* environment; EXCHANGE_CRASH_AT=settlement_mid_batch (or
settlement_before_commit) makes the process SIGKILL itself inside the transaction.
"""

import asyncio
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

import orjson

from services.custody import settlement
from services.custody.schemas import SettlementBatchRequest
from services.custody.settings import CustodySettings
from shared.db import make_engine, make_session_factory, unit_of_work


async def main(body: SettlementBatchRequest) -> None:
    settings = CustodySettings()
    engine = make_engine(settings.database_url, pool_size=1)
    async with unit_of_work(make_session_factory(engine)) as session:
        result, applied = await settlement.apply_batch(session, body, settings)
    print("applied" if applied else "repeat", result["trade_count"], flush=True)
    await engine.dispose()


if __name__ == "__main__":
    request = orjson.loads(Path(sys.argv[1]).read_bytes())
    asyncio.run(main(SettlementBatchRequest.model_validate(request)))
