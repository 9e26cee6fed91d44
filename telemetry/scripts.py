"""Loads the project's Lua scripts once per connection; redis-py reloads them after a server restart."""

from __future__ import annotations

from functools import cache
from pathlib import Path

import redis
from redis.commands.core import Script

LUA_DIR = Path(__file__).resolve().parent / "lua"


@cache
def lua_source(name: str) -> str:
    return (LUA_DIR / f"{name}.lua").read_text()


def load_script(db: redis.Redis, name: str) -> Script:
    return db.register_script(lua_source(name))
