"""moto's S3 server with every request handled under one lock.

moto checks `If-None-Match: *` and then writes the object without holding a lock, so under load two
concurrent conditional PUTs of the same key can both succeed. Real S3 makes that check atomic, and
Delta's put-if-absent commits depend on it: with plain moto the concurrency test can lose a commit
when the machine is busy. Serialising requests restores the atomicity; moto is GIL-bound anyway.
Arguments are moto_server's (-H HOST -p PORT).
"""

import threading

from moto import server
from moto.moto_server.werkzeug_app import DomainDispatcherApplication

_LOCK = threading.Lock()
_CALL = DomainDispatcherApplication.__call__


def _serialised(self, environ, start_response):
    with _LOCK:
        return _CALL(self, environ, start_response)


DomainDispatcherApplication.__call__ = _serialised

if __name__ == "__main__":
    server.main()
