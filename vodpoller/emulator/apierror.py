"""An error the emulator answers in the API's error envelope (HTTP 200, `Response.Error`)."""

from __future__ import annotations


class ApiError(Exception):
    """Answered as `{"Response": {"Error": {"Code", "Message"}, "RequestId"}}`."""

    def __init__(self, code: str, message: str):
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
