"""edgeslim: compress a neural network until it meets a latency budget measured on the device.

The host (this package) knows no particular technique or backend; those are
plugins (``edgeslim.plugins``, ``edgeslim.targets`` and third-party packages
registered under the ``edgeslim`` entry-point group).
"""

import pluggy

__version__ = "0.1.0"

#: Decorator for plugin functions implementing a hook from :mod:`edgeslim.hookspecs`.
hookimpl = pluggy.HookimplMarker("edgeslim")

from edgeslim.task import Task  # noqa: E402  (Task needs hookimpl-free imports only)

__all__ = ["Task", "__version__", "hookimpl"]
