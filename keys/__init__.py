"""Keys: the key-encrypting key, TR-31 wrapped keys, keyed card hashes, MACs, PINs, DUKPT.

Clear keys, PINs and PIN blocks never leave this package: callers get keyed digests, MACs,
check values and opaque sessions (``keys.keystore``). The primitives (``keys.mac``,
``keys.dukpt``, ``keys.pinblock``) are proven by the public vectors in ``../shared/vectors``.
"""

import warnings

from cryptography.utils import CryptographyDeprecationWarning

# Double-length TDES keys are what ANSI X9.19 MACs, ISO 9564 format 0/3 PIN blocks and TDES
# DUKPT are defined with; psec's TDES calls warn about them on every use. Narrowly: only
# that module's warnings.
warnings.filterwarnings(
    "ignore", category=CryptographyDeprecationWarning, module=r"psec\.(des|mac)"
)

from keys.keystore import (  # noqa: E402  (the filter first)
    KeyChange,
    KeyInfo,
    KeyStore,
    KeyStoreError,
    SecurityViolation,
    Session,
    check_value,
    combine_components,
    generate_kek_file,
    kek_check_value,
    load_kek,
    missing_system_blocks,
    new_key_blocks,
    normalize_activation_code,
    write_kek_file,
)

__all__ = [
    "KeyChange",
    "KeyInfo",
    "KeyStore",
    "KeyStoreError",
    "SecurityViolation",
    "Session",
    "check_value",
    "combine_components",
    "generate_kek_file",
    "kek_check_value",
    "load_kek",
    "missing_system_blocks",
    "new_key_blocks",
    "normalize_activation_code",
    "write_kek_file",
]
