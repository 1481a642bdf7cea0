"""vodpoller: Tencent Cloud VOD event notifications (reliable callback) into SQL, exactly once."""

__version__ = "0.1.0"
