"""`serve --onion`: the HTTP API published as a Tor onion service (v3) through tor's control
port, with stem.

The service is ephemeral (ADD_ONION, not written in tor's configuration) and detached from our
control connection, so other controllers see it (GETINFO onions/detached); `serve` removes it when
it stops (DEL_ONION). Its ED25519 private key is kept in the data directory
(`tor/onion_service_key`, mode 0600, and the address beside it in `tor/hostname`), created on the
first start and given back to tor on every later one, so the address stays the same across
restarts; after a `serve` that could not remove it (killed), tor still holds it: the next start
removes that one and adds it again. Publication is not awaited: the address is known as soon as tor
accepts the key, and tor publishes the descriptor on its own once it has the network.
"""
from __future__ import annotations

import os
import pathlib
from typing import Any

from kaccy_bitcoin.adapters.net.errors import TorControlFailed

DEFAULT_CONTROL = "127.0.0.1:9051"
KEY_FILE = "onion_service_key"
HOSTNAME_FILE = "hostname"
VIRTUAL_PORT = 80      # the onion's port: http://<address>.onion/


def control_address(setting: str | None) -> tuple[str, int]:
    """KACCY_TOR_CONTROL (HOST:PORT, `[v6]:PORT`) as (host, port); tor's default when unset."""
    text = (setting or DEFAULT_CONTROL).strip()
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise TorControlFailed(f"KACCY_TOR_CONTROL must be HOST:PORT (tor's ControlPort, e.g. {DEFAULT_CONTROL}), "
                               f"got {text!r}")
    return host, int(port)


def _target(listen_host: str, port: int) -> str:
    """Where tor forwards the onion's connections: the API's address (a wildcard one as loopback)."""
    host = {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(listen_host, listen_host)
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


class OnionService:
    """One onion service for the API; `publish` returns its address, `close` withdraws it."""

    def __init__(self, control: str | None, password: str | None, data_dir: str) -> None:
        self._host, self._port = control_address(control)
        self._password = password or None
        self._key_path = pathlib.Path(data_dir) / "tor" / KEY_FILE
        self._hostname_path = self._key_path.with_name(HOSTNAME_FILE)
        self._controller: Any = None
        self.service_id: str | None = None

    @property
    def address(self) -> str | None:
        return f"{self.service_id}.onion" if self.service_id else None

    def publish(self, listen_host: str, port: int) -> str:
        """Connect to tor's control port, authenticate (cookie, or the password when one is set) and
        add the onion service forwarding to the API at `listen_host:port`. Blocking (stem)."""
        import logging

        import stem
        import stem.connection
        from stem.control import Controller

        logging.getLogger("stem").setLevel(logging.WARNING)   # stem logs every command it sends at debug

        where = f"tor's control port {self._host}:{self._port} (KACCY_TOR_CONTROL)"
        try:
            controller = Controller.from_port(address=self._host, port=self._port)
        except stem.SocketError as exc:
            raise TorControlFailed(f"cannot connect to {where}: {exc}") from None
        try:
            try:
                controller.authenticate(password=self._password)
            except (stem.connection.AuthenticationFailure, stem.SocketError) as exc:
                how = "the password KACCY_TOR_CONTROL_PASSWORD" if self._password else "cookie authentication"
                raise TorControlFailed(f"{where} refused {how}: {exc}") from None
            key_type, key_content = self._key()
            ports = {VIRTUAL_PORT: _target(listen_host, port)}
            try:
                left = self._left_behind() if key_type != "NEW" else None
                if left is not None and left in controller.list_ephemeral_hidden_services(detached=True):
                    controller.remove_ephemeral_hidden_service(left)   # a killed `serve` left it in tor
                try:
                    reply = controller.create_ephemeral_hidden_service(
                        ports, key_type=key_type, key_content=key_content, detached=True, await_publication=False)
                except stem.ControllerError as exc:
                    left = self._left_behind()
                    if "collision" not in str(exc).lower() or left is None:
                        raise
                    controller.remove_ephemeral_hidden_service(left)   # added meanwhile by another `serve`
                    reply = controller.create_ephemeral_hidden_service(
                        ports, key_type=key_type, key_content=key_content, detached=True, await_publication=False)
            except (stem.ControllerError, stem.SocketError) as exc:
                raise TorControlFailed(f"{where} refused to add the onion service: {exc}") from None
            self.service_id = reply.service_id
            if key_type == "NEW":
                self._save(self._key_path, f"{reply.private_key_type}:{reply.private_key}")
            self._save(self._hostname_path, f"{reply.service_id}.onion")
        except BaseException:
            self._controller = controller
            self.close()   # a service added but whose key could not be kept is withdrawn
            raise
        self._controller = controller
        return f"{reply.service_id}.onion"

    def _key(self) -> tuple[str, str]:
        """(key_type, key_content) for ADD_ONION: the kept key, or a new ED25519-V3 one."""
        try:
            kept = self._key_path.read_text().strip()
        except FileNotFoundError:
            return "NEW", "ED25519-V3"
        except OSError as exc:
            raise TorControlFailed(f"cannot read the onion service's key {self._key_path}: {exc}") from None
        key_type, sep, blob = kept.partition(":")
        if not sep or key_type != "ED25519-V3" or not blob:
            raise TorControlFailed(f"{self._key_path} does not hold an ED25519-V3 onion service key")
        return key_type, blob

    def _left_behind(self) -> str | None:
        """The service id of the address kept beside the key (that a killed `serve` left in tor)."""
        try:
            name = self._hostname_path.read_text().strip()
        except OSError:
            return None
        return name.removesuffix(".onion") or None

    def _save(self, path: pathlib.Path, text: str) -> None:
        """Written to a new file first, then renamed: a crash leaves the old content or the new."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
            partial = path.with_suffix(".new")
            fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text + "\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(partial, path)
        except OSError as exc:
            raise TorControlFailed(f"cannot keep the onion service's key in {path}: {exc}") from None

    def close(self) -> None:
        """Withdraw the service and close the control connection (blocking; never raises)."""
        controller, self._controller = self._controller, None
        if controller is None:
            return
        try:
            if self.service_id:
                controller.remove_ephemeral_hidden_service(self.service_id)
        except Exception:  # noqa: BLE001 - stopping; the next start takes a left-behind service back
            pass
        finally:
            self.service_id = None
            controller.close()
