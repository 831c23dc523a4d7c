//! Identities (a key pair and a self-signed certificate), their
//! fingerprints, and the two trust lists: known agents and authorized
//! clients.
//!
//! Owns the identity directory layout and the list file formats. An
//! identity directory holds `key.pem` (PKCS#8, mode 0600), `cert.pem` and
//! `fingerprint` (one line, `sha256:<hex>`, for people and scripts). Every
//! file is written atomically (temporary file, fsync, rename, fsync of the
//! directory). This module must not touch the network or TLS configuration:
//! `tls` turns an [`Identity`] into rustls settings.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::error::NetError;

/// Name of the private key file in an identity directory.
pub const KEY_FILE: &str = "key.pem";
/// Name of the certificate file in an identity directory.
pub const CERT_FILE: &str = "cert.pem";
/// Name of the fingerprint file in an identity directory.
pub const FINGERPRINT_FILE: &str = "fingerprint";

/// The SHA-256 digest of a certificate's DER encoding, written
/// `sha256:<64 lowercase hex digits>`. This is how agents and clients name
/// each other.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// The fingerprint of a DER-encoded certificate.
    pub fn of_der(der: &[u8]) -> Fingerprint {
        let digest = ring::digest::digest(&ring::digest::SHA256, der);
        let mut out = [0u8; 32];
        out.copy_from_slice(digest.as_ref());
        Fingerprint(out)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("sha256:")?;
        for b in self.0 {
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl FromStr for Fingerprint {
    type Err = NetError;

    /// Parses `sha256:<64 hex digits>` (either case of hex digits).
    fn from_str(text: &str) -> Result<Fingerprint, NetError> {
        let bad = || NetError::BadFingerprint {
            text: text.to_owned(),
        };
        let hex = text.strip_prefix("sha256:").ok_or_else(bad)?;
        if hex.len() != 64 || !hex.is_ascii() {
            return Err(bad());
        }
        let mut out = [0u8; 32];
        for (i, byte) in out.iter_mut().enumerate() {
            *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).map_err(|_| bad())?;
        }
        Ok(Fingerprint(out))
    }
}

/// Which side an identity is for; only changes the certificate's name.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// A `baton agent`.
    Agent,
    /// A `baton run` client.
    Client,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::Agent => "baton-agent",
            Role::Client => "baton-client",
        }
    }
}

