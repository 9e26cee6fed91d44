"""Stop the embedded redis-server started by any pipeline command (its data stays in .telemetry/)."""

import argparse

from telemetry.embedded import EmbeddedRedis, default_home

if __name__ == "__main__":
    argparse.ArgumentParser(description=__doc__).parse_args()
    home = default_home()
    stopped = EmbeddedRedis(home).stop()
    print(f"embedded redis-server {'stopped' if stopped else 'was not running'} ({home.name}/)")
