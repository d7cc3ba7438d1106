"""Thermal and power: sensors (CPU, Edge TPU, Pi throttle flags, battery), the governor, a simulator."""
