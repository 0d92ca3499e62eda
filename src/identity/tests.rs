use super::*;
use crate::config::Client;

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn clients() -> Clients {
    let c = |name: &str, ids: &[&str], tokens: &[&str], cidrs: &[&str]| Client {
        name: name.into(),
        owner: Some(format!("{name} team")),
        mode: Mode::Enforce,
        tls_identities: ids.iter().map(|s| s.to_string()).collect(),
        token_sha256: tokens.iter().map(|t| digest(t)).collect(),
        cidrs: cidrs
            .iter()
            .map(|s| s.parse().unwrap_or_else(|_| unreachable!()))
            .collect(),
    };
    Clients::new(&[
        c(
            "billing",
            &["spiffe://corp.example.cn/ns/billing/sa/api"],
            &["tok-billing-1", "tok-billing-2"],
            &["10.20.0.0/16"],
        ),
        c(
            "crm",
            &["*.crm.corp.cn", "crm-cn"],
            &["tok-crm"],
            &["10.20.5.0/24"],
        ),
        c("batch", &[], &[], &["127.0.0.2/32", "::1/128"]),
    ])
}

fn hv(s: &str) -> HeaderValue {
    HeaderValue::from_str(s).unwrap_or_else(|_| unreachable!())
}

fn ip(s: &str) -> IpAddr {
    s.parse().unwrap_or_else(|_| unreachable!())
}

#[test]
fn bearer_and_basic_tokens_identify_and_rotate() {
    let c = clients();
    let none = ConnIdentity::default();
    for t in ["tok-billing-1", "tok-billing-2"] {
        let id = c.identify(&none, Some(&hv(&format!("Bearer {t}"))), ip("192.0.2.1"));
        assert_eq!(
            id,
            Ok(Identity {
                client: Some(0),
                by: Some(IdentifiedBy::Token)
            })
        );
    }
    let basic = base64::engine::general_purpose::STANDARD.encode("crm:tok-crm");
    let id = c.identify(&none, Some(&hv(&format!("Basic {basic}"))), ip("192.0.2.1"));
    assert_eq!(c.name(id.unwrap_or_default()), "crm");
    // Basic with another client's name, a wrong token, an unknown scheme, empty, over-long,
    // non-UTF-8: 407, never the address (which would have matched billing).
    let wrong_user = base64::engine::general_purpose::STANDARD.encode("billing:tok-crm");
    let long = format!("Bearer {}", "a".repeat(5000));
    for bad in [
        format!("Basic {wrong_user}"),
        "Bearer tok-nope".into(),
        "Bearer ".into(),
        "Digest x".into(),
        "".into(),
        long,
        "Basic !!!".into(),
    ] {
        assert_eq!(
            c.identify(&none, Some(&hv(&bad)), ip("10.20.1.1")),
            Err(BadCredential),
            "{bad:.40}"
        );
    }
    let non_utf8 = HeaderValue::from_bytes(b"Bearer \xff\xfe").unwrap_or_else(|_| unreachable!());
    assert_eq!(
        c.identify(&none, Some(&non_utf8), ip("10.20.1.1")),
        Err(BadCredential)
    );
}

#[test]
fn longest_prefix_wins_and_ipv4_mapped_addresses_match() {
    let c = clients();
    let none = ConnIdentity::default();
    let name = |a: &str| {
        c.name(c.identify(&none, None, ip(a)).unwrap_or_default())
            .to_owned()
    };
    assert_eq!(name("10.20.1.1"), "billing");
    assert_eq!(name("10.20.5.9"), "crm");
    assert_eq!(name("127.0.0.2"), "batch");
    assert_eq!(name("::ffff:127.0.0.2"), "batch");
    assert_eq!(name("::1"), "batch");
    assert_eq!(name("127.0.0.1"), "unidentified");
    assert_eq!(
        c.identify(&none, None, ip("127.0.0.1")),
        Ok(Identity::UNIDENTIFIED)
    );
}

