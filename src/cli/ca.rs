//! `ca init`: creates the interception CA and tells the operator how to install it.

use std::path::Path;
use std::process::ExitCode;

/// Creates `out/ca.pem` and `out/ca.key` (replacing them only with `force`) for a CA named
/// `name`, then prints the config snippet and how to make clients trust it. Exit 0, or 1
/// when the files cannot be created.
pub fn init(out: &Path, name: &str, force: bool) -> ExitCode {
    let files = match crate::tls::ca::init(out, name, force) {
        Ok(f) => f,
        Err(e) => {
            eprintln!("transfer-gate: {e}");
            return ExitCode::from(1);
        }
    };
    // Absolute paths: the snippet below works wherever gate.toml lives.
    let abs = |p: &Path| std::fs::canonicalize(p).unwrap_or_else(|_| p.to_path_buf());
    let (cert, key) = (abs(&files.cert), abs(&files.key));
    let (cert, key) = (cert.display(), key.display());
    println!(
        "Created the interception CA \"{name}\":
  certificate  {cert}   (install it in the trust store of every client that uses the gate)
  private key  {key}   (mode 0600; keep it on the gate host only, never copy it to clients)

1. Point the gate at it in gate.toml, then restart it or reload it (SIGHUP):

     [tls]
     ca_cert = \"{cert}\"
     ca_key  = \"{key}\"

2. Make clients trust it:

   Debian/Ubuntu system store (curl, wget, Go, most OpenSSL programs):
     sudo cp {cert} /usr/local/share/ca-certificates/transfer-gate.crt
     sudo update-ca-certificates
   RHEL/Fedora:
     sudo cp {cert} /etc/pki/ca-trust/source/anchors/transfer-gate.pem && sudo update-ca-trust
   One process, OpenSSL/Go/Ruby (the file replaces the default bundle, so include both):
     cat /etc/ssl/certs/ca-certificates.crt {cert} > bundle.pem
     export SSL_CERT_FILE=$PWD/bundle.pem
   Node.js (adds to the built-in roots):
     export NODE_EXTRA_CA_CERTS={cert}
   Python requests (uses certifi, not the system store):
     export REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt   # after update-ca-certificates
   Java (JDK 9+):
     keytool -importcert -noprompt -cacerts -storepass changeit -alias transfer-gate -file {cert}
   curl, one call:
     curl --proxy http://GATE:3128 --cacert {cert} https://…

Clients that pin certificates cannot be intercepted: their handshakes fail and nothing is
forwarded (transfer_gate_tls_client_errors_total counts them)."
    );
    ExitCode::SUCCESS
}
