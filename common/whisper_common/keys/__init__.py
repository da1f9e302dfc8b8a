"""Named API keys: each key has an owner name and a role, is stored hashed (SHA-256 of a 256-bit random key) in a keys
file, and is added, listed and revoked with `python -m whisper_common.keys` while the services run.

    python -m whisper_common.keys --file /etc/whisper-platform/api-keys.json add team-a     # prints the key once
    python -m whisper_common.keys list
    python -m whisper_common.keys revoke team-a                                            # or a key's id

`file` is the file (its format, reading, atomic writes, the edits); `ring` is what a running service checks keys
against (the keys file re-read within a second of a change, the last good set kept when it does not parse, and the
keys of API_KEYS, each its own owner); `__main__` is the command line.
"""
from whisper_common.keys.file import KeyEntry, KeysFileError, hash_key, legacy_owner_name, new_key
from whisper_common.keys.ring import KeyRing

__all__ = ["KeyEntry", "KeyRing", "KeysFileError", "hash_key", "legacy_owner_name", "new_key"]
