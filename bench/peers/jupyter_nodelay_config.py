"""Jupyter server config for the "nodelay" runs of `make bench-peers`: TCP_NODELAY on kernel sockets.

Tornado leaves Nagle's algorithm on for WebSocket connections (``WebSocketHandler.set_nodelay``
is off by default) and jupyter_server does not turn it off. A cell's answer is several small
frames written one after another (status busy, execute_input, the result, status idle, the
execute_reply): Nagle holds each frame after the first until the client ACKs the previous
segment, and the client, with nothing to send back, delays that ACK (Linux: at least 40 ms).
Setting TCP_NODELAY on the server's side of the kernel WebSocket, once it is open, removes that
wait; nothing else changes. Loaded with ``jupyter server --config=<this file>``.
"""

from jupyter_server.services.kernels.connection.channels import ZMQChannelsWebsocketConnection


class NoDelayConnection(ZMQChannelsWebsocketConnection):
    """The default kernel WebSocket connection, with TCP_NODELAY on its socket."""

    def connect(self):  # type: ignore[no-untyped-def]
        self.websocket_handler.set_nodelay(True)
        return super().connect()


c = get_config()  # type: ignore[name-defined]  # noqa: F821 - provided by traitlets when loading
c.ServerApp.kernel_websocket_connection_class = NoDelayConnection
