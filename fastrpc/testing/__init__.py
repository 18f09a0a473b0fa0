"""Throwaway RabbitMQ brokers for tests, demos and benchmarks."""

from .certs import CertificateError, TLSFiles
from .epmd import Epmd, EpmdError
from .external import ExternalBroker
from .node import RabbitNode, RabbitNodeError
from .ports import amqp_answers, free_ports

__all__ = [
    "CertificateError",
    "Epmd",
    "EpmdError",
    "ExternalBroker",
    "RabbitNode",
    "RabbitNodeError",
    "TLSFiles",
    "amqp_answers",
    "free_ports",
]
