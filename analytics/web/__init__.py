"""The live web page of the fleet (`python -m analytics serve`): an edge of its own over the shared
core, read-only. app.py the server and its routes; tracker.py the fleet kept in memory; fleet.py,
sensor.py, feeds.py what each page and API answer; live.py the event streams; pages.py the HTML;
static/ the scripts, the style and the vendored uPlot (MIT, static/vendor/LICENSE.uPlot)."""
