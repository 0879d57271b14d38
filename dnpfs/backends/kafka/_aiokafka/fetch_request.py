"""aiokafka's FetchRequest with an incremental fetch session's fields
(KIP-227): aiokafka always sends session 0, epoch -1 (no session) and names
no forgotten partitions; the fetcher's ``Session`` decides them.

Leans on the struct aiokafka builds (its ``__dict__`` fields), listed in
``_aiokafka.INTERNALS``.
"""

from __future__ import annotations

from aiokafka.protocol.fetch import FetchRequest


class SessionFetchRequest(FetchRequest):
    """*decode_v11*: what reads a v11 response in place (handed to
    ``frames.FetchConnection`` as ``decode_frame``); the rest are
    FetchRequest's arguments."""

    def __init__(self, session_id: int, epoch: int, forgotten: list[str], decode_v11,
                 *args) -> None:
        super().__init__(*args)
        self._session = (session_id, epoch, [(topic, [0]) for topic in forgotten])
        self._decode_v11 = decode_v11

    def build(self, request_struct_class):
        struct = super().build(request_struct_class)
        if request_struct_class.API_VERSION >= 7:
            session_id, epoch, forgotten = self._session
            struct.__dict__.update(session_id=session_id, session_epoch=epoch,
                                   forgotten_topics_data=forgotten)
        if request_struct_class.API_VERSION == 11:
            struct.decode_frame = self._decode_v11
        return struct
