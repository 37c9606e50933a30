"""The direct channel: tensors between router and replica over a plain TCP
connection, beside Serve's handle (``transport: direct`` on a version)."""

from rayfleet.platform.serving.channel.client import (
    ChannelClosed,
    DirectChannel,
    Endpoint,
    NoReplica,
    pick_replica,
)
from rayfleet.platform.serving.channel.server import ChannelServer, Handler

__all__ = [
    "ChannelClosed",
    "ChannelServer",
    "DirectChannel",
    "Endpoint",
    "Handler",
    "NoReplica",
    "pick_replica",
]