#[test]
fn certificates_match_uri_then_dns_then_cn_without_san() {
    let c = clients();
    let peer = |uris: &[&str], dns: &[&str], cn: Option<&str>| tls::PeerIdentities {
        uris: uris.iter().map(|s| s.to_string()).collect(),
        dns: dns.iter().map(|s| s.to_string()).collect(),
        cn: cn.map(str::to_owned),
    };
    let spiffe = "spiffe://corp.example.cn/ns/billing/sa/api";
    assert_eq!(
        c.by_certificate(&peer(&[spiffe], &["a.crm.corp.cn"], None)),
        Some(0)
    );
    assert_eq!(
        c.by_certificate(&peer(&[], &["API.crm.corp.cn"], None)),
        Some(1)
    );
    // `*.` is one label.
    assert_eq!(
        c.by_certificate(&peer(&[], &["a.b.crm.corp.cn"], None)),
        None
    );
    assert_eq!(c.by_certificate(&peer(&[], &["crm.corp.cn"], None)), None);
    assert_eq!(c.by_certificate(&peer(&[], &[], Some("crm-cn"))), Some(1));
    // A CN counts only when the certificate has no SAN.
    assert_eq!(
        c.by_certificate(&peer(&[], &["other.example"], Some("crm-cn"))),
        None
    );
    // A certificate identity wins over a token and an address; the token is not consulted.
    let conn = ConnIdentity {
        certificate: Some(Arc::new(peer(&[spiffe], &[], None))),
        ..ConnIdentity::default()
    };
    let id = c.identify(&conn, Some(&hv("Bearer wrong")), ip("10.20.5.1"));
    assert_eq!(
        id,
        Ok(Identity {
            client: Some(0),
            by: Some(IdentifiedBy::Certificate)
        })
    );
}

#[test]
fn a_connect_identity_is_carried_by_name() {
    let c = clients();
    let conn = ConnIdentity {
        carried: Some(Arc::new(Carried {
            name: Some(Arc::from("crm")),
            by: Some(IdentifiedBy::Token),
        })),
        ..ConnIdentity::default()
    };
    assert_eq!(
        c.identify(&conn, None, ip("127.0.0.2")),
        Ok(Identity {
            client: Some(1),
            by: Some(IdentifiedBy::Token)
        })
    );
    let gone = ConnIdentity {
        carried: Some(Arc::new(Carried {
            name: Some(Arc::from("removed")),
            by: Some(IdentifiedBy::Token),
        })),
        ..ConnIdentity::default()
    };
    assert_eq!(
        c.identify(&gone, None, ip("127.0.0.2")),
        Ok(Identity::UNIDENTIFIED)
    );
}

#[test]
fn icap_username_then_client_ip() {
    let c = clients();
    assert_eq!(
        c.name(c.identify_icap(Some("crm"), Some(ip("10.20.1.1")))),
        "crm"
    );
    assert_eq!(
        c.name(c.identify_icap(Some("nobody"), Some(ip("10.20.1.1")))),
        "billing"
    );
    assert_eq!(c.identify_icap(None, None), Identity::UNIDENTIFIED);
    assert_eq!(
        c.identify_icap(None, Some(ip("10.20.1.1"))).by,
        Some(IdentifiedBy::Icap)
    );
}

#[test]
fn no_tokens_declared_means_the_header_is_ignored() {
    let c = Clients::new(&[]);
    assert!(!c.uses_tokens());
    assert_eq!(
        c.identify(
            &ConnIdentity::default(),
            Some(&hv("Bearer x")),
            ip("10.0.0.1")
        ),
        Ok(Identity::UNIDENTIFIED)
    );
    assert_eq!(
        token_digest_hex("test"),
        "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"
    );
}

#[test]
fn a_verified_token_is_remembered_per_connection_and_configuration() {
    let c = clients();
    let conn = ConnIdentity::default();
    let good = hv(&format!("Bearer {}", "tok-crm"));
    let ip = ip("192.0.2.1");
    assert_eq!(
        c.identify(&conn, Some(&good), ip).map(|i| i.client),
        Ok(Some(1))
    );
    // The same value again: answered from the connection, the same client.
    assert_eq!(
        c.identify(&conn, Some(&good), ip).map(|i| i.client),
        Ok(Some(1))
    );
    // Another value on the same connection is verified on its own (and a bad one refused).
    let bad = hv("Bearer tok-crm-but-not");
    assert_eq!(c.identify(&conn, Some(&bad), ip), Err(BadCredential));
    let billing = hv("Bearer tok-billing-1");
    assert_eq!(
        c.identify(&conn, Some(&billing), ip).map(|i| i.client),
        Ok(Some(0))
    );
    // A new configuration (a reload) does not trust what an older one verified: here the
    // remembered client index would name nobody.
    let reloaded = Clients::new(&[]);
    assert_eq!(
        reloaded.identify(&conn, Some(&billing), ip),
        Ok(Identity::UNIDENTIFIED),
        "no tokens declared any more: the header is ignored"
    );
    let other = Clients::new(&[Client {
        name: "solo".into(),
        owner: None,
        mode: Mode::Enforce,
        tls_identities: vec![],
        token_sha256: vec![digest("tok-solo")],
        cidrs: vec![],
    }]);
    assert_eq!(
        other.identify(&conn, Some(&billing), ip),
        Err(BadCredential)
    );
}
