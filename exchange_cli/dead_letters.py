"""`exchange dlq`: what failed delivery and why, and sending it back once fixed.

Imports of the broker stack happen inside the commands, so `exchange` starts light."""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from typing import TYPE_CHECKING, Any, TypeVar

import typer
from rich.console import Console

if TYPE_CHECKING:
    from shared.config import CommonSettings
    from shared.messaging.topology import QueueSpec, Topology

app = typer.Typer(help="Dead-letter queues: what failed delivery and why.", no_args_is_help=True)
console = Console(highlight=False)
T = TypeVar("T")

QUEUE = typer.Argument(help="The queue, as `exchange dlq list` names it.")


@app.command("list")
def dlq_list() -> None:
    """How many messages each queue's dead-letter queue holds."""
    from rich.table import Table

    from shared.contracts import system_queues
    from shared.messaging.dead_letters import depths

    settings = _settings()
    queues = system_queues(settings.matching_shards)
    counts = _on_broker(settings, depths(settings.amqp_url, _topology(settings), queues))
    table = Table("queue", "dead letters")
    for name, count in counts.items():
        table.add_row(name, "not declared" if count < 0 else str(count))
    console.print(table)


@app.command("show")
def dlq_show(
    queue: str = QUEUE,
    limit: int = typer.Option(10, min=1, max=1000, help="At most this many messages."),
) -> None:
    """The first messages of a queue's dead-letter queue, decoded (bundles inflated into
    their envelopes), as JSON lines. They stay on the queue."""
    import orjson

    from shared.messaging.dead_letters import peek

    settings = _settings()
    spec = _queue_spec(settings, queue)
    letters = _on_broker(settings, peek(settings.amqp_url, _topology(settings), spec, limit))
    for letter in letters:
        typer.echo(orjson.dumps(letter, option=orjson.OPT_SORT_KEYS).decode())
    typer.echo(f"{len(letters)} dead letter(s) shown from {queue}", err=True)


@app.command("replay")
def dlq_replay(
    queue: str = QUEUE,
    limit: int = typer.Option(100, min=1, max=100_000, help="At most this many messages."),
    yes: bool = typer.Option(False, "--yes", help="Do not ask for confirmation."),
) -> None:
    """Send a queue's dead letters back to it, oldest first, once what made them fail is
    fixed. Each is removed from the dead-letter queue only after the broker confirmed its
    copy; the consumers' inboxes drop anything they already applied."""
    from shared.messaging.dead_letters import replay

    settings = _settings()
    spec = _queue_spec(settings, queue)
    if not yes:
        typer.confirm(f"Send up to {limit} dead letters back to {queue}?", abort=True)
    moved = _on_broker(settings, replay(settings.amqp_url, _topology(settings), spec, limit))
    console.print(f"{moved} dead letter(s) sent back to {queue}")


def _settings() -> CommonSettings:
    from shared.config import CommonSettings

    return CommonSettings()


def _topology(settings: CommonSettings) -> Topology:
    from shared.messaging.topology import Topology

    return Topology(settings.broker_prefix)


def _queue_spec(settings: CommonSettings, queue: str) -> QueueSpec:
    from shared.contracts import system_queues

    specs = {spec.name: spec for spec in system_queues(settings.matching_shards)}
    if queue not in specs:
        console.print(f"[red]no queue {queue!r}; one of: {', '.join(specs)}[/red]")
        raise typer.Exit(code=2)
    return specs[queue]


def _on_broker(settings: CommonSettings, work: Coroutine[Any, Any, T]) -> T:
    """Run a look at the broker. An unreachable broker, or a dead-letter queue no service
    has declared yet, is a one-line error (exit 2)."""
    from aio_pika.exceptions import AMQPConnectionError

    from shared.messaging.dead_letters import NotDeclared

    try:
        return asyncio.run(work)
    except NotDeclared as exc:
        console.print(f"[red]{exc.args[0]} is not declared: no service has started yet[/red]")
    except (AMQPConnectionError, OSError) as exc:
        console.print(f"[red]RabbitMQ unreachable at {settings.amqp_url}: {exc}[/red]")
    raise typer.Exit(code=2)
