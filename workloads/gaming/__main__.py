"""``python -m workloads.gaming``: run one gaming session from the environment's settings.

Exit codes: 0 the session ended (idle timeout, max duration, SIGTERM/SIGINT), 1 the game
loop died, 2 a setting is wrong or the port cannot be bound (the message says which).
"""

from __future__ import annotations

import time

STARTED = time.monotonic()  # before the heavy imports: "ready_s" counts them

import asyncio  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402


def main() -> int:
    from workloads.gaming.session import ListenError, Session
    from workloads.gaming.settings import Settings, SettingsError

    try:
        session = Session(Settings.from_env(os.environ), started=STARTED)
        return asyncio.run(session.run())
    except (SettingsError, ListenError) as exc:
        print(f"gaming: {exc}", file=sys.stderr, flush=True)
        return 2


if __name__ == "__main__":
    sys.exit(main())
