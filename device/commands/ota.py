"""`appliance ota check|status|rollback|pin [--json]`: the updater by hand, on the device.

These run the same engine as the daemon, under the same lock. A release that `check` activates, or a
rollback, is noticed by a running daemon within a second; it swaps the model in between frames and
runs the health window (docs/ota.md).

`check` exits with the code device.ota.journal.OUTCOMES gives its outcomes (65 rejected, 69 unavailable),
the same table docs/ota.md shows; a check refused as a whole exits with its error's code, which is the
same one, and its outcome is in the journal (`status`) as the daemon's would be.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any

from device.commands.context import config_path
from device.config import Config, load_config
from device.errors import ConfigError, RegistryUnavailableError, UpdateBusyError, UpdateError
from device.kinds import MODEL_KINDS
from device.ota.engine import Engine
from device.ota.journal import exit_code
from device.ota.locks import WAIT_S as LOCK_WAIT_S


def ota(
    explicit_config: str | None, action: str, kind: str | None, version: str | None, as_json: bool
) -> int:
    config = load_config(config_path(explicit_config))
    if action == "check" and not config.ota.enabled:
        raise ConfigError("OTA updates are off: set [ota] enabled, repository_url and trusted_root")
    engine = Engine(config, progress=None if as_json else _progress)
    if action == "check":
        return _check(engine, as_json)
    result: Any
    if action == "status":
        result = status(engine, config)
    elif action == "rollback":
        # A running check holds the update lock only for moments (never over the network): wait them out.
        with engine.locked(LOCK_WAIT_S):
            result = engine.rollback(_kind(kind), "by the operator (appliance ota rollback)").model_dump()
    else:
        result = _pin(engine, _kind(kind), version)
    _print(result, as_json)
    return 0


def _check(engine: Engine, as_json: bool) -> int:
    try:
        outcomes, _ = engine.check()
    except UpdateBusyError:
        raise
    except (UpdateError, RegistryUnavailableError):
        # The error's own line goes to stderr (and sets the exit code); --json also gets the outcome.
        last = engine.journal.last()
        if as_json and last is not None:
            _print([last.model_dump()], as_json)
        raise
    _print([o.model_dump() for o in outcomes], as_json)
    return exit_code(o.outcome for o in outcomes)


def status(engine: Engine, config: Config) -> dict[str, Any]:
    models = {}
    for kind in MODEL_KINDS:
        _, model_id, version = engine.active(kind)
        models[kind] = {
            "id": model_id,
            "version": version,
            "slot": engine.slots.current(kind) or "bundled",
            "previous": engine.slots.previous(kind) or "bundled",
        }
    return {
        "enabled": config.ota.enabled,
        "channel": config.ota.channel,
        "models": models,
        **engine.journal.summary(),
    }


def _pin(engine: Engine, kind: str, version: str | None) -> dict[str, Any]:
    with engine.locked(LOCK_WAIT_S):
        engine.pin(kind, version)
    return {"kind": kind, "pinned": version, "note": "takes effect at the next check"}


def _kind(kind: str | None) -> str:
    if kind not in MODEL_KINDS:
        raise ConfigError("name the kind of model: detector or embedder")
    return kind


_shown: dict[str, int] = {}


def _progress(name: str, have: int, total: int) -> None:
    """One line per tenth of each download; the name loses its content-hash prefix."""
    tenth = have * 10 // max(total, 1)
    if _shown.get(name) == tenth:
        return
    _shown[name] = tenth
    short = name.split(".", 1)[1] if len(name.split(".", 1)[0]) == 64 else name
    print(f"downloading {short}: {have / 1e6:.1f} of {total / 1e6:.1f} MB ({tenth * 10}%)", file=sys.stderr)


def _print(result: Any, as_json: bool) -> None:
    if as_json:
        print(json.dumps(result, indent=2, default=str))
    elif isinstance(result, dict) and "models" in result:
        print(_status_text(result))
    else:
        for item in result if isinstance(result, list) else [result]:
            print(_outcome_text(item))


def _status_text(status: dict[str, Any]) -> str:
    lines = [f"OTA {'on' if status['enabled'] else 'off'}, channel {status['channel']}"]
    windows = status.get("health_windows") or {}
    for kind, model in status["models"].items():
        where = "bundled" if model["slot"] == "bundled" else f"slot {model['slot']}"
        extra = "  health window open" if kind in windows else ""
        pin = status["pins"].get(kind)
        extra += f"  pinned to {pin}" if pin else ""
        lines.append(
            f"{kind:<9} {model['id']} {model['version']} ({where}; previous: {model['previous']}){extra}"
        )
    if status.get("refused"):
        lines.append(f"refused   {', '.join(status['refused'])} (rolled back from on this device)")
    for invalid in status.get("invalid") or []:
        lines.append(
            f"invalid   {invalid['release']} (not downloaded again until republished): {invalid['reason']}"
        )
    for reason in status.get("bad_entries") or []:
        lines.append(f"bad entry {reason}")
    if status.get("last_check"):
        lines.append(f"checked   {_when(status['last_check'])}")
    if status.get("last"):
        lines.append(f"last      {_outcome_text(status['last'])}")
    return "\n".join(lines)


def _when(epoch: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(epoch))


def _outcome_text(outcome: dict[str, Any]) -> str:
    if "outcome" not in outcome:  # a pin
        return "  ".join(f"{k}={v}" for k, v in outcome.items() if v is not None)
    when = _when(outcome["at"]) if outcome.get("at") else ""
    what = " ".join(str(outcome[k]) for k in ("outcome", "kind", "version") if outcome.get(k))
    if outcome.get("count", 1) > 1:
        what += f" ({outcome['count']} checks in a row, the last"
        when = f"{when})" if when else ")"
    return f"{what}{' at ' + when if when else ''}{': ' + outcome['reason'] if outcome.get('reason') else ''}"
