"""Exactly-once effects over at-least-once RabbitMQ: envelope, topology, broker, outbox, inbox."""
