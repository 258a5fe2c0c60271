"""The explorer: web pages served by the control plane (``/explorer``).

Server-rendered with Jinja2 from the same services and route functions as the
JSON API, with charts drawn as inline SVG on the server, so nothing loads from
elsewhere and no script is needed. ``docs/explorer.md`` lists the pages.
"""

from idlegrid.explorer.pages import router, static_files

__all__ = ["router", "static_files"]
