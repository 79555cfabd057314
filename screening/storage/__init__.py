"""PostgreSQL edge: pool, numbered SQL migrations, one module per aggregate with its SQL."""

from typing import Any, TypeAlias

import asyncpg
from asyncpg.pool import PoolConnectionProxy

# Storage functions take a connection so that the caller owns the transaction; a pooled
# connection proxy is as good as a bare one.
Conn: TypeAlias = "asyncpg.Connection[Any] | PoolConnectionProxy[Any]"
