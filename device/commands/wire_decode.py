"""`appliance wire decode`: one object message on stdin, JSON on stdout.

mosquitto_sub -N -C 1 -t 'appliance/+/objects' | appliance wire decode
"""

from __future__ import annotations

import json
import sys

from device.errors import InputError
from device.wire import WireError, decode


def wire_decode(brief: bool) -> int:
    payload = sys.stdin.buffer.read()
    try:
        message = decode(payload)
    except WireError as first:
        # mosquitto_sub without -N appends a newline to every payload; forgive exactly that.
        if not payload.endswith(b"\n"):
            raise InputError(f"stdin is not an object message: {first}") from None
        try:
            message = decode(payload[:-1])
        except WireError:
            raise InputError(f"stdin is not an object message: {first}") from None
    fields = message.to_dict()
    if brief:
        fields["vector"] = [*message.values()[:8], "..."]
    print(json.dumps(fields, indent=2))
    return 0
