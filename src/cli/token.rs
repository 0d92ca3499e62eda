//! `client token NAME`: mints a random token for a declared client, prints it once (for the
//! client's secret store) and the `token_sha256` line for its `[[client]]` block. The gate's
//! configuration holds only the digest, never the token.

use std::process::ExitCode;

/// Bytes of randomness in a token (256 bits), written as 64 hex digits.
const TOKEN_BYTES: usize = 32;

/// Prints a new token for client `name` and the config line for it. Exit 0; 2 for a name
/// that is not a valid client name; 1 when no randomness is available.
pub fn token(name: &str) -> ExitCode {
    if !crate::config::valid_client_name(name) {
        eprintln!("transfer-gate: `{name}` is not a client name (1 to 64 of a-z, 0-9, `_`, `-`)");
        return ExitCode::from(2);
    }
    let mut raw = [0u8; TOKEN_BYTES];
    if let Err(e) = getrandom::fill(&mut raw) {
        eprintln!("transfer-gate: no randomness for a token: {e}");
        return ExitCode::from(1);
    }
    let token: String = raw.iter().map(|b| format!("{b:02x}")).collect();
    let digest = crate::identity::token_digest_hex(&token);
    println!(
        "Token for client \"{name}\" (shown once; store it in the client's secret store, e.g. a Kubernetes Secret):

  {token}

The client sends it as `Proxy-Authorization: Bearer <token>`, or in its proxy URL as
http://{name}:<token>@gate:3128 (Basic). Add the digest to the client's block in gate.toml
(keep the old digest listed until every instance uses the new token), then reload:

  [[client]]
  name         = \"{name}\"
  token_sha256 = [\"{digest}\"]"
    );
    ExitCode::SUCCESS
}
