"""Throwaway RabbitMQ brokers (and a PostgreSQL server) for tests, demos and benchmarks."""

from .certs import CertificateError, TLSFiles
from .cluster import ClusterStatus, RabbitCluster, RabbitClusterError
from .epmd import Epmd, EpmdError
from .external import ExternalBroker
from .firewall import FirewallError, LoopbackFirewall
from .node import RabbitNode, RabbitNodeError
from .ports import amqp_answers, free_ports
from .postgres import PostgresServer, PostgresServerError
from .proxy import ProxyConnection, ProxyError, TcpProxy

__all__ = [
    "CertificateError",
    "ClusterStatus",
    "Epmd",
    "EpmdError",
    "ExternalBroker",
    "FirewallError",
    "LoopbackFirewall",
    "PostgresServer",
    "PostgresServerError",
    "ProxyConnection",
    "ProxyError",
    "RabbitCluster",
    "RabbitClusterError",
    "RabbitNode",
    "RabbitNodeError",
    "TLSFiles",
    "TcpProxy",
    "amqp_answers",
    "free_ports",
]