/// A key pair and its self-signed certificate.
pub struct Identity {
    cert: CertificateDer<'static>,
    cert_pem: String,
    key_pkcs8: Vec<u8>,
    fingerprint: Fingerprint,
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print the key.
        f.debug_struct("Identity")
            .field("fingerprint", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

impl Clone for Identity {
    fn clone(&self) -> Identity {
        Identity {
            cert: self.cert.clone(),
            cert_pem: self.cert_pem.clone(),
            key_pkcs8: self.key_pkcs8.clone(),
            fingerprint: self.fingerprint,
        }
    }
}

impl Identity {
    /// Makes a new identity in memory (an ECDSA P-256 key pair and a
    /// self-signed certificate), without saving it.
    ///
    /// # Errors
    ///
    /// [`NetError::Generate`] if the crypto library fails.
    pub fn generate(role: Role) -> Result<Identity, NetError> {
        let key = rcgen::KeyPair::generate().map_err(|e| NetError::Generate(e.to_string()))?;
        let mut params = rcgen::CertificateParams::new(vec![role.name().to_owned()])
            .map_err(|e| NetError::Generate(e.to_string()))?;
        params
            .distinguished_name
            .push(rcgen::DnType::CommonName, role.name());
        let cert = params
            .self_signed(&key)
            .map_err(|e| NetError::Generate(e.to_string()))?;
        let cert_pem = cert.pem();
        let cert = cert.der().clone();
        Ok(Identity {
            fingerprint: Fingerprint::of_der(&cert),
            cert,
            cert_pem,
            key_pkcs8: key.serialize_der(),
        })
    }

    /// Loads the identity kept in `dir`, or makes one there on first use.
    ///
    /// Creates `dir` (mode 0700) if needed. Later calls load the same
    /// identity, with the same fingerprint.
    ///
    /// # Errors
    ///
    /// [`NetError::Io`] if the directory or files cannot be read or written;
    /// [`NetError::DamagedIdentity`] if only one of the key and certificate
    /// exists or either is unreadable or they do not belong together.
    pub fn load_or_create(dir: &Path, role: Role) -> Result<Identity, NetError> {
        let key_path = dir.join(KEY_FILE);
        let cert_path = dir.join(CERT_FILE);
        match (key_path.exists(), cert_path.exists()) {
            (true, true) => {
                let id = Identity::load(dir)?;
                // Keep the convenience file in step; it is never read back.
                let fp_path = dir.join(FINGERPRINT_FILE);
                let want = format!("{}\n", id.fingerprint);
                if fs::read_to_string(&fp_path).ok().as_deref() != Some(want.as_str()) {
                    write_atomic(&fp_path, want.as_bytes(), 0o644)?;
                }
                Ok(id)
            }
            (false, false) => {
                create_dir(dir)?;
                let id = Identity::generate(role)?;
                id.save(dir)?;
                tracing::info!(dir = %dir.display(), fingerprint = %id.fingerprint, "made a new identity");
                Ok(id)
            }
            (true, false) => Err(NetError::DamagedIdentity {
                path: cert_path,
                reason: format!("missing, but {KEY_FILE} exists"),
            }),
            (false, true) => Err(NetError::DamagedIdentity {
                path: key_path,
                reason: format!("missing, but {CERT_FILE} exists"),
            }),
        }
    }

    /// Loads an existing identity from `dir`.
    ///
    /// # Errors
    ///
    /// As [`Identity::load_or_create`], and [`NetError::Io`] if a file is
    /// missing.
    pub fn load(dir: &Path) -> Result<Identity, NetError> {
        let key_path = dir.join(KEY_FILE);
        let cert_path = dir.join(CERT_FILE);
        let key_pem = read_text(&key_path)?;
        let cert_pem = read_text(&cert_path)?;
        let damaged = |path: &Path, reason: String| NetError::DamagedIdentity {
            path: path.to_owned(),
            reason,
        };
        let key = rcgen::KeyPair::from_pem(&key_pem)
            .map_err(|e| damaged(&key_path, format!("not a usable private key: {e}")))?;
        let cert = CertificateDer::from_pem_slice(cert_pem.as_bytes())
            .map_err(|e| damaged(&cert_path, format!("not a PEM certificate: {e}")))?;
        // The certificate embeds the public key; a key from another identity
        // would make every handshake fail later, so say it now.
        let public = key.public_key_raw();
        if public.is_empty() || !cert.windows(public.len()).any(|w| w == public) {
            return Err(damaged(
                &cert_path,
                format!("the certificate does not match {KEY_FILE}"),
            ));
        }
        Ok(Identity {
            fingerprint: Fingerprint::of_der(&cert),
            cert,
            cert_pem,
            key_pkcs8: key.serialize_der(),
        })
    }

    /// Writes the identity to `dir` (which must exist): key (mode 0600),
    /// certificate and fingerprint, each atomically.
    ///
    /// # Errors
    ///
    /// [`NetError::Io`].
    pub fn save(&self, dir: &Path) -> Result<(), NetError> {
        let key = rcgen::KeyPair::try_from(self.key_pkcs8.as_slice())
            .map_err(|e| NetError::Generate(e.to_string()))?;
        let key_pem = key.serialize_pem();
        let cert_pem = &self.cert_pem;
        // Key first: a crash in between leaves a key without a certificate,
        // which `load_or_create` reports instead of silently replacing.
        write_atomic(&dir.join(KEY_FILE), key_pem.as_bytes(), 0o600)?;
        write_atomic(&dir.join(CERT_FILE), cert_pem.as_bytes(), 0o644)?;
        write_atomic(
            &dir.join(FINGERPRINT_FILE),
            format!("{}\n", self.fingerprint).as_bytes(),
            0o644,
        )
    }

    /// The identity's fingerprint.
    pub fn fingerprint(&self) -> Fingerprint {
        self.fingerprint
    }

    /// The certificate (DER).
    pub fn cert_der(&self) -> &CertificateDer<'static> {
        &self.cert
    }

    /// The private key, for rustls.
    pub(crate) fn private_key(&self) -> PrivateKeyDer<'static> {
        PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(self.key_pkcs8.clone()))
    }
}

