"""Mailboxes in pymap's in-memory ``dict`` backend, served over implicit-TLS IMAP in this loop."""

from __future__ import annotations

import asyncio
import logging
import ssl
from argparse import Namespace
from collections.abc import Iterable
from contextlib import AsyncExitStack, closing
from datetime import UTC, datetime

from proxyprotocol.reader import ProxyProtocolReader
from proxyprotocol.sock import SocketInfo
from proxyprotocol.version import ProxyProtocolVersion
from pymap.backend.dict import Config, FilterSet, Login
from pymap.backend.dict.mailbox import MailboxSet
from pymap.concurrent import Subsystem
from pymap.context import connection_exit, subsystem
from pymap.imap import IMAPConnection, IMAPServer
from pymap.imap.state import ConnectionState
from pymap.parsing.message import AppendMessage
from pymap.parsing.response import CommandResponse, Response, ResponseOk
from pymap.user import Passwords, UserMetadata
from pysasl.hashing import BuiltinHash

# pymap logs every IMAP line at DEBUG, LOGIN passwords included: keep that logger above DEBUG
# even when an application turns on debug logging globally (secrets never reach logs).
logging.getLogger("pymap.imap").setLevel(logging.INFO)

# Microsoft 365's default folder names (the probe is configured with these names, since pymap
# has no SPECIAL-USE to announce \Junk etc.).
FOLDERS = ("Junk Email", "Sent Items", "Deleted Items")


class _Config(Config):
    """The dict backend's config with a fixed greeting (pymap's default calls getfqdn())."""

    @property
    def greeting(self) -> bytes:
        return b"Server ready outlook.demo.test (relayprobe embedded)"


class _BatchedConnection(IMAPConnection):
    """Writes each batch of IDLE updates in one write, as Dovecot and Exchange do.

    pymap writes (and drains) every untagged line separately, so "* 3 EXISTS" and "* 3 FETCH
    (FLAGS ())" may reach the client in separate TLS records; IMAPClient's idle_check() reads a
    non-blocking socket and then mis-parses the half-arrived second line (mjs/imapclient#519),
    making idle_done() abort about once in 20 wake-ups.
    """

    async def write_updates(self, untagged: Iterable[Response]) -> None:
        buffer = _Buffer()
        for response in untagged:
            await response.async_write(buffer)
        if buffer.parts:
            try:
                self.writer.write(b"".join(buffer.parts))
                await self.writer.drain()
            except ConnectionError:
                pass


class _Buffer:
    def __init__(self) -> None:
        self.parts: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.parts.append(bytes(data))


class _StrictState(ConnectionState):
    """No LOGIN before STARTTLS, even from loopback.

    pymap, like Dovecot, treats a loopback client as secured and offers LOGIN in plain text;
    outlook.office365.com never does, and the probe's "never send a password in clear" must be
    testable here.
    """

    async def do_greeting(self) -> CommandResponse:
        await super().do_greeting()
        self.auth = self.config.initial_auth  # no mechanisms until STARTTLS -> LOGINDISABLED
        return ResponseOk(b"*", self.config.greeting, self.capability)


class _Server(IMAPServer):
    """pymap's IMAPServer.__call__, with the batching connection and a chosen state class."""

    def __init__(
        self,
        login: Login,
        config: _Config,
        state_class: type[ConnectionState] = ConnectionState,
    ) -> None:
        super().__init__(login, config)
        self.state_class = state_class

    async def __call__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sock_info: SocketInfo
    ) -> None:
        conn = _BatchedConnection(self.commands, self._config, reader, writer, sock_info)
        state = self.state_class(self._login, self._config)
        async with AsyncExitStack() as stack:
            connection_exit.set(stack)
            stack.enter_context(closing(conn))
            await conn.run(state)


