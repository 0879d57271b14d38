"""One readable line for what aiokafka raises."""

from __future__ import annotations

from aiokafka.errors import KafkaError, KafkaTimeoutError

from ...errors import DnpfsError


def describe_error(e: BaseException) -> str:
    """One readable line for an aiokafka error."""
    if isinstance(e, DnpfsError):
        return str(e)
    if isinstance(e, TimeoutError | KafkaTimeoutError):
        return "no answer in time"
    text = str(e).strip()
    name = type(e).__name__
    if isinstance(e, KafkaError) and text.startswith("[Error"):
        return text
    return f"{name}: {text}" if text and not text.startswith(name) else (text or name)