fn read_text(path: &Path) -> Result<String, NetError> {
    let bytes = fs::read(path).map_err(|e| NetError::io(path, e))?;
    String::from_utf8(bytes).map_err(|_| NetError::DamagedIdentity {
        path: path.to_owned(),
        reason: "not text".into(),
    })
}

fn create_dir(dir: &Path) -> Result<(), NetError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(|e| NetError::io(dir, e))?;
    fs::set_permissions(dir, fs::Permissions::from_mode(0o700)).map_err(|e| NetError::io(dir, e))
}

/// Writes `bytes` to `path` atomically with the given mode: a temporary file
/// beside it (created with `mode`, so a key is never readable by others, not
/// even briefly), fsync, rename over `path`, fsync of the directory.
pub(crate) fn write_atomic(path: &Path, bytes: &[u8], mode: u32) -> Result<(), NetError> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_owned(),
        _ => PathBuf::from("."),
    };
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned());
    let tmp = dir.join(format!(
        ".{}.tmp.{}",
        name.as_deref().unwrap_or("file"),
        std::process::id()
    ));
    let result = (|| -> io::Result<()> {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // `mode` is filtered by the umask; set it exactly.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(bytes)?;
        file.sync_all()?;
        fs::rename(&tmp, path)?;
        fs::File::open(&dir)?.sync_all()
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result.map_err(|e| NetError::io(path, e))
}

/// Splits a list file into (1-based line number, first word, rest) for every
/// line that is not blank or a `#` comment.
fn list_entries(text: &str) -> impl Iterator<Item = (usize, &str, &str)> {
    text.lines().enumerate().filter_map(|(i, line)| {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            return None;
        }
        let (first, rest) = line.split_once(char::is_whitespace).unwrap_or((line, ""));
        Some((i + 1, first, rest.trim()))
    })
}

fn read_list(path: &Path) -> Result<String, NetError> {
    let bytes = fs::read(path).map_err(|e| NetError::io(path, e))?;
    String::from_utf8(bytes).map_err(|e| NetError::ListLine {
        path: path.to_owned(),
        line: 1 + e.as_bytes()[..e.utf8_error().valid_up_to()]
            .iter()
            .filter(|&&b| b == b'\n')
            .count(),
        reason: "not valid UTF-8".into(),
    })
}

/// The fingerprints a client has pinned, by agent address: a file with one
/// `HOST:PORT sha256:<hex>` per line; blank lines and lines starting with
/// `#` are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct KnownAgents {
    entries: BTreeMap<String, Fingerprint>,
}

impl KnownAgents {
    /// Parses the text of a known-agents file; `path` only names the file in
    /// errors.
    ///
    /// # Errors
    ///
    /// [`NetError::ListLine`] naming the file and line of the first bad
    /// entry (missing fingerprint, bad fingerprint, extra words, duplicate
    /// address with another fingerprint).
    pub fn parse(path: &Path, text: &str) -> Result<KnownAgents, NetError> {
        let mut entries = BTreeMap::new();
        for (line, addr, rest) in list_entries(text) {
            let err = |reason: String| NetError::ListLine {
                path: path.to_owned(),
                line,
                reason,
            };
            if rest.is_empty() {
                return Err(err(format!(
                    "expected `HOST:PORT sha256:<hex>`, found only {addr:?}"
                )));
            }
            if rest.split_whitespace().count() != 1 {
                return Err(err(format!(
                    "expected `HOST:PORT sha256:<hex>`, found extra words after the fingerprint: {rest:?}"
                )));
            }
            if addr
                .rsplit_once(':')
                .is_none_or(|(h, p)| h.is_empty() || p.parse::<u16>().is_err())
            {
                return Err(err(format!("{addr:?} is not HOST:PORT")));
            }
            let fp: Fingerprint = rest.parse().map_err(|e: NetError| err(e.to_string()))?;
            if let Some(old) = entries.insert(addr.to_owned(), fp) {
                if old != fp {
                    return Err(err(format!(
                        "{addr} is listed twice with different fingerprints ({old} and {fp})"
                    )));
                }
            }
        }
        Ok(KnownAgents { entries })
    }

