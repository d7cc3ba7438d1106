"""Edge-AI appliance firmware: detect, track and embed objects on a Raspberry Pi with a Coral Edge TPU."""

__version__ = "0.1.0"
