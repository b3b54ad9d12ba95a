//! The SecureString key exchange (MS-PSRP 3.1.5.4.3) and the SecureString cipher, as psrpcore's
//! `_crypto.py` does them.
//!
//! The client makes a 2048-bit RSA exchange key and sends its public half in PUBLIC_KEY (2.2.2.3) as
//! a CAPI `PUBLICKEYBLOB`; the server answers with ENCRYPTED_SESSION_KEY (2.2.2.4): its 256-bit AES
//! session key, RSA PKCS#1 v1.5 encrypted with that key, as a CAPI `SIMPLEBLOB`. SecureStrings
//! (`<SS>`) are then AES-256-CBC with the session key, a zero IV and PKCS#7 padding, over the
//! string's UTF-16LE bytes.
//!
//! Neither key is ever shown: the `Debug` of [`ExchangeKey`] and [`SessionKey`] says only what they
//! are, errors carry no key or plaintext bytes, and key bytes are wiped when dropped.

use std::fmt;

use aes::Aes256;
use base64::{Engine, engine::general_purpose::STANDARD as BASE64};
use cbc::cipher::{BlockModeDecrypt, BlockModeEncrypt, KeyIvInit, block_padding::Pkcs7};
use rsa::{Pkcs1v15Encrypt, RsaPrivateKey, traits::PublicKeyParts};
use thiserror::Error;
use zeroize::{Zeroize, Zeroizing};

/// The size of the RSA exchange key, as PowerShell and psrpcore make it.
pub const EXCHANGE_KEY_BITS: usize = 2048;
/// The size of the AES-256 session key.
pub const SESSION_KEY_LEN: usize = 32;

/// `PUBLICKEYBLOB` (bType 0x06), `CUR_BLOB_VERSION` (2), reserved, `CALG_RSA_KEYX` (0x0000A400).
const PUBLIC_KEY_BLOB_HEADER: [u8; 8] = [0x06, 0x02, 0x00, 0x00, 0x00, 0xA4, 0x00, 0x00];
/// `RSAPUBKEY.magic`: "RSA1", a public key.
const RSA1_MAGIC: [u8; 4] = *b"RSA1";
/// `SIMPLEBLOB` (bType 0x01).
const SIMPLE_BLOB_TYPE: u8 = 0x01;
/// `CUR_BLOB_VERSION`.
const BLOB_VERSION: u8 = 0x02;
/// `CALG_AES_256`: the algorithm of the key a SIMPLEBLOB carries.
const CALG_AES_256: u32 = 0x0000_6610;
/// `CALG_RSA_KEYX`: the algorithm of the key that encrypted it.
const CALG_RSA_KEYX: u32 = 0x0000_A400;
/// `BLOBHEADER` (8 bytes) and the `ALG_ID` of the encrypting key (4) before a SIMPLEBLOB's key.
const SIMPLE_BLOB_HEADER_LEN: usize = 12;
/// PSRP's SecureStrings use no IV (psrpcore: "PSRP doesn't use an IV").
const ZERO_IV: [u8; 16] = [0; 16];

type Aes256CbcEnc = cbc::Encryptor<Aes256>;
type Aes256CbcDec = cbc::Decryptor<Aes256>;

/// What went wrong in the key exchange or with a SecureString. No variant carries key material or
/// plaintext.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CryptoError {
    #[error("generating the RSA exchange key failed")]
    KeyGeneration,
    #[error("the {what} is not valid base64")]
    Base64 { what: &'static str },
    #[error("the encrypted session key is not a SIMPLEBLOB of an AES-256 key: {reason}")]
    MalformedSessionKeyBlob { reason: &'static str },
    #[error("the encrypted session key does not decrypt with this client's exchange key")]
    SessionKeyDecryption,
    #[error("the session key is {len} bytes, not {SESSION_KEY_LEN}")]
    SessionKeyLength { len: usize },
    #[error("the SecureString does not decrypt with the session key (bad length or padding)")]
    SecureStringDecryption,
    #[error("the decrypted SecureString is not valid UTF-16LE")]
    SecureStringEncoding,
}

/// The client's RSA exchange key pair. `Debug` shows no key material.
pub struct ExchangeKey {
    private: RsaPrivateKey,
}

impl fmt::Debug for ExchangeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ExchangeKey(<{}-bit RSA key>)", self.private.size() * 8)
    }
}

