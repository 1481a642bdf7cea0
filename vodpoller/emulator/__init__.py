"""The local VOD emulator: TC3 signature check, per-application lease queues, an HTTP front."""
