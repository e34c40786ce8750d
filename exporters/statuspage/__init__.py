"""The status page: server-rendered HTML of every target's state, history and last result."""

# No JavaScript and no external assets: the pages refresh themselves with ``<meta http-equiv=
# "refresh">`` and draw history as inline SVG. Every value is HTML-escaped (``markup.esc``), and the
# HTTP surface (exporters/http.py) sends a Content-Security-Policy that allows no script at all.
#
# ``pages`` builds whole pages, ``view`` decides what a target's state is and how targets are
# ordered, ``history`` draws the strip and the latency sparkline, ``markup`` holds the escaping,
# times in words, icons and the page shell.

from exporters.statuspage.pages import (
    Page,
    method_page,
    not_found_page,
    overview_page,
    probe_result_page,
    refused_page,
    target_page,
)

__all__ = [
    "Page",
    "method_page",
    "not_found_page",
    "overview_page",
    "probe_result_page",
    "refused_page",
    "target_page",
]
