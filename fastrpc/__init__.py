"""fastrpc: oslo.messaging-style RPC over RabbitMQ with a compiled hot path."""

__version__ = "0.1.0"
