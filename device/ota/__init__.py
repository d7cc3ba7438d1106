"""Signed over-the-air model updates: check, download, validate, activate, watch, roll back.

The flow, one file per step (docs/ota.md has the operator's view):
- `release.py`: what a release says about a model (TUF target custom fields), shared with the release tool;
- `cohort.py`, `select.py`: which release this device takes;
- `remote.py`, `fetcher.py`, `index.py`: python-tuf's ngclient, which verifies everything, over
  resumable, capped downloads; the signed list of releases;
- `validate.py`, `vectors.py`: the model loads, fits its adapter and gives the expected outputs;
- `slots.py`: current and previous slots, swapped atomically;
- `journal.py`: what was done, so that a kill -9 at any step ends in the old or the new model;
- `engine.py`: slots, journal and locks, rollback, pin, verdicts; `check.py`: one check, end to end
  (the only part that imports python-tuf, when a check runs); `health.py` and `agent.py`: the daemon's side.
"""
