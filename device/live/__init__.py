"""The live view: an HTTP server in the daemon showing the camera, the boxes and their prices
(docs/live-view.md)."""
