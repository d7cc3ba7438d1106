"""`python -m pricing` is the same as the `pricing-service` console script."""

from pricing.cli import main

raise SystemExit(main())
