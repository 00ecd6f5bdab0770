"""Files on disk: atomic writes, the overwrite guard and content hashes."""
