"""Outgoing connections: the HTTP client factory every adapter opens its sessions with (the
SOCKS5 proxy of KACCY_PROXY applied there) and the Tor onion service of `serve --onion`."""
