"""How large a file in a policy store may be before it is refused unread.

Without a bound, one oversized file in the stores folder (a dump copied in by mistake, a
runaway generator) is read whole at startup or at the next hot reload, and parsing it takes
many times its size in memory: the process is killed for memory instead of the reload failing
with a message while the last good policies keep serving. The bounds sit far above real stores
(100,000 generated policies are ~18 MB; 300,000 lending entities ~80 MB).
"""

from __future__ import annotations

MIB = 1024 * 1024
# *.cedar files, the schema, store.toml and the links file.
MAX_POLICY_FILE_BYTES = 64 * MIB
# A store's entities.json, read whole into the in-memory store. Larger entity sets belong in
# Redis, loaded with `verdict entities load` (which reads its file with the same bound).
MAX_ENTITIES_FILE_BYTES = 512 * MIB