impl ExchangeKey {
    /// Makes a new 2048-bit key with public exponent 65537 from the thread's CSPRNG. Slow in
    /// unoptimized builds (seconds).
    pub fn generate() -> Result<ExchangeKey, CryptoError> {
        let private = RsaPrivateKey::new(&mut rand::rng(), EXCHANGE_KEY_BITS)
            .map_err(|_| CryptoError::KeyGeneration)?;
        Ok(ExchangeKey { private })
    }

    /// Wraps a known private key (tests, or a key kept elsewhere).
    pub fn from_private_key(private: RsaPrivateKey) -> ExchangeKey {
        ExchangeKey { private }
    }

    /// The CAPI `PUBLICKEYBLOB` of the public key: `BLOBHEADER`, `RSAPUBKEY` ("RSA1", bit length,
    /// exponent) and the modulus, all little-endian.
    pub fn public_key_blob(&self) -> Vec<u8> {
        let size = self.private.size();
        let bits = u32::try_from(size * 8).unwrap_or(u32::MAX);
        let mut blob = Vec::with_capacity(20 + size);
        blob.extend_from_slice(&PUBLIC_KEY_BLOB_HEADER);
        blob.extend_from_slice(&RSA1_MAGIC);
        blob.extend_from_slice(&bits.to_le_bytes());
        // The exponent is a DWORD: 65537 for keys made here.
        let mut exponent = [0u8; 4];
        let e = self.private.e_bytes();
        let e = trim_leading_zeros(&e);
        let take = e.len().min(4);
        for (i, byte) in e[e.len() - take..].iter().rev().enumerate() {
            exponent[i] = *byte;
        }
        blob.extend_from_slice(&exponent);
        let n = self.private.n_bytes();
        let n = trim_leading_zeros(&n);
        blob.extend(n.iter().rev());
        blob.resize(20 + size.max(n.len()), 0);
        blob
    }

    /// [`public_key_blob`](Self::public_key_blob) in base64, for PUBLIC_KEY.
    pub fn public_key_base64(&self) -> String {
        BASE64.encode(self.public_key_blob())
    }

    /// Decrypts the session key of an ENCRYPTED_SESSION_KEY blob: a `SIMPLEBLOB` header then the
    /// RSA PKCS#1 v1.5 ciphertext, little-endian.
    pub fn decrypt_session_key(&self, simple_blob: &[u8]) -> Result<SessionKey, CryptoError> {
        let malformed = |reason| CryptoError::MalformedSessionKeyBlob { reason };
        if simple_blob.len() < SIMPLE_BLOB_HEADER_LEN {
            return Err(malformed("shorter than its header"));
        }
        let (header, encrypted) = simple_blob.split_at(SIMPLE_BLOB_HEADER_LEN);
        if header[0] != SIMPLE_BLOB_TYPE {
            return Err(malformed("not a SIMPLEBLOB"));
        }
        if header[1] != BLOB_VERSION {
            return Err(malformed("not blob version 2"));
        }
        if le_u32(&header[4..8]) != CALG_AES_256 {
            return Err(malformed("the key is not AES-256"));
        }
        if le_u32(&header[8..12]) != CALG_RSA_KEYX {
            return Err(malformed("the key is not encrypted with an RSA exchange key"));
        }
        if encrypted.len() != self.private.size() {
            return Err(malformed("the ciphertext is not the size of the exchange key"));
        }
        let ciphertext: Vec<u8> = encrypted.iter().rev().copied().collect();
        let key = Zeroizing::new(
            self.private
                .decrypt_blinded(&mut rand::rng(), Pkcs1v15Encrypt, &ciphertext)
                .map_err(|_| CryptoError::SessionKeyDecryption)?,
        );
        SessionKey::from_bytes(&key)
    }

    /// [`decrypt_session_key`](Self::decrypt_session_key) of the base64 ENCRYPTED_SESSION_KEY carries.
    pub fn decrypt_session_key_base64(&self, simple_blob: &str) -> Result<SessionKey, CryptoError> {
        let blob = BASE64
            .decode(simple_blob.trim())
            .map_err(|_| CryptoError::Base64 {
                what: "encrypted session key",
            })?;
        self.decrypt_session_key(&blob)
    }
}

