#!/usr/bin/env python3
"""Prints the SecureString key-exchange test data of psrp/src/crypto.rs, made with psrpcore's crypto.

Run with a Python that has psrpcore installed (it needs `cryptography`):

    python3 psrp/tests/vectors/secure_string_vectors.py

It makes an RSA exchange key as psrpcore's client does (`create_keypair`: 2048 bits, the CAPI
PUBLICKEYBLOB), encrypts a fixed session key for it as psrpcore's SERVER does (`encrypt_session_key`:
the ENCRYPTED_SESSION_KEY SIMPLEBLOB) and encrypts a string with that session key as psrpcore's
`PSRemotingCrypto` does (AES-256-CBC, zero IV, PKCS#7 over UTF-16LE). The private key is printed as
the base64 of its PKCS#1 DER so that the Rust test can load the same key. Each run makes a new key,
so new values (all but SECURE_STRING, which depends only on the session key and the string).
"""

import base64

from cryptography.hazmat.primitives import serialization
from psrpcore._crypto import PSRemotingCrypto, create_keypair, decrypt_session_key, encrypt_session_key

SESSION_KEY = bytes(range(0x20, 0x40))
PLAINTEXT = "Pa$$w0rd, pässwörd, 🔑"

private_key, public_blob = create_keypair()
simple_blob = encrypt_session_key(public_blob, SESSION_KEY)
assert decrypt_session_key(private_key, simple_blob) == SESSION_KEY

crypto = PSRemotingCrypto()
crypto.register_key(SESSION_KEY)
secure_string = crypto.encrypt(PLAINTEXT)
assert crypto.decrypt(secure_string) == PLAINTEXT

der = private_key.private_bytes(
    serialization.Encoding.DER,
    serialization.PrivateFormat.TraditionalOpenSSL,
    serialization.NoEncryption(),
)
print("PRIVATE_KEY_PKCS1_DER =", base64.b64encode(der).decode())
print("PUBLIC_KEY_BLOB =", base64.b64encode(public_blob).decode())
print("ENCRYPTED_SESSION_KEY =", base64.b64encode(simple_blob).decode())
print("SESSION_KEY =", SESSION_KEY.hex())
print("PLAINTEXT =", PLAINTEXT)
print("SECURE_STRING =", secure_string)
