"""What every command group of the command line shares: the parser that raises instead of
exiting, the argument types that name what was wrong, printing the answer, and reaching a use
case in the container. Only the standard library and two dependency-free error modules are
imported here (start-up time: tests/test_startup_imports.py)."""
from __future__ import annotations

import argparse
import json
import math
import sys
from typing import TYPE_CHECKING, Any, Callable, NoReturn

from kaccy_bitcoin.domain.errors import DomainError

if TYPE_CHECKING:
    from kaccy_bitcoin.bootstrap.container import Container
    from kaccy_bitcoin.domain.money import FeeRate


class UsageError(Exception):
    code = "usage"


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def actions(group: argparse.ArgumentParser, dest: str = "action") -> Any:
    """The sub-commands of a command group (`withdraw create`, `withdraw sign`, ...)."""
    return group.add_subparsers(dest=dest, required=True, parser_class=Parser)


def positive_int(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        if not text.strip().isdigit():
            raise argparse.ArgumentTypeError(f"{name} must be a whole number, got {text!r}")
        return int(text)
    return parse


def signed_int(name: str) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            return int(text.strip())
        except ValueError:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number of sat, got {text!r}") from None
    return parse


def int_in_range(name: str, low: int, high: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        digits = text.strip()
        value = int(digits) if digits.isascii() and digits.isdigit() else None
        if value is None or not low <= value <= high:
            raise argparse.ArgumentTypeError(f"{name} must be a whole number from {low} to {high}, got {text!r}")
        return value
    return parse


def seconds(name: str) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = math.nan
        if not math.isfinite(value) or value <= 0:
            raise argparse.ArgumentTypeError(f"{name} must be a positive number of seconds, got {text!r}")
        return value
    return parse


def fee_rate(text: str) -> FeeRate:
    from kaccy_bitcoin.domain.money import FeeRate

    try:
        return FeeRate.from_sat_per_vb(text)
    except DomainError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def moment(text: str):  # noqa: ANN201
    """An ISO 8601 time (UTC unless it says) or Unix seconds."""
    import datetime as dt

    try:
        if text.strip().replace(".", "", 1).isdigit():
            return dt.datetime.fromtimestamp(float(text), dt.timezone.utc)
        value = dt.datetime.fromisoformat(text.strip())
    except (ValueError, OverflowError, OSError):
        raise argparse.ArgumentTypeError(f"--since must be an ISO 8601 time or Unix seconds, got {text!r}") from None
    return value.replace(tzinfo=dt.timezone.utc) if value.tzinfo is None else value


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj, separators=(", ", ": ")) + "\n")
    sys.stdout.flush()


async def resolved(provided: Any) -> Any:
    """What a provider gave: awaited when it is a coroutine (an async Resource's, or anything
    built from one)."""
    import inspect

    return await provided if inspect.isawaitable(provided) else provided


async def service(container: Container, name: str) -> Any:
    return await resolved(getattr(container.services, name)())