/// The AES-256 session key SecureStrings are encrypted with. `Debug` shows no key material; the
/// bytes are wiped when dropped.
#[derive(Clone, PartialEq, Eq)]
pub struct SessionKey([u8; SESSION_KEY_LEN]);

impl fmt::Debug for SessionKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SessionKey(<AES-256 key>)")
    }
}

impl Drop for SessionKey {
    fn drop(&mut self) {
        self.0.zeroize();
    }
}

impl SessionKey {
    pub fn from_bytes(bytes: &[u8]) -> Result<SessionKey, CryptoError> {
        let key = <[u8; SESSION_KEY_LEN]>::try_from(bytes)
            .map_err(|_| CryptoError::SessionKeyLength { len: bytes.len() })?;
        Ok(SessionKey(key))
    }

    /// The `<SS>` bytes of `value`: AES-256-CBC, zero IV, PKCS#7, over its UTF-16LE.
    pub fn encrypt(&self, value: &str) -> Vec<u8> {
        let plain = Zeroizing::new(
            value
                .encode_utf16()
                .flat_map(u16::to_le_bytes)
                .collect::<Vec<u8>>(),
        );
        Aes256CbcEnc::new(&self.0.into(), &ZERO_IV.into()).encrypt_padded_vec::<Pkcs7>(&plain)
    }

    /// The string of `<SS>` bytes.
    pub fn decrypt(&self, encrypted: &[u8]) -> Result<String, CryptoError> {
        let plain = Zeroizing::new(
            Aes256CbcDec::new(&self.0.into(), &ZERO_IV.into())
                .decrypt_padded_vec::<Pkcs7>(encrypted)
                .map_err(|_| CryptoError::SecureStringDecryption)?,
        );
        if plain.len() % 2 != 0 {
            return Err(CryptoError::SecureStringEncoding);
        }
        let units = Zeroizing::new(
            plain
                .chunks_exact(2)
                .map(|pair| u16::from_le_bytes([pair[0], pair[1]]))
                .collect::<Vec<u16>>(),
        );
        String::from_utf16(&units).map_err(|_| CryptoError::SecureStringEncoding)
    }
}

fn le_u32(bytes: &[u8]) -> u32 {
    let mut word = [0u8; 4];
    word.copy_from_slice(&bytes[..4]);
    u32::from_le_bytes(word)
}

fn trim_leading_zeros(bytes: &[u8]) -> &[u8] {
    let start = bytes.iter().position(|&b| b != 0).unwrap_or(bytes.len());
    &bytes[start..]
}

#[cfg(test)]
pub(crate) mod tests {
    use rsa::pkcs1::DecodeRsaPrivateKey;

    use super::*;

