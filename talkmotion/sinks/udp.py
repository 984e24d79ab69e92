"""UDP plumbing shared by the network sinks (VMC, Live Link Face): addresses and sending.

UDP has no connection, so a receiver that is not running yet is normal (VSeeFace
started after the stream, Unreal still loading): its "port unreachable" replies
are counted, not fatal. What cannot work at all — a host name that does not
resolve, a network with no route — is an error at open, naming the host.
"""

from __future__ import annotations

import errno
import logging
import socket

from ..errors import TalkmotionError

log = logging.getLogger(__name__)


class SinkError(TalkmotionError, ValueError):
    """A live output that cannot be opened or written; the message names it and the cause."""


def parse_address(text: str, default_port: int, what: str, listen: bool = False) -> tuple[str, int]:
    """'HOST:PORT', 'HOST', ':PORT' or '[v6]:PORT' → (host, port); host defaults to 127.0.0.1.

    listen: the address is one to listen on, where port 0 means "any free port".
    """
    text = text.strip()
    host, port_text = text, ""
    if text.startswith("["):  # [IPv6]:port
        end = text.find("]")
        if end < 0:
            raise SinkError(f"{what} address {text!r}: missing ']' after the IPv6 host")
        host, rest = text[1:end], text[end + 1:]
        if rest and not rest.startswith(":"):
            raise SinkError(f"{what} address {text!r}: expected ':PORT' after ']'")
        port_text = rest[1:]
    elif text.count(":") == 1:
        host, port_text = text.split(":")
    host = host or "127.0.0.1"
    if not port_text:
        return host, default_port
    try:
        port = int(port_text)
    except ValueError:
        raise SinkError(f"{what} address {text!r}: port {port_text!r} is not a number") from None
    lowest = 0 if listen else 1
    if not lowest <= port < 65536:
        raise SinkError(f"{what} address {text!r}: port {port} is outside {lowest}-65535")
    return host, port


class UdpSender:
    """A connected UDP socket to one receiver.

    Connecting a UDP socket sends nothing; it resolves the host and checks there
    is a route, so an impossible destination fails here with a clear message.
    """

    def __init__(self, host: str, port: int, what: str):
        self.what, self.host, self.port = what, host, port
        self.refused = 0  # datagrams the receiver's host answered with "port unreachable"
        self.sent = 0
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_DGRAM)
        except socket.gaierror as err:
            raise SinkError(f"{what} {host}:{port}: cannot resolve host {host!r} ({err.strerror})") from None
        family, kind, proto, _, address = infos[0]
        self.sock = socket.socket(family, kind, proto)
        try:
            self.sock.connect(address)
        except OSError as err:
            self.sock.close()
            raise SinkError(f"{what} {host}:{port}: host unreachable ({err.strerror})") from None

    def send(self, datagram: bytes) -> None:
        try:
            self.sock.send(datagram)
            self.sent += 1
        except ConnectionRefusedError:
            # The previous datagram drew an ICMP "port unreachable": nobody listens yet.
            if self.refused == 0:
                log.warning("%s %s:%d: nothing is listening yet; still sending", self.what, self.host, self.port)
            self.refused += 1
        except OSError as err:
            if err.errno == errno.EMSGSIZE:
                raise SinkError(f"{self.what} {self.host}:{self.port}: datagram of {len(datagram)} bytes "
                                f"is too large to send") from None
            raise SinkError(f"{self.what} {self.host}:{self.port}: cannot send ({err.strerror})") from None

    def close(self) -> None:
        self.sock.close()
