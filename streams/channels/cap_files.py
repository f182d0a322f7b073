"""CAP file channel: one CAP 1.2 XML file per notification, for feeds served from a directory.

Each file is written to a temporary name in the same directory, flushed to disk and renamed
into place, so a reader (a web server publishing the feed) never sees a half-written document.
The name is ``<notification_id>.xml`` and the content depends only on the notification, so a
second delivery rewrites identical bytes: the channel is idempotent.
"""

from __future__ import annotations

import asyncio
import errno
import os
import re
import tempfile
from pathlib import Path

from ioc.alerting import cap
from ioc.alerting.notification import DeliveryError, Notification

_SAFE_ID = re.compile(r"[A-Za-z0-9_-]{1,128}")
# A full disk or a flaky network mount may recover; a permission or path problem will not.
_PERMANENT = {errno.EACCES, errno.EPERM, errno.EROFS, errno.ENOTDIR, errno.EEXIST, errno.ENAMETOOLONG}


class CapFileChannel:
    def __init__(self, directory: Path | str, *, profile: cap.CapProfile | None = None, name: str = "cap") -> None:
        self.name = name
        self.directory = Path(directory)
        self._profile = profile or cap.CapProfile()

    def path_for(self, n: Notification) -> Path:
        if not _SAFE_ID.fullmatch(n.notification_id):
            raise DeliveryError(
                f"notification id {n.notification_id[:80]!r} is not a safe file name", retryable=False
            )
        return self.directory / f"{n.notification_id}.xml"

    def _write(self, n: Notification) -> None:
        target = self.path_for(n)
        try:
            data = cap.render_notification(n, self._profile)
        except (ValueError, TypeError) as e:  # an unknown event or a naive time: retrying cannot help
            raise DeliveryError(f"cannot render notification {n.notification_id}: {e}", retryable=False) from e
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            if target.exists() and target.read_bytes() == data:
                return  # already delivered, identical: nothing to do
            fd, tmp = tempfile.mkstemp(prefix=f".{n.notification_id}.", suffix=".tmp", dir=self.directory)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.chmod(tmp, 0o644)  # mkstemp makes 0600; feed servers must be able to read it
                os.replace(tmp, target)
            except BaseException:
                Path(tmp).unlink(missing_ok=True)
                raise
            _fsync_dir(self.directory)
        except OSError as e:
            raise DeliveryError(
                f"cannot write {target}: {e.strerror or e}", retryable=e.errno not in _PERMANENT
            ) from e

    async def deliver(self, n: Notification) -> None:
        await asyncio.to_thread(self._write, n)

    async def close(self) -> None:
        return None


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (POSIX); best effort where directories cannot be opened."""
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
