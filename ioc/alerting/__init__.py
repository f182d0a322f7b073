"""Alert model shared by the alerts stage, the dispatcher and every channel (no I/O here)."""