    /// Loads a known-agents file; a missing file is an empty list.
    ///
    /// # Errors
    ///
    /// [`NetError::Io`] if it exists but cannot be read;
    /// [`NetError::ListLine`] as [`KnownAgents::parse`].
    pub fn load(path: &Path) -> Result<KnownAgents, NetError> {
        if !path.exists() {
            return Ok(KnownAgents::default());
        }
        KnownAgents::parse(path, &read_list(path)?)
    }

    /// The pinned fingerprint for `addr` (as written, `HOST:PORT`).
    pub fn get(&self, addr: &str) -> Option<Fingerprint> {
        self.entries.get(addr).copied()
    }

    /// Pins `fingerprint` for `addr`, replacing any earlier one.
    pub fn insert(&mut self, addr: impl Into<String>, fingerprint: Fingerprint) {
        self.entries.insert(addr.into(), fingerprint);
    }

    /// Writes the list to `path` atomically (comments are not kept).
    ///
    /// # Errors
    ///
    /// [`NetError::Io`].
    pub fn save(&self, path: &Path) -> Result<(), NetError> {
        let mut text = String::from("# baton known agents: HOST:PORT sha256:<hex>\n");
        for (addr, fp) in &self.entries {
            text.push_str(&format!("{addr} {fp}\n"));
        }
        write_atomic(path, text.as_bytes(), 0o644)
    }
}

/// The clients an agent admits: a file with one `sha256:<hex>` per line,
/// optionally followed by a free-form label (`sha256:… alice laptop`); blank
/// lines and lines starting with `#` are ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AuthorizedClients {
    fingerprints: BTreeSet<Fingerprint>,
}

impl AuthorizedClients {
    /// Parses the text of an authorized-clients file; `path` only names the
    /// file in errors.
    ///
    /// # Errors
    ///
    /// [`NetError::ListLine`] naming the file and line of the first entry
    /// that is not a fingerprint.
    pub fn parse(path: &Path, text: &str) -> Result<AuthorizedClients, NetError> {
        let mut fingerprints = BTreeSet::new();
        for (line, first, _label) in list_entries(text) {
            let fp: Fingerprint = first.parse().map_err(|e: NetError| NetError::ListLine {
                path: path.to_owned(),
                line,
                reason: e.to_string(),
            })?;
            fingerprints.insert(fp);
        }
        Ok(AuthorizedClients { fingerprints })
    }

    /// Loads an authorized-clients file.
    ///
    /// # Errors
    ///
    /// [`NetError::Io`] if it cannot be read (a missing file is an error:
    /// the agent was told to use it); [`NetError::ListLine`] as
    /// [`AuthorizedClients::parse`].
    pub fn load(path: &Path) -> Result<AuthorizedClients, NetError> {
        AuthorizedClients::parse(path, &read_list(path)?)
    }

    /// True if `fp` is listed.
    pub fn contains(&self, fp: &Fingerprint) -> bool {
        self.fingerprints.contains(fp)
    }

    /// Adds a fingerprint.
    pub fn insert(&mut self, fp: Fingerprint) {
        self.fingerprints.insert(fp);
    }

    /// How many fingerprints are listed.
    pub fn len(&self) -> usize {
        self.fingerprints.len()
    }

    /// True if no fingerprint is listed (the agent then admits nobody).
    pub fn is_empty(&self) -> bool {
        self.fingerprints.is_empty()
    }
}

impl FromIterator<Fingerprint> for AuthorizedClients {
    fn from_iter<I: IntoIterator<Item = Fingerprint>>(iter: I) -> AuthorizedClients {
        AuthorizedClients {
            fingerprints: iter.into_iter().collect(),
        }
    }
}
