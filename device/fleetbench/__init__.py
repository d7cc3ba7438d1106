"""The fleet benchmark: `cmd/bench` on the device, `appliance fleet bench` on the operator side."""