    // Made by `psrp/tests/vectors/secure_string_vectors.py` with psrpcore 0.3's `_crypto.py`: an
    // exchange key as psrpcore's client makes it (a throwaway test key, used nowhere else), the
    // SIMPLEBLOB psrpcore's SERVER (`encrypt_session_key`) made of SESSION_KEY for its PUBLICKEYBLOB,
    // and PLAINTEXT encrypted by `PSRemotingCrypto` with SESSION_KEY.
    const PRIVATE_KEY_PKCS1_DER: &str = concat!(
        "MIIEpAIBAAKCAQEAjKcpQ0YWHtheVquUBUnzmxyGtferyVjO6rJ1NYwSKHprms4FF7Xwb2141qVzd7jdnn7dmSmm",
        "b9AIiiZtTT0BaQchPFFermkTyyCKlaUOkeWqHNnd/YbLc2rT6dfvTR8lHwEPT83HG87c8WEKN2y8b4zoUjmeOOck",
        "/MLJjkL4sM9db5aI7aKH+GXSWXXrO8StzNacJaUtxnhquR2lBHASqExJn7y5V0fRsm0Qyt9YYvt6b3+AI0SPjJO9",
        "Y3GMRJ90oZ63+dTvw+DhXqpv5XCDDhxu9peniY+HddcOgTsPa4i0gNOcWpMJFtzcyY6uekplT1hTkuXWSWiJ48HI",
        "tMnoDQIDAQABAoIBACDzwM0MDH6pfmCbzg/3JWV/p2fWYJ7JeaCuspsa994X4EHiZnsJmwzf/uF63bR80R8i5dPO",
        "WDn16SpEmnLwCfaLPxQclCwUXhjGxPEOPH2d6t7bhBCzldKygndUqbHNzCqZWvb9ZNp0+npqm7Qke3k+7+bjrNfz",
        "/0xgbkwwEIeLlH9HxaZTpmzbUNw2KbBPc2EiXjRCZBdTfGh5x801GVMkZZnxDPmi4vb7jsUu5pv7rmnE0MwY7ubY",
        "Y3w5VV3KkS1BnGgB1gNIyCNc7QxuYTGwKBYr3MBZ4w6VZoZqVadCtlz5sSPr6VLuQeutNq5rDw5+12kxwJsCdRkY",
        "lnYhLdkCgYEAxiap5vjCt14HMM0kzUR25mD4l16ZkSXzt9b8yRAD/umPswXIcIZWHOiDJOc21hrdHoMKMKpjWqAJ",
        "N873LUAYJyGmu4brCnZ3jhoYxv0RzVs00dmS9o/+a4NchFh7H4oh/60Ah6lbOUgBRo9vAU/dqH64p07vNoOH7kL/",
        "6IeZUu8CgYEAtbc6x++3nrVZ5oyzMLttmLoJC+c29MytDWLPDlMcXtZIqfhQRZH0h9cLI3cfDwWfALJ7VjFjvbbm",
        "DVKjfnpXongnCyCtcDzs0dCbH5CUGoD2dORlpaq5s5k8drAfI8YvOWrzBlOQW+HOM2O4mMwXnPF4udY8BW7s+kW6",
        "HQWMBMMCgYEAuW5hPSa6gYLa086GjBlv83P37x+2MmEDzJzB/x6fvqOvuGbHBpaQa4kjgRtm88I7/1u944DwbVSq",
        "i7GBGrWKZMRXFdLSjf4DL9Y4La+SQ00BBwjHQTnLa62InMl4nzFTU8MAZfQUzGwX1YJQ7TdiRVYhU2DI94jrYgsN",
        "FPwgfb0CgYEArrp+GgxFyqTkygxWrTA8JRQVaM2uCVvZtrphEIwYBpUTj+RGA29h61B61GJRihdEmd4FPI8HMj/x",
        "G7Rvo0kuhPn1yPxl6TucF+/3iTVzQ7znvuRzXQY5xBk/i3y0pKiHdjWBc37cm40XwlBMCxiMSAvkowT999d+pPRx",
        "DkDsLxMCgYBRQm/u1AIHgsymNtqnOooIeP/EAwiiMZnBmYX1ne/yn1ga1IGm8ZzlJtMcuf3OycmkZRuJL2LUIO7o",
        "T0oPX8UsMYVtGmjSthxa9oJ/LaWRtDx2DdQaZ9ZDdc7JbBqgS1Fj1fucTLqOhsa70aE6a3AfiKf5xFrbJVaiUdsl",
        "ewoNGw==",
    );
    const PUBLIC_KEY_BLOB: &str = concat!(
        "BgIAAACkAABSU0ExAAgAAAEAAQAN6Mm0yMHjiWhJ1uWSU1hPZUp6ro7J3NwWCZNanNOAtIhrDzuBDtd1h4+Jp5f2",
        "bhwOg3Dlb6pe4eDD79T5t56hdJ9EjHFjvZOMj0QjgH9vevtiWN/KEG2y0UdXubyfSUyoEnAEpR25anjGLaUlnNbM",
        "rcQ763VZ0mX4h6LtiJZvXc+w+EKOycL8JOc4njlS6IxvvGw3CmHx3M4bx81PDwEfJR9N79fp02pzy4b93dkcquWR",
        "DqWViiDLE2muXlE8IQdpAT1NbSaKCNBvpimZ3X6e3bh3c6XWeG1v8LUXBc6aa3ooEow1dbLqzljJq/e1hhyb80kF",
        "lKtWXtgeFkZDKaeM",
    );
    const ENCRYPTED_SESSION_KEY: &str = concat!(
        "AQIAABBmAAAApAAA/2HBTCVdZcRLLG+5p0W8PcJf8xzQT4bYl1TpUZB5Wn7l8WXic5NaQb6Nj93XDz07x/j23l29",
        "gq34btEqCNbIdg1YfrYE1INVGSSJVrXrWUj5g0PO0LSq1QZD8L5Gnzh9mcT/hRAr86lbouzADJB2SVYzm2ilVp2z",
        "jaGxDdtP5k5DU6v7lssF1aSkWDsXoZ9+2uI8fiC83lLzuKILBLwYPuc/1E1/FL2ZekqlvHEcwEfDzHoxUZAMU+AQ",
        "P8/j2ONP4I/Y8W5LC1uEydnoakaf+fi3K3O/RY5ixewolNBSJaJJGlLqnlj3fUFV/qe/lJHMY0ulk1J+hC+Woe66",
        "FIBhVw==",
    );
    pub(crate) const SESSION_KEY: &str = "202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";
    pub(crate) const PLAINTEXT: &str = "Pa$$w0rd, pässwörd, 🔑";
    pub(crate) const SECURE_STRING: &str = "uCch7I/OJ9/QmEhwrJfDlJqmX+dIbWU6eWIjF2QeSlLObmxlh/0Fi1XJhIrhnspi";

