"""Keys: the key-encrypting key, TR-31 wrapped working keys, keyed card hashes.

Clear keys never leave this package: callers get hashes, MACs and check values.
"""

from keys.keystore import (
    KeyStore,
    KeyStoreError,
    check_value,
    generate_kek_file,
    load_kek,
    new_key_blocks,
)

__all__ = [
    "KeyStore",
    "KeyStoreError",
    "check_value",
    "generate_kek_file",
    "load_kek",
    "new_key_blocks",
]
