"""A loopback TCP relay that can be frozen: a database server that hangs, as seen by its clients."""

from __future__ import annotations

import select
import socket
import threading


class FreezableRelay:
    """Forwards 127.0.0.1:<port> to a target; while frozen it accepts and holds, forwarding nothing."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._thawed = threading.Event()
        self._thawed.set()
        self._stopping = False
        self._threads: list[threading.Thread] = []
        self._sockets: list[socket.socket] = []
        self._accept_thread = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> FreezableRelay:
        self._accept_thread.start()
        return self

    def freeze(self) -> None:
        """Stop forwarding (in both directions, on every connection, old and new)."""
        self._thawed.clear()

    def thaw(self) -> None:
        """Forward again."""
        self._thawed.set()

    def stop(self) -> None:
        self._stopping = True
        self._thawed.set()
        self._listener.close()
        for sock in self._sockets:
            try:
                sock.close()
            except OSError:
                pass

    def _accept(self) -> None:
        while not self._stopping:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            thread = threading.Thread(target=self._pump, args=(client,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _pump(self, client: socket.socket) -> None:
        self._thawed.wait()
        if self._stopping:
            client.close()
            return
        upstream = socket.create_connection(self._target, timeout=10)
        self._sockets += [client, upstream]
        peers = {client: upstream, upstream: client}
        try:
            for _ in range(10_000_000):  # bounded; ends when either side closes
                readable, _, _ = select.select(list(peers), [], [], 0.1)
                if not self._thawed.is_set():
                    self._thawed.wait()
                    continue
                for sock in readable:
                    data = sock.recv(65536)
                    if not data:
                        return
                    peers[sock].sendall(data)
        except (OSError, ValueError):
            return  # a side closed, or stop() closed a socket under select (its fd is then -1)
        finally:
            client.close()
            upstream.close()