    fn psrpcore_key() -> ExchangeKey {
        let der = BASE64.decode(PRIVATE_KEY_PKCS1_DER).unwrap();
        ExchangeKey::from_private_key(RsaPrivateKey::from_pkcs1_der(&der).unwrap())
    }

    /// What psrpcore's server (`encrypt_session_key`) makes of a session key for a PUBLICKEYBLOB:
    /// RSA PKCS#1 v1.5 with the blob's key, reversed, behind the SIMPLEBLOB header.
    pub(crate) fn server_encrypt_session_key(public_key_blob: &[u8], session: &[u8]) -> Vec<u8> {
        let exponent = u32::from_le_bytes(public_key_blob[16..20].try_into().unwrap());
        let modulus: Vec<u8> = public_key_blob[20..].iter().rev().copied().collect();
        let public = rsa::RsaPublicKey::new(
            rsa::BoxedUint::from_be_slice_vartime(&modulus),
            rsa::BoxedUint::from(exponent),
        )
        .unwrap();
        let encrypted = public
            .encrypt(&mut rand::rng(), Pkcs1v15Encrypt, session)
            .unwrap();
        let mut simple = vec![
            0x01, 0x02, 0x00, 0x00, 0x10, 0x66, 0x00, 0x00, 0x00, 0xA4, 0x00, 0x00,
        ];
        simple.extend(encrypted.iter().rev());
        simple
    }

