"""fastrpc: oslo.messaging-style RPC over RabbitMQ with a compiled hot path."""

from fastrpc._version import __version__
from fastrpc.client import RPCClient, get_rpc_client
from fastrpc.dispatcher import (
    DefaultRPCAccessPolicy,
    ExplicitRPCAccessPolicy,
    LegacyRPCAccessPolicy,
    RPCAccessPolicyBase,
    RPCDispatcher,
    expected_exceptions,
    expose,
)
from fastrpc.exceptions import (
    AuthenticationError,
    BrokerError,
    BrokerRefused,
    CallInterrupted,
    ClientSendError,
    ConfigurationError,
    DeclarationRefused,
    DriverLoadFailure,
    ExecutorLoadFailure,
    ExpectedException,
    InvalidTarget,
    InvalidTransportURL,
    MessageDeliveryFailure,
    MessageUndeliverable,
    MessagingException,
    MessagingServerError,
    MessagingTimeout,
    MetricsExporterError,
    NoSuchMethod,
    NotificationPayloadError,
    RemoteError,
    RPCDispatcherError,
    RPCVersionCapError,
    ServerListenError,
    TransportDriverError,
    UnsupportedVersion,
    VirtualHostRefused,
)
from fastrpc.notify import (
    NotificationFilter,
    NotificationResult,
    NotificationTransport,
    Notifier,
    get_batch_notification_listener,
    get_notification_listener,
    get_notification_transport,
)
from fastrpc.options import Options
from fastrpc.serializer import JsonPayloadSerializer, NoOpSerializer, RequestContextSerializer, Serializer
from fastrpc.server import RPCServer, get_rpc_server
from fastrpc.target import Target
from fastrpc.transport import (
    RPCTransport,
    Transport,
    TransportHost,
    TransportOptions,
    TransportURL,
    get_rpc_transport,
    get_transport,
)

__all__ = [
    "AuthenticationError", "BrokerError", "BrokerRefused", "CallInterrupted", "ClientSendError", "DeclarationRefused", "ConfigurationError", "DefaultRPCAccessPolicy", "DriverLoadFailure",
    "ExecutorLoadFailure", "ExpectedException", "ExplicitRPCAccessPolicy", "InvalidTarget",
    "InvalidTransportURL", "JsonPayloadSerializer", "LegacyRPCAccessPolicy", "MessageDeliveryFailure",
    "MessageUndeliverable", "MessagingException", "MessagingServerError", "MessagingTimeout", "MetricsExporterError",
    "NoOpSerializer", "NoSuchMethod", "NotificationFilter", "NotificationPayloadError", "NotificationResult",
    "NotificationTransport", "Notifier", "Options", "RPCAccessPolicyBase", "RPCClient", "RPCDispatcher",
    "RPCDispatcherError", "RPCServer", "RPCTransport", "RPCVersionCapError", "RemoteError",
    "RequestContextSerializer", "Serializer", "ServerListenError", "Target", "Transport",
    "TransportDriverError", "TransportHost", "TransportOptions", "TransportURL", "UnsupportedVersion", "VirtualHostRefused",
    "__version__",
    "expected_exceptions", "expose", "get_batch_notification_listener", "get_notification_listener",
    "get_notification_transport", "get_rpc_client", "get_rpc_server", "get_rpc_transport",
    "get_transport",
]
