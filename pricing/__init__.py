"""Reference pricing service: from a device's embedding to the average sold price and sell-through of
similar items, answered on MQTT within milliseconds."""