    pub(crate) fn session_key_bytes() -> Vec<u8> {
        (0..SESSION_KEY.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&SESSION_KEY[i..i + 2], 16).unwrap())
            .collect()
    }

    fn session_key() -> SessionKey {
        SessionKey::from_bytes(&session_key_bytes()).unwrap()
    }

    #[test]
    fn public_key_blob_matches_psrpcore() {
        assert_eq!(psrpcore_key().public_key_base64(), PUBLIC_KEY_BLOB);
    }

    #[test]
    fn decrypts_psrpcore_server_session_key() {
        let key = psrpcore_key()
            .decrypt_session_key_base64(ENCRYPTED_SESSION_KEY)
            .unwrap();
        assert_eq!(key, session_key());
    }

    #[test]
    fn secure_string_matches_psrpcore() {
        let key = session_key();
        let encrypted = BASE64.decode(SECURE_STRING).unwrap();
        assert_eq!(key.decrypt(&encrypted).unwrap(), PLAINTEXT);
        assert_eq!(BASE64.encode(key.encrypt(PLAINTEXT)), SECURE_STRING);
    }

    #[test]
    fn generated_key_round_trip() {
        let exchange = ExchangeKey::generate().unwrap();
        let blob = exchange.public_key_blob();
        assert_eq!(blob.len(), 20 + 256);
        assert_eq!(&blob[..8], &PUBLIC_KEY_BLOB_HEADER);
        assert_eq!(&blob[8..12], b"RSA1");
        assert_eq!(&blob[12..16], &2048u32.to_le_bytes());
        assert_eq!(&blob[16..20], &65537u32.to_le_bytes());
        let session = [7u8; SESSION_KEY_LEN];
        let simple = server_encrypt_session_key(&blob, &session);
        let key = exchange.decrypt_session_key(&simple).unwrap();
        assert_eq!(key, SessionKey::from_bytes(&session).unwrap());
        assert!(!format!("{exchange:?}").contains("RSA1"));
    }

    #[test]
    fn secure_string_round_trips() {
        let key = session_key();
        for text in [
            "",
            "a",
            "exactly8",
            "sixteen bytes..",
            "Pa$$w0rd 🔑 ünïcödé",
            &"x".repeat(1000),
        ] {
            let encrypted = key.encrypt(text);
            assert_eq!(encrypted.len() % 16, 0);
            assert_eq!(key.decrypt(&encrypted).unwrap(), text);
        }
    }

    #[test]
    fn malformed_session_key_blobs_are_errors() {
        let exchange = psrpcore_key();
        let good = BASE64.decode(ENCRYPTED_SESSION_KEY).unwrap();
        let malformed = |blob: &[u8]| match exchange.decrypt_session_key(blob) {
            Err(CryptoError::MalformedSessionKeyBlob { .. }) => {}
            other => panic!("{other:?}"),
        };
        malformed(&[]);
        malformed(&good[..11]);
        malformed(&good[..12]);
        malformed(&good[..good.len() - 1]);
        let mut longer = good.clone();
        longer.push(0);
        malformed(&longer);
        for (index, value) in [(0, 0x06), (1, 0x03), (4, 0x0E), (9, 0x24)] {
            let mut bad = good.clone();
            bad[index] = value;
            malformed(&bad);
        }
        // Right shape, wrong ciphertext: the padding does not check out.
        let mut garbled = good.clone();
        garbled[40] ^= 0xFF;
        assert_eq!(
            exchange.decrypt_session_key(&garbled),
            Err(CryptoError::SessionKeyDecryption)
        );
        // Right shape, wrong key.
        let mut zeros = good.clone();
        zeros[12..].fill(0);
        assert!(exchange.decrypt_session_key(&zeros).is_err());
        assert_eq!(
            exchange.decrypt_session_key_base64("not base64!"),
            Err(CryptoError::Base64 {
                what: "encrypted session key"
            })
        );
    }

    #[test]
    fn session_key_must_be_32_bytes() {
        assert_eq!(
            SessionKey::from_bytes(&[0; 16]),
            Err(CryptoError::SessionKeyLength { len: 16 })
        );
        assert_eq!(format!("{:?}", session_key()), "SessionKey(<AES-256 key>)");
    }

    #[test]
    fn malformed_secure_strings_are_errors() {
        let key = session_key();
        let good = BASE64.decode(SECURE_STRING).unwrap();
        assert_eq!(key.decrypt(&[]), Err(CryptoError::SecureStringDecryption));
        assert_eq!(key.decrypt(&good[..15]), Err(CryptoError::SecureStringDecryption));
        assert_eq!(
            key.decrypt(&good[..good.len() - 1]),
            Err(CryptoError::SecureStringDecryption)
        );
        // Another key: the last block's padding is (almost surely) wrong.
        let other = SessionKey::from_bytes(&[1; 32]).unwrap();
        assert!(other.decrypt(&good).is_err());
        // An odd number of bytes, and a lone surrogate, padded and encrypted properly.
        let odd = Aes256CbcEnc::new(&key.0.into(), &ZERO_IV.into()).encrypt_padded_vec::<Pkcs7>(b"abc");
        assert_eq!(key.decrypt(&odd), Err(CryptoError::SecureStringEncoding));
        let lone = Aes256CbcEnc::new(&key.0.into(), &ZERO_IV.into())
            .encrypt_padded_vec::<Pkcs7>(&0xD800u16.to_le_bytes());
        assert_eq!(key.decrypt(&lone), Err(CryptoError::SecureStringEncoding));
    }
}
