"""Settings for every test process (loaded before any test module, so before grpc is imported).

``GRPC_VERBOSITY=ERROR``: gRPC's C core logs at INFO, straight to the process's stderr, a line such as
``chttp2_transport.cc:... Got goaway [2] err=UNAVAILABLE:GOAWAY received`` when a client's connection gets a
server's GOAWAY (a fake or real party server stopped by a test). Errors are still printed; set
``GRPC_VERBOSITY=INFO`` (or ``DEBUG``) in the environment to see everything again. Child processes (the parties and
the demo the tests start) inherit it.
"""

from __future__ import annotations

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