class MailStore:
    """Users with INBOX + FOLDERS, delivery from Python, and an IMAP listener (implicit TLS).

    pymap keeps each user's MailboxSet in ``config.set_cache``; a session created by an IMAP
    LOGIN picks up the very set we fill here, so ``deliver`` is seen by IDLE at once
    (MailboxData.append sets the mailbox's update event).
    """

    def __init__(self, ssl_context: ssl.SSLContext) -> None:
        self._ssl_context = ssl_context
        self.config = self._make_config(tls_enabled=False)  # implicit TLS: no STARTTLS offered
        # Sessions take mailboxes from login.config.set_cache, so both listeners share them.
        self.login = Login(self.config)
        self._servers: list[asyncio.AbstractServer] = []
        self._sessions: set[asyncio.Task[None]] = set()

    def _make_config(self, *, tls_enabled: bool) -> _Config:
        # Demo passwords are throw-away: 1000 PBKDF2 rounds keep LOGIN fast (pymap's default of
        # 500000 costs ~0.3 s per login), and hashing runs in the loop, so no thread pool to leak.
        return _Config(
            Namespace(passlib_cfg=None, proxy_protocol=None, inherited_sockets=None),
            host=None,
            port=0,
            demo_data=False,
            demo_user="",
            demo_password="",
            tls_enabled=tls_enabled,
            ssl_context=self._ssl_context,
            hash_context=BuiltinHash(rounds=1000),
            cpu_subsystem=Subsystem.for_asyncio(),
            invalid_user_sleep=0.1,
            reject_dnsbl=False,
            proxy_protocol=ProxyProtocolVersion.get(None),
        )

    async def add_user(self, address: str, password: str) -> None:
        """Create (or replace) a login and its mailboxes, all empty."""
        hashed = await Passwords(self.config).hash_password(password)
        self.login.users_dict[address] = UserMetadata(self.config, address, password=hashed)
        mailbox_set = MailboxSet()
        for name in FOLDERS:
            await mailbox_set.add_mailbox(name)
            await mailbox_set.set_subscribed(name, True)
        self.config.set_cache[address] = (mailbox_set, FilterSet())

    def has_user(self, address: str) -> bool:
        return address in self.login.users_dict

    async def deliver(self, address: str, folder: str, message: bytes) -> int:
        """Append a message as \\Recent to a user's folder; returns its UID."""
        mailbox_set, _filters = self.config.set_cache[address]
        mailbox = await mailbox_set.get_mailbox(folder)
        appended = await mailbox.append(
            AppendMessage(message, datetime.now(UTC), frozenset()), recent=True
        )
        return appended.uid

    async def folder_uids(self, address: str, folder: str) -> list[int]:
        """UIDs currently in a folder (for tests and the demo's own checks)."""
        mailbox_set, _filters = self.config.set_cache[address]
        mailbox = await mailbox_set.get_mailbox(folder)
        return [msg.uid async for msg in mailbox.messages()]

    async def start(self, host: str, port: int) -> int:
        """Listen with implicit TLS on host:port (0 = any free port); returns the real port."""
        self.config.apply_context()
        subsystem.set(Subsystem.for_asyncio())
        return await self._listen(_Server(self.login, self.config), host, port, self._ssl_context)

    async def start_starttls(self, host: str, port: int) -> int:
        """Listen in plain text with STARTTLS required before LOGIN; returns the real port."""
        config = self._make_config(tls_enabled=True)
        server = _Server(self.login, config, state_class=_StrictState)
        return await self._listen(server, host, port, None)

    async def _listen(
        self, imap_server: _Server, host: str, port: int, ssl_context: ssl.SSLContext | None
    ) -> int:
        async def session(
            reader: asyncio.StreamReader, writer: asyncio.StreamWriter, sock_info: SocketInfo
        ) -> None:
            # Tracked so stop() can end sessions parked in IDLE (server.close() leaves them).
            task = asyncio.current_task()
            assert task is not None
            self._sessions.add(task)
            try:
                await imap_server(reader, writer, sock_info)
            finally:
                self._sessions.discard(task)

        # The no-op PROXY reader builds the SocketInfo pymap wants; it runs `session` as a task.
        callback = ProxyProtocolReader(self.config.proxy_protocol).get_callback(session)
        server = await asyncio.start_server(
            callback,
            host=host,
            port=port,
            ssl=ssl_context,
            ssl_handshake_timeout=10 if ssl_context else None,
        )
        self._servers.append(server)
        return int(server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        servers, self._servers = self._servers, []
        for server in servers:
            server.close()
        # Cancelled sessions answer "* BYE ... UNAVAILABLE" (pymap's own shutdown path); done
        # before wait_closed(), which on newer Pythons waits for every open connection.
        for task in list(self._sessions):
            task.cancel()
        if self._sessions:
            await asyncio.wait(list(self._sessions), timeout=5)
        for server in servers:
            await server.wait_closed()
