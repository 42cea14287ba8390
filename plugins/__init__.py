"""Built-in technique plugins (one module per technique family) and search strategies.

A plugin is an ordinary module with ``@edgeslim.hookimpl`` functions; these
built-ins are registered exactly like a third-party package's, which would
declare ``[project.entry-points.edgeslim] name = "package.module"``.
"""
