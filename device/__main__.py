"""`python -m device` is the same as the `appliance` console script."""

from device.cli import main

raise SystemExit(main())
